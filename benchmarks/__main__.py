"""`python -m benchmarks [NAME ...] [--quick] [--json]`: run the benchmarks of the real
processes, each against its baseline measured in the same invocation.

Each benchmark repeats its measurement and reports min/median/max and the ratio to its
baseline. `--json` prints one object per benchmark (name, figures, baseline, ratio, target,
met) on stdout; progress goes to stderr. `--quick` is the smoke test `.ci/run` runs: small
sizes, one repeat, within about five minutes, and `met` is null (no verdict on numbers
that small). The peers (Celery beat, RedBeat, APScheduler) are installed from PyPI into
this environment on first use (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import subprocess
import sys
import time
from typing import Any

from benchmarks._harness import ROOT, Result, Stat, say

BENCHMARKS = {
    "cron_dispatch": "benchmarks.cron_dispatch",
    "scheduler_scale": "benchmarks.scheduler_scale",
    "run_throughput": "benchmarks.throughput",
    "dedupe_storm": "benchmarks.dedupe_storm",
    "stall_detection": "benchmarks.detection_latency",
    "db_poll_cost": "benchmarks.db_change_poll",
    "relay_throughput": "benchmarks.relay_throughput",
    "watchdog_scan": "benchmarks.watchdog_check",
    "cli_start": "benchmarks.cli_start",
}
PEERS = ("redbeat", "apscheduler")


def ensure_peers() -> None:
    """Install the bench extra when a peer is missing (on a fresh clone after `make test`)."""
    if all(importlib.util.find_spec(m) is not None for m in PEERS):
        return
    say("installing the benchmark peers (celery-redbeat, apscheduler) into this environment")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[bench]"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        say(f"could not install them (the peers are skipped): {done.stderr.strip()[-400:]}")
    importlib.invalidate_caches()


def _cell(stat: Stat) -> str:
    if not stat.values:
        return "-"
    m = stat.median
    if stat.unit == "s":
        return f"{m * 1000:.0f} ms" if m < 10 else f"{m:.1f} s"
    return f"{m:.4g}"


def _table(rows: dict[str, dict[str, Stat]]) -> list[str]:
    """Systems down, figures across (medians); a figure's unit is in its name."""
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    width = max(len(name) for name in rows) + 2
    head = " " * width + "".join(f"{c:>20}" for c in columns)
    body = [
        f"{name:<{width}}" + "".join(f"{_cell(r[c]) if c in r else '-':>20}" for c in columns)
        for name, r in rows.items()
    ]
    return [head, *body]


def _is_rows(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) and all(isinstance(x, Stat) for x in v.values()) for v in value.values())
    )


def _text(result: Result) -> str:
    shown = "-" if result.ratio is None else f"{result.ratio:.3g}"
    lines = [f"== {result.name}: ratio {shown}; met: {result.met}", f"   target: {result.target}"]

    def walk(prefix: str, value: Any) -> None:
        if _is_rows(value):
            lines.append(f"   {prefix} (medians)")
            lines.extend(f"     {line}" for line in _table(value))
        elif isinstance(value, Stat):
            lines.append(f"   {prefix}: {value.text()}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix} {k}".strip(), v)
        else:
            lines.append(f"   {prefix}: {value}")

    walk("", result.figures)
    walk("baseline", result.baseline)
    lines += [f"   note: {n}" for n in result.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke test)")
    parser.add_argument("--json", action="store_true", help="one JSON object per benchmark on stdout")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    ensure_peers()
    # In-process benchmarks run nightowl's services (a watchdog alerting on purpose): their
    # log lines are not the report.
    logging.getLogger("nightowl").setLevel(logging.CRITICAL)
    results = []
    failed = 0
    for name in args.names or list(BENCHMARKS):
        started = time.monotonic()
        say(f"-- {name}{' (quick)' if args.quick else ''}")
        try:
            result: Result = importlib.import_module(BENCHMARKS[name]).run(args.quick)
        except Exception as exc:  # one benchmark's failure is reported, the others still run
            failed += 1
            result = Result(name, {}, {}, None, "", None, [f"failed: {type(exc).__name__}: {exc}"])
        result.notes.append(f"took {time.monotonic() - started:.0f} s")
        results.append(result)
        if not args.json:
            print(_text(result), flush=True)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
