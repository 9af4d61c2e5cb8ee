"""Cron evaluation as a pure function of (now, state): start-from-now, catch-up, ledger, keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents import CronTick, agent
from triggers import CronTrigger, StateVersionError, cron

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@agent("noop-for-cron-tests")
def noop(ctx: object, event: object) -> None:
    return None


def make(expr: str = "* * * * *", **kw: object) -> CronTrigger:
    spec = cron(expr, agent=noop, name="t", **kw)  # type: ignore[arg-type]
    assert isinstance(spec.source, CronTrigger)
    return spec.source


def test_new_trigger_starts_from_now_and_fires_next_slot() -> None:
    trig = make()
    ev = trig.evaluate("t", T0 + timedelta(seconds=30), None)
    assert ev.firings == []
    assert ev.next_at == T0 + timedelta(minutes=1)
    ev2 = trig.evaluate("t", T0 + timedelta(minutes=1), ev.state)
    assert [f.idempotency_key for f in ev2.firings] == ["cron:t:2026-03-01T12:01:00Z"]
    tick = ev2.firings[0].event
    assert isinstance(tick, CronTick)
    assert tick.scheduled_for == T0 + timedelta(minutes=1)
    assert ev2.firings[0].logical_time == T0 + timedelta(minutes=1)
    assert ev2.next_at == T0 + timedelta(minutes=2)


def test_nothing_due_keeps_state() -> None:
    trig = make()
    ev = trig.evaluate("t", T0, None)
    again = trig.evaluate("t", T0 + timedelta(seconds=10), ev.state)
    assert again.firings == [] and again.state == ev.state


@pytest.mark.parametrize(
    ("catchup", "expected_runs", "expected_missed"),
    [
        ("latest", ["12:10"], [("12:01", "12:09", 9)]),
        ("all", ["12:05", "12:06", "12:07", "12:08", "12:09", "12:10"], [("12:01", "12:04", 4)]),
        ("none", ["12:10"], [("12:01", "12:09", 9)]),
    ],
)
def test_catchup_policies_after_downtime(
    catchup: str, expected_runs: list[str], expected_missed: list[tuple[str, str, int]]
) -> None:
    # Given a per-minute trigger last evaluated at 12:00 and a 5-minute catch-up window
    trig = make(catchup=catchup, catchup_window=timedelta(minutes=5))
    state = trig.evaluate("t", T0, None).state
    # When the scheduler comes back at 12:10
    ev = trig.evaluate("t", T0 + timedelta(minutes=10), state)
    # Then the policy picks the runs and the rest lands in the ledger as gaps
    assert [f.logical_time.strftime("%H:%M") for f in ev.firings] == expected_runs
    assert [
        (g.first.strftime("%H:%M"), g.last.strftime("%H:%M"), g.count) for g in ev.missed
    ] == expected_missed


def test_none_drops_a_late_single_slot_past_its_start_deadline() -> None:
    trig = make("0 * * * *", catchup="none", start_deadline=timedelta(minutes=5))
    state = trig.evaluate("t", T0, None).state
    ev = trig.evaluate("t", T0 + timedelta(hours=1, minutes=6), state)
    assert ev.firings == []
    assert [(g.count, g.reason) for g in ev.missed] == [(1, "missed")]


def test_changed_expression_restarts_from_now() -> None:
    state = make("* * * * *").evaluate("t", T0, None).state
    ev = make("*/5 * * * *").evaluate("t", T0 + timedelta(hours=3), state)
    assert ev.firings == [] and ev.missed == []
    assert ev.next_at == T0 + timedelta(hours=3, minutes=5)


def test_unknown_state_version_is_refused() -> None:
    with pytest.raises(StateVersionError, match="version 99"):
        make().evaluate("t", T0, {"version": 99})


def test_jitter_is_deterministic_and_short_of_next_slot() -> None:
    trig = make("* * * * *", jitter=timedelta(seconds=50), start_deadline=timedelta(minutes=5))
    offsets = {trig.jitter_offset("t", T0) for _ in range(3)}
    assert len(offsets) == 1
    (offset,) = offsets
    assert timedelta(0) <= offset < timedelta(seconds=50)
    assert trig.jitter_offset("other-name", T0) != offset
    # With a jitter longer than the interval, the offset still stays before the next slot.
    wide = make("* * * * * *", jitter=timedelta(seconds=10), start_deadline=timedelta(minutes=5))
    assert all(wide.jitter_offset(n, T0) < timedelta(seconds=1) for n in ("a", "b", "c", "d"))
