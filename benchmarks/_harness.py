"""What every benchmark shares: repeated figures (min/median/max), the result row that
`python -m benchmarks --json` prints, and probes of a real process from the outside (its
RSS and CPU from /proc, the messages landing in a broker queue).

This machine is shared and noisy: absolute times drift by 3x between runs, so each
benchmark measures its baseline in the same invocation and reports the ratio.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("NIGHTOWL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stat:
    """One figure over repeats: min, median, max (and its unit)."""

    values: list[float]
    unit: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def as_json(self) -> dict[str, Any]:
        if not self.values:
            return {"min": None, "median": None, "max": None, "n": 0, "unit": self.unit}
        return {
            "min": round(min(self.values), 6),
            "median": round(self.median, 6),
            "max": round(max(self.values), 6),
            "n": len(self.values),
            "unit": self.unit,
        }

    def text(self) -> str:
        if not self.values:
            return "-"
        scale, unit = (1000.0, "ms") if self.unit == "s" and self.median < 1 else (1.0, self.unit)
        return (
            f"{self.median * scale:.4g} {unit} "
            f"(min {min(self.values) * scale:.4g}, max {max(self.values) * scale:.4g})"
        )


def stats(rows: Sequence[dict[str, float]], units: dict[str, str] | None = None) -> dict[str, Stat]:
    """Per-key Stat over repeated measurements (each a dict of figures)."""
    units = units or {}
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: Stat([r[k] for r in rows if k in r and r[k] is not None], units.get(k, "")) for k in keys}


@dataclass
class Result:
    """One benchmark's row: its figures, its same-run baseline, the ratio and the target."""

    name: str
    figures: dict[str, Any]
    baseline: dict[str, Any]
    ratio: float | None
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "figures": _plain(self.figures),
            "baseline": _plain(self.baseline),
            "ratio": None if self.ratio is None or math.isnan(self.ratio) else round(self.ratio, 4),
            "target": self.target,
            "met": self.met,
            "notes": self.notes,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Stat):
        return value.as_json()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def say(line: str) -> None:
    """Progress on stderr (stdout is the report, or the JSON)."""
    print(line, file=sys.stderr, flush=True)


# --- a real process, from outside --------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (with its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    """`VmRSS` (now) or `VmHWM` (peak) of `pid`, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def tree_rss_mb(pid: int) -> float:
    """RSS of `pid` and its children (a prefork worker, a beat with its embedded parts)."""
    total = proc_rss_mb(pid)
    for child in _children(pid):
        with contextlib.suppress(OSError):
            total += proc_rss_mb(child)
    return total


def _children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    kids = [int(x) for x in out]
    return kids + [g for k in kids for g in _children(k)]


def spawn(argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """A service process of its own session (killed with its children), output to `log`."""
    out = log.open("wb")
    return subprocess.Popen(
        list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def wait_for(check: Callable[[], bool], timeout: float, every: float = 0.01) -> float | None:
    """Seconds until `check()` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    return None


class Arrivals:
    """When each message lands in a broker queue: a thread polls `LLEN` every 5 ms (as the
    issue's harness did) and stamps each increase with the wall time of the poll."""

    def __init__(self, keys: Iterable[str], url: str = REDIS_URL, every: float = 0.005) -> None:
        self.keys = list(keys)
        self.client = redis.Redis.from_url(url)
        self.every = every
        self.stamps: list[float] = []  # wall time (time.time()) of each arrival
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Arrivals:
        self._seen = self._count()
        self._thread.start()
        return self

    def _count(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for k in self.keys:
            pipe.llen(k)
        return sum(int(n) for n in pipe.execute())

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self._count()
            if n > self._seen:
                now = time.time()
                self.stamps.extend([now] * (n - self._seen))
                self._seen = n
            time.sleep(self.every)

    def wait(self, n: int, timeout: float) -> bool:
        ok = wait_for(lambda: len(self.stamps) >= n, timeout, every=0.05) is not None
        return ok

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        self.client.close()
        return self.stamps


def lags(stamps: Sequence[float], boundary: float, expected: int) -> dict[str, float]:
    """first, p50, p99 and max lag (s) from the boundary; `dropped` of `expected`."""
    got = sorted(s - boundary for s in stamps)
    if not got:
        return {"dropped": float(expected)}

    def pct(p: float) -> float:
        return got[min(len(got) - 1, max(0, math.ceil(p * len(got)) - 1))]

    return {
        "first_s": got[0],
        "p50_s": pct(0.5),
        "p99_s": pct(0.99),
        "max_s": got[-1],
        "dropped": float(max(0, expected - len(got))),
    }


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
