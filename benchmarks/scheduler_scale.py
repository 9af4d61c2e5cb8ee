"""scheduler_scale: 10,000 and 100,000 cron triggers spread over the hour on one real
`nightowl scheduler` process (about N/60 due each minute): start-up to leading, RSS, CPU
per minute in steady state, the lag of each minute's burst, and leader-lease losses (the
leader losing its lease to its own work, which would hand the rebuild to a standby).

The baseline is the same process with 10,000 triggers: idle CPU and per-minute lag should
stay flat from 10k to 100k, and the marginal RSS per extra trigger under 1 KB.
"""

from __future__ import annotations

import math
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks._harness import (
    Arrivals,
    Result,
    Stat,
    lags,
    proc_cpu_s,
    proc_rss_mb,
    ratio,
    say,
    stop,
    wait_for,
)
from benchmarks._systems import Nightowl


def one(n: int, tmp: Path, minutes: int) -> dict[str, float]:
    """Start nightowl with `n` spread triggers, then watch `minutes` bursts."""
    system = Nightowl()
    # The bursts fall at second `second` of each minute; the first one a warm-up after start.
    warmup = 15 + n / 5_000
    first = datetime.now(UTC) + timedelta(seconds=warmup)
    second = first.second
    started = system.start(n, first.replace(microsecond=0), tmp, spread=True)
    spawned = started.spawned_at
    out: dict[str, float] = {}
    try:
        assert started.ready is not None
        lead = wait_for(started.ready, 300, every=0.05)
        out["start_to_leading_s"] = math.nan if lead is None else time.time() - spawned
        # the first boundary after leading (and a second of settling)
        at = datetime.fromtimestamp(time.time() + 2, UTC).replace(second=second, microsecond=0)
        while at.timestamp() < time.time() + 2:
            at += timedelta(minutes=1)
        per_minute = n // 60 + (1 if (at.minute < n % 60) else 0)
        burst_lags: list[dict[str, float]] = []
        cpu_minute: list[float] = []
        for m in range(minutes):
            boundary = at + timedelta(minutes=m)
            due = n // 60 + (1 if boundary.minute < n % 60 else 0)
            poll = Arrivals(started.queue_keys).start()
            before = len(poll.stamps)
            poll.wait(before + due, max(0.0, boundary.timestamp() - time.time()) + 50)
            stamps = poll.stop()
            burst_lags.append(lags(stamps, boundary.timestamp(), due))
            # the rest of the minute: steady state (idle but for the next burst)
            rest = boundary.timestamp() + 55 - time.time()
            if rest > 0 and m < minutes - 1:  # (the last minute's rest is not waited for)
                c0 = proc_cpu_s(started.proc.pid)
                time.sleep(rest)
                cpu_minute.append((proc_cpu_s(started.proc.pid) - c0) * 60 / rest)
        out["rss_mb"] = proc_rss_mb(started.proc.pid)
        out["due_per_minute"] = float(per_minute)
        out["burst_p99_s"] = max(b.get("p99_s", math.nan) for b in burst_lags)
        out["burst_first_s"] = max(b.get("first_s", math.nan) for b in burst_lags)
        out["dropped"] = sum(b.get("dropped", 0.0) for b in burst_lags)
        # NaN in --quick (one minute: no idle stretch is measured)
        out["idle_cpu_s_per_min"] = min(cpu_minute) if cpu_minute else math.nan
    finally:
        stop(started.proc)
        log = started.log.read_text(errors="replace") if started.log else ""
        started.cleanup()
    out["lease_losses"] = float(log.count("lost the scheduler leader lease"))
    out["uptime_s"] = time.time() - spawned
    return out


def run(quick: bool) -> Result:
    sizes, minutes = ((1_000, 5_000), 1) if quick else ((10_000, 100_000), 2)
    got: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in sizes:
            say(f"scheduler_scale: {n:,} triggers spread over the hour, {minutes} minute(s)")
            got[n] = one(n, Path(tmpdir), minutes)
    small, big = got[sizes[0]], got[sizes[-1]]
    marginal_kb = (big["rss_mb"] - small["rss_mb"]) * 1024 / (sizes[-1] - sizes[0])
    checks = {
        "no lease losses": big["lease_losses"] == 0,
        "start-up to leading <= 10 s": big["start_to_leading_s"] <= 10,
        "marginal RSS <= 1 KB/trigger": marginal_kb <= 1,
        "idle CPU flat (<= 2x)": big["idle_cpu_s_per_min"] <= 2 * max(small["idle_cpu_s_per_min"], 0.05),
        "burst lag flat (<= 2x)": big["burst_p99_s"] <= 2 * max(small["burst_p99_s"], 0.05),
    }
    units = {"start_to_leading_s": "s", "rss_mb": "MB", "burst_p99_s": "s", "burst_first_s": "s"}

    def row(figures: dict[str, float]) -> dict[str, Stat]:
        return {k: Stat([v], units.get(k, "")) for k, v in figures.items()}

    return Result(
        name="scheduler_scale",
        figures={f"n={sizes[-1]}": {"nightowl": row(big)}, "marginal_rss_kb_per_trigger": marginal_kb},
        baseline={f"n={sizes[0]}": {"nightowl": row(small)}},
        ratio=ratio(big["burst_p99_s"], small["burst_p99_s"]),
        target=(
            f"at {sizes[-1]:,}: no lease losses, start-up to leading <= 10 s, marginal RSS <= 1 KB "
            "per trigger, idle CPU and burst lag flat from the baseline (ratio: burst p99 / baseline's)"
        ),
        met=None if quick else all(checks.values()),
        notes=[f"{k}: {'met' if v else 'NOT met'}" for k, v in checks.items()]
        + ["1,000,000 triggers (the stretch) not measured in this run"],
    )
