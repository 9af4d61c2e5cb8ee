"""How long `nightowl` takes to start, measured from outside: the median wall time of each
read-only command over several runs, and its ratio to a bare `python -c pass` measured in
the same run (this machine's absolute times drift; the ratio does not).

    python benchmarks/cli_start.py [--repeat N] [--tree PATH]

`--tree` points at another checkout (an older commit) to compare against.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks._harness import Result


ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["runs", "list"],
    ["runs", "show", "00000000-0000-0000-0000-000000000000"],
    ["status"],
]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False, timeout=120)
    return time.perf_counter() - start


def measure(repeat: int, tree: Path = ROOT) -> tuple[list[float], dict[str, list[float]]]:
    """Wall times of `python -c pass` and of each read-only command, `repeat` times each."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")},
            "PYTHONPATH": str(tree),
            "NIGHTOWL_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "NIGHTOWL_REDIS_URL": os.environ.get("NIGHTOWL_REDIS_URL", "redis://127.0.0.1:6379/15"),
            "NIGHTOWL_TRIGGERS": "examples.demo",
        }
        cli = [sys.executable, "-m", "scheduler.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=env, cwd=tree, capture_output=True, check=True)
        base = [timed([sys.executable, "-c", "pass"], env, tree) for _ in range(repeat)]
        return base, {" ".join(c): [timed([*cli, *c], env, tree) for _ in range(repeat)] for c in COMMANDS}


def run(quick: bool) -> Result:
    """cli_start (issue 15): the read-only commands start in under a second."""
    from benchmarks._harness import Result, Stat, ratio

    base, times = measure(3 if quick else 9)
    per = {name: Stat(t, "s") for name, t in times.items()}
    worst = max(s.median for s in per.values())
    return Result(
        name="cli_start",
        figures=per,
        baseline={"python -c pass": Stat(base, "s")},
        ratio=ratio(worst, Stat(base, "s").median),
        target="every read-only command (--help, runs list, runs show, status) < 1 s (median)",
        met=None if quick else worst < 1.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    base, times = measure(args.repeat, args.tree)
    baseline = statistics.median(base)
    print(f"baseline python -c pass: {baseline:.3f} s (median of {args.repeat})")
    for command, runs in times.items():
        median = statistics.median(runs)
        print(
            f"nightowl {command:<55} median {median:.3f} s  min {min(runs):.3f}  "
            f"max {max(runs):.3f}  ({median / baseline:.1f}x python start)"
        )


if __name__ == "__main__":
    main()
