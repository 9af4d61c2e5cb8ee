"""A sink down for a while, a sink slower than the relay's claim TTL (two relays), and the
scheduler's clock jumping forward an hour."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.faults.checks import Checker, Violation, brief
from tests.faults.harness import PYTHON, Cluster
from tests.faults.scenario import Run, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SINK_DOWN_S = 10.0
SINK_HOLD_S = 8.0  # NIGHTOWL_CLAIM_TTL is 3 s


def _sink_down(run: Run) -> None:
    c = run.cluster
    assert c.hook is not None
    run.at(6 + run.rng.uniform(0, 3))
    event = c.faults.begin(f"webhook sink down {SINK_DOWN_S:.0f} s (connection refused)")
    c.hook.stop()
    try:
        time.sleep(SINK_DOWN_S)
    finally:
        c.hook.start()
    c.faults.end(event)


def test_sink_down() -> None:
    run_scenario(
        "sink_down",
        seed=401,
        fault=_sink_down,
        cluster={"hook": True},
        summary=f"the webhook sink refuses connections for {SINK_DOWN_S:.0f} s",
        expected="its entries are retried with backoff and delivered once it is back, in "
        "per-key order; the other sinks are not held up",
    )


def _slow_sink(run: Run) -> None:
    c = run.cluster
    assert c.hook is not None
    for i in range(2):
        run.at(6 + i * 10 + run.rng.uniform(0, 2))
        event = c.faults.begin(f"webhook sink hangs {SINK_HOLD_S:.0f} s (claim TTL 3 s)")
        c.hook.hold_until = time.monotonic() + SINK_HOLD_S
        time.sleep(SINK_HOLD_S)
        c.faults.end(event, held_requests=c.hook.held)
    run.figures["held_requests"] = c.hook.held


def test_slow_sink_past_claim_ttl() -> None:
    run_scenario(
        "slow_sink_past_claim_ttl",
        seed=402,
        fault=_slow_sink,
        cluster={"hook": True, "relays": 2},
        summary=f"the webhook sink answers only after {SINK_HOLD_S:.0f} s (claim TTL 3 s), twice, two relays",
        expected="the relay keeps its claim while the sink works: no second relay delivers the "
        "same entry meanwhile, and no older entry of a key arrives after a newer one",
    )


JUMP_S = 3600.0
WINDOW_S = 20.0  # the per-second crons' catch-up window in this scenario
MINUTELY = 3


def _clock_jump(run: Run) -> None:
    c = run.cluster
    run.at(10 + run.rng.uniform(0, 3))
    event = c.faults.begin("scheduler clock jumps forward 1 h", blinds=True)
    for name in ("scheduler-a", "scheduler-b"):
        c.services[name].signal(signal.SIGUSR1)
    run.figures["jumped_at"] = datetime.now(UTC).isoformat()
    c.faults.end(event)


def _after_jump(
    cluster: Cluster, judge: Checker, figures: dict[str, Any], violations: list[Violation]
) -> None:
    """Minute crons (catchup="latest") fire once for the newest slot of the gap and the
    ledger records the rest; the per-second crons run at most the catch-up window."""
    from tests.faults.checks import snapshot

    jumped = datetime.fromisoformat(figures["jumped_at"])
    gap_start, gap_end = jumped, jumped + timedelta(seconds=JUMP_S)
    snap = snapshot(cluster)
    runs = judge.judged(snap)
    burst: dict[str, int] = {}
    for name in ("sec-allow", "sec-skip"):
        inside = [
            r
            for r in runs
            if r.trigger == name and gap_start < r.logical_time < gap_end - timedelta(seconds=WINDOW_S + 2)
        ]
        burst[name] = sum(1 for r in runs if r.trigger == name and gap_start < r.logical_time <= gap_end)
        if inside:
            violations.append(
                Violation(
                    "catch-up-window",
                    f"{name}: runs for slots older than the {WINDOW_S:.0f} s catch-up window at the jump",
                    [brief(r) for r in inside],
                    len(inside),
                )
            )
    figures["catchup_runs_after_jump"] = burst
    ledger: Counter[str] = Counter()
    for i in range(MINUTELY):
        name = f"min-{i}"
        slots = sorted(
            r.logical_time for r in runs if r.trigger == name and gap_start < r.logical_time <= gap_end
        )
        gaps = [g for g in snap.ledger if g.trigger == name]
        ledger[name] = sum(g.count for g in gaps)
        newest = gap_end.replace(second=0, microsecond=0)
        if len(slots) != 1 or abs((slots[0] - newest).total_seconds()) > 60:
            violations.append(
                Violation(
                    "catch-up-latest",
                    f"{name}: expected one run for the newest slot "
                    f"({newest.isoformat()}) of the jumped hour, got {[s.isoformat() for s in slots]}",
                    [brief(r) for r in runs if r.trigger == name],
                )
            )
        if not 55 <= ledger[name] <= 61:
            violations.append(
                Violation(
                    "catch-up-latest",
                    f"{name}: the missed-slot ledger holds {ledger[name]} slots "
                    f"for the jumped hour (expected about 59, in one gap): "
                    f"{[(g.first_slot.isoformat(), g.count, g.reason) for g in gaps]}",
                )
            )
        elif len(gaps) != 1:
            violations.append(
                Violation("catch-up-latest", f"{name}: the jumped hour is {len(gaps)} ledger rows, not one")
            )
    figures["ledger_slots_after_jump"] = dict(ledger)
    # the minute crons' firings: one run per slot they fired (the judged runs say which)
    figures["firings"] += sum(1 for r in runs if (r.trigger or "").startswith("min-"))


def test_scheduler_clock_jump() -> None:
    run_scenario(
        "scheduler_clock_jump",
        seed=501,
        fault=_clock_jump,
        cluster={
            "scheduler_launcher": [PYTHON, "-m", "tests.faults.shifted_clock", "scheduler"],
            "extra_env": {
                "NIGHTOWL_FAULT_CATCHUP_WINDOW": str(WINDOW_S),
                "NIGHTOWL_FAULT_MINUTELY": str(MINUTELY),
                "NIGHTOWL_FAULT_JUMP": str(JUMP_S),
            },
        },
        checker={"sched_offset_s": JUMP_S, "catchup_window_s": WINDOW_S},
        extra=_after_jump,
        summary="both schedulers' clocks jump forward 1 h (minute crons catchup=latest, "
        f"per-second crons catchup=all in a {WINDOW_S:.0f} s window)",
        expected="each minute cron fires once for the newest slot and the ledger records the "
        "gap; the per-second crons catch up only their window; no burst beyond it",
    )
