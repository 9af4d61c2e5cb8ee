"""cron_dispatch: N cron entries due at the same instant, measured from outside on the real
scheduler processes: the lag from the boundary to each message landing in the broker
(a 5 ms `LLEN` poll), the process's RSS and CPU around the burst, and its time from start
to leading.

nightowl (`nightowl scheduler` on PostgreSQL), Celery beat (PersistentScheduler), RedBeat
and APScheduler 3 (CronTrigger jobs doing `send_task`) each get the same N entries; the
floor is the same N messages written through one Redis pipeline with no database, at the
boundary, measured by the same poll. Systems that can name a second get a boundary a few
seconds after their start; Celery beat and RedBeat (crontab has no seconds) wait for the
next whole minute.

A full run measures N = 1,000 and 10,000 (Celery beat at 10,000 once: it takes minutes);
`--quick` measures N = 200 with every system at one shared minute boundary.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    Arrivals,
    Result,
    Stat,
    lags,
    proc_cpu_s,
    proc_rss_mb,
    ratio,
    say,
    stats,
    stop,
    wait_for,
)
from benchmarks._systems import SYSTEMS, Started, System, floor_burst

UNITS = {
    "first_s": "s",
    "p50_s": "s",
    "p99_s": "s",
    "max_s": "s",
    "dropped": "messages",
    "rss_mb": "MB",
    "peak_rss_mb": "MB",
    "cpu_burst_s": "CPU s",
    "start_to_leading_s": "s",
}
FLOOR_BODY = b'{"body": "' + b"x" * 900 + b'", "headers": {}, "properties": {}}'


def boundary(earliest: datetime, whole_minute: bool) -> datetime:
    """The first boundary at or after `earliest`: a whole second, or a whole minute."""
    at = earliest.replace(microsecond=0) + timedelta(seconds=1)
    if whole_minute and at.second:
        at = at.replace(second=0) + timedelta(minutes=1)
    return at


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.2))


def measure(
    systems: list[System], n: int, tmp: Path, *, warmup: float, burst_timeout: float
) -> dict[str, Any]:
    """One boundary for all of `systems` at once (one system in a full run); figures each."""
    whole_minute = any(not s.seconds for s in systems)
    when = boundary(datetime.now(UTC) + timedelta(seconds=warmup), whole_minute)
    at = when.timestamp()
    started: dict[str, Started] = {}
    out: dict[str, Any] = {}
    try:
        for s in systems:
            started[s.name] = s.start(n, when, tmp)
        polls = {name: Arrivals(st.queue_keys).start() for name, st in started.items()}
        leading: dict[str, float | None] = {}
        for name, st in started.items():
            if st.ready is not None:
                waited = wait_for(st.ready, max(0.0, at - time.time() - 0.2))
                leading[name] = None if waited is None else time.time() - st.spawned_at
        _sleep_until(at - 2)
        cpu0 = {name: _cpu(st) for name, st in started.items()}
        deadline = at + burst_timeout
        for poll in polls.values():
            poll.wait(n, max(0.0, deadline - time.time()))
        for name, st in started.items():
            stamps = polls[name].stop()
            figures = lags(stamps, at, n)
            figures["cpu_burst_s"] = _cpu(st) - cpu0[name]
            figures["rss_mb"] = _rss(st, "VmRSS")
            figures["peak_rss_mb"] = _rss(st, "VmHWM")
            if st.ready is not None:
                figures["start_to_leading_s"] = leading.get(name) or math.nan
            if st.proc.poll() is not None:
                figures["exited"] = float(st.proc.returncode or 0)
            out[name] = figures
    finally:
        for st in started.values():
            stop(st.proc)
            st.cleanup()
    return out


def _cpu(st: Started) -> float:
    try:
        return proc_cpu_s(st.proc.pid)
    except OSError:
        return math.nan


def _rss(st: Started, key: str) -> float:
    try:
        return proc_rss_mb(st.proc.pid, key)
    except OSError:
        return math.nan


def measure_floor(n: int) -> dict[str, float]:
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    poll = Arrivals([queue]).start()
    at = math.ceil(time.time()) + 1.0
    _sleep_until(at)
    floor_burst(n, queue, FLOOR_BODY)
    poll.wait(n, 30)
    figures = lags(poll.stop(), at, n)
    import redis

    from benchmarks._harness import REDIS_URL

    redis.Redis.from_url(REDIS_URL).delete(queue)
    return figures


def run(quick: bool) -> Result:
    systems = {name: make() for name, make in SYSTEMS.items()}
    missing = [s.name for s in systems.values() if not s.available()]
    notes = [f"{name}: not installed, not measured" for name in missing]
    present = [s for s in systems.values() if s.available()]
    by_n: dict[int, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if quick:
            n = 200
            say(f"cron_dispatch: N={n}, every system at one whole-minute boundary")
            got = measure(present, n, tmp, warmup=15, burst_timeout=60)
            by_n[n] = {name: [f] for name, f in got.items()}
            by_n[n]["floor"] = [measure_floor(n)]
        else:
            plan = {1_000: 3, 10_000: 3}
            for n, repeats in plan.items():
                by_n[n] = {"floor": [measure_floor(n) for _ in range(repeats)]}
                for s in present:
                    times = 1 if (s.name == "celery_beat" and n >= 10_000) else (repeats if not s.peer else 2)
                    for r in range(times):
                        say(f"cron_dispatch: {s.name} N={n} ({r + 1}/{times})")
                        warmup = 10 + n / 1000
                        timeout = 900 if s.name == "celery_beat" else 180
                        got = measure([s], n, tmp, warmup=warmup, burst_timeout=timeout)
                        by_n[n].setdefault(s.name, []).append(got[s.name])
    figures = {f"n={n}": {name: stats(rows, UNITS) for name, rows in per.items()} for n, per in by_n.items()}
    n_top = max(by_n)
    top = figures[f"n={n_top}"]
    ours = top.get("nightowl", {})

    def med(system: str, key: str) -> float:
        stat = top.get(system, {}).get(key)
        return stat.median if isinstance(stat, Stat) else math.nan

    p99 = med("nightowl", "p99_s")
    floor_p99 = med("floor", "p99_s")
    checks = {
        "first < 50 ms": med("nightowl", "first_s") < 0.05,
        "p99 <= 3x floor": p99 <= 3 * floor_p99,
        "p99 <= redbeat / 5": p99 <= med("redbeat", "p99_s") / 5,
        "p99 <= celery beat / 100": p99 <= med("celery_beat", "p99_s") / 100,
        "RSS <= 100 MB": med("nightowl", "rss_mb") <= 100,
        "zero dropped": med("nightowl", "dropped") == 0,
    }
    notes += [f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items()]
    return Result(
        name="cron_dispatch",
        figures={k: {s: v for s, v in per.items() if s != "floor"} for k, per in figures.items()},
        baseline={k: {"floor": per.get("floor", {})} for k, per in figures.items()},
        ratio=ratio(p99, floor_p99),
        target=(
            f"at N={n_top}: first < 50 ms; p99 <= 3x the floor's (ratio), <= RedBeat's / 5, "
            "<= Celery beat's / 100; RSS <= 100 MB; zero dropped"
        ),
        met=None if quick else all(checks.values()) and bool(ours),
        notes=notes,
    )
