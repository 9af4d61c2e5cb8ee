"""The alert state machine shared by metric and queue_depth: transitions and failures, as a
pure function of readings (persistence through the service: tests/service/test_alert_persistence.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import T0
from tests.polling import Gauge, Poller, forget
from triggers import TriggerDefinitionError, metric


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


def alert(gauge: Gauge, **options: Any) -> Any:
    options.setdefault("every", 10)
    return metric(gauge, agent="on-alert", name=options.pop("name", "errors"), **options)


def walk(poller: Poller, gauge: Gauge, script: list[tuple[float, Any]]) -> list[tuple[str, list[str]]]:
    """Feed (seconds later, value) pairs; return (alert state, fired states) after each poll."""
    out = []
    for advance, value in script:
        gauge.value = value
        ev = poller.poll(advance)
        out.append((ev.state["alert_state"], [f.event.state for f in ev.firings]))  # type: ignore[union-attr]
    return out


def test_transitions_with_for_hysteresis_resolve_and_cooldown() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, clear_below=5, for_=60, cooldown=300, on_resolve=True), T0)
    assert walk(
        poller,
        gauge,
        [
            (0, 3),  # ok
            (10, 12),  # breach: pending
            (30, 12),  # held 30 s < for_
            (30, 12),  # held 60 s: firing, one run
            (10, 12),  # still firing: no second run
            (10, 8),  # below the threshold but above clear_below: still firing (hysteresis)
            (10, 4),  # past the clear bound: ok, and a resolved run
            (10, 12),  # a new breach: pending
            (60, 12),  # held for_, but only 90 s since the last firing run: held by cooldown
            (120, 12),  # 210 s
            (100, 12),  # 310 s since the last run: fires
        ],
    ) == [
        ("ok", []),
        ("pending", []),
        ("pending", []),
        ("firing", ["firing"]),
        ("firing", []),
        ("firing", []),
        ("ok", ["resolved"]),
        ("pending", []),
        ("pending", []),
        ("pending", []),
        ("firing", ["firing"]),
    ]


def test_a_breach_that_ends_before_for_never_fires() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, for_=60), T0)
    assert walk(poller, gauge, [(0, 11), (30, 11), (10, 9), (30, 11), (40, 11)]) == [
        ("pending", []),
        ("pending", []),
        ("ok", []),
        ("pending", []),
        ("pending", []),
    ]


def test_firing_and_resolved_runs_name_the_episode() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, on_resolve=True), T0)
    gauge.value = 50
    fired = poller.poll().firings
    gauge.value = 1
    resolved = poller.poll(10).firings
    assert [f.idempotency_key for f in fired + resolved] == [
        "alert:errors:1:firing",
        "alert:errors:1:resolved",
    ]
    event = fired[0].event
    assert (event.kind, event.value, event.threshold, event.state) == (  # type: ignore[union-attr]
        "metric",
        50.0,
        10.0,
        "firing",
    )
    assert resolved[0].event.value == 1.0  # type: ignore[union-attr]


def test_below_uses_clear_above() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, below=100, clear_above=150, on_resolve=True), T0)
    assert walk(poller, gauge, [(0, 120), (10, 90), (10, 120), (10, 151)]) == [
        ("ok", []),
        ("firing", ["firing"]),
        ("firing", []),
        ("ok", ["resolved"]),
    ]


@pytest.mark.parametrize("bad", [RuntimeError("exporter down"), "n/a", [1.0]])
def test_three_failed_polls_flag_the_source_and_freeze_the_machine(bad: Any) -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10), T0)
    assert walk(poller, gauge, [(0, 20)]) == [("firing", ["firing"])]
    # When the source fails three times in a row (even with a clear value in between lost)
    states = walk(poller, gauge, [(10, bad), (10, bad)])
    assert poller.state is not None and poller.state["source_failing"] is False
    states += walk(poller, gauge, [(10, bad)])
    # Then it is flagged, firing is not reset, and no run fires
    assert states == [("firing", [])] * 3
    assert poller.state["source_failing"] is True and poller.state["failures"] == 3
    # And the first good reading clears the flag and moves the machine again
    assert walk(poller, gauge, [(10, 1)]) == [("ok", [])]
    assert poller.state["source_failing"] is False


def test_a_hung_source_times_out_and_is_not_called_again_while_stuck() -> None:
    gauge = Gauge(1)
    poller = Poller(alert(gauge, above=10, timeout=0.2), T0)
    gauge.release.clear()
    started = time.monotonic()
    poller.poll()
    assert poller.state is not None and "timed out after 0.2s" in poller.state["last_error"]
    poller.poll(10)
    assert time.monotonic() - started < 5
    assert gauge.calls == 1  # the second poll did not start a second stuck call
    assert "still running" in poller.state["last_error"] and poller.state["failures"] == 2
    gauge.release.set()


def test_empty_means_false_unless_empty_fail() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, on_resolve=True), T0)
    assert walk(poller, gauge, [(0, 20), (10, None)]) == [("firing", ["firing"]), ("ok", ["resolved"])]
    strict = Poller(alert(Gauge(None), above=10, empty="fail", name="strict"), T0)
    strict.poll()
    assert strict.state is not None and "no data" in strict.state["last_error"]


@pytest.mark.parametrize(
    ("options", "field", "needle"),
    [
        ({"above": 1, "below": 2}, "above", "exactly one"),
        ({}, "above", "exactly one"),
        ({"above": 10, "clear_below": 20}, "above", "must be <="),
        ({"above": 10, "clear_above": 20}, "above", "clear_above goes with below"),
        ({"below": 10, "clear_above": 5}, "above", "must be >="),
        ({"above": 1, "empty": "zero"}, "empty", "'false'"),
        ({"above": 1, "for_": -1}, "for_", "zero or positive"),
        ({"above": 1, "on_resolve": "yes"}, "on_resolve", "True or False"),
        ({"above": "high"}, "above", "must be a finite number"),
        ({"above": float("inf")}, "above", "must be a finite number"),
        ({"below": float("nan")}, "above", "must be a finite number"),
        ({"above": 1, "every": 0}, "every", "positive"),
        ({"above": 1, "timeout": "soon"}, "timeout", "timedelta"),
        ({"above": 1, "cooldown": -5}, "cooldown", "zero or positive"),
        ({"above": 1, "overlap": "never"}, "overlap", "'skip'"),
        ({"above": 1, "fore": 60}, "fore", "for_"),
    ],
)
def test_bad_definitions_fail_at_load(options: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(TriggerDefinitionError) as info:
        metric(Gauge(), agent="on-alert", name="bad", **options)
    message = str(info.value)
    assert "test_alert_triggers.py:" in message and repr(field) in message and needle in message


def test_a_source_that_is_not_a_source_fails_at_load() -> None:
    with pytest.raises(TriggerDefinitionError, match=r"'source'.*prometheus"):
        metric("sum(rate(x[5m]))", agent="on-alert", name="bad", above=1)  # type: ignore[arg-type]


def test_sql_source_rejects_several_statements() -> None:
    from triggers import sql

    with pytest.raises(ValueError, match="one SELECT"):
        sql("SELECT 1; DROP TABLE runs")


# -- episode numbers in run keys (DESIGN: alert:<trigger>:<episode>:<firing|resolved>) -------


def test_each_episode_gets_the_next_number_and_its_resolve_shares_it() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, on_resolve=True, cooldown=0), T0)
    keys = []
    for value in (50, 1, 50, 50, 1, 50):
        gauge.value = value
        keys += poller.keys(10)
    assert keys == [
        "alert:errors:1:firing",
        "alert:errors:1:resolved",
        "alert:errors:2:firing",
        "alert:errors:2:resolved",
        "alert:errors:3:firing",
    ]
    assert poller.state is not None and poller.state["episode"] == 3


def test_a_state_saved_before_episode_numbers_carries_on_without_reusing_a_key() -> None:
    # Given states persisted by the previous release (keys were metric:<name>:<since>:<state>):
    # one still firing, one back to ok
    gauge = Gauge(1)
    firing = Poller(alert(gauge, above=10, on_resolve=True, cooldown=0), T0)
    firing.poll()
    assert firing.state is not None
    old = {k: v for k, v in firing.state.items() if k != "episode"}
    firing.state = old | {"alert_state": "firing", "last_fired_at": T0.isoformat()}
    ok = Poller(alert(gauge, above=10, on_resolve=True, cooldown=0, name="quiet"), T0)
    ok.poll()
    assert ok.state is not None
    ok.state = {k: v for k, v in ok.state.items() if k != "episode"}
    # When the episode resolves and new ones begin
    keys = firing.keys(10)
    gauge.value = 50
    keys += firing.keys(10) + ok.keys(10)
    # Then the firing episode resolves as episode 1, and the next episodes count on from it
    assert keys == ["alert:errors:1:resolved", "alert:errors:2:firing", "alert:quiet:1:firing"]


def test_a_redefined_alert_restarts_from_ok_but_keeps_counting_episodes() -> None:
    gauge = Gauge(50)
    first = Poller(alert(gauge, above=10, cooldown=0), T0)
    assert first.keys() == ["alert:errors:1:firing"]
    # When the threshold changes (a new fingerprint: the machine restarts from ok)
    second = Poller(alert(gauge, above=20, cooldown=0), T0)
    second.state = first.state
    # Then the next episode is number 2, never a second run keyed like the first
    assert second.keys(10) == ["alert:errors:2:firing"]


# -- +Inf, -Inf and NaN readings ----------------------------------------------------------


def test_infinite_readings_move_the_machine_and_nan_is_no_data() -> None:
    gauge = Gauge(float("inf"))
    above = Poller(alert(gauge, above=1e300, on_resolve=True, cooldown=0), T0)
    assert walk(above, gauge, [(0, float("inf")), (10, float("-inf")), (10, "+Inf"), (10, float("nan"))]) == [
        ("firing", ["firing"]),
        ("ok", ["resolved"]),
        ("firing", ["firing"]),
        ("ok", ["resolved"]),
    ]
    assert above.state is not None and above.state["last_value"] is None
    below = Poller(alert(gauge, below=-1e300, name="low"), T0)
    gauge.value = float("-inf")
    fired = below.poll().firings
    assert below.state is not None and below.state["last_value"] == "-Inf"
    assert [(f.event.state, f.event.value) for f in fired] == [  # type: ignore[union-attr]
        ("firing", float("-inf"))
    ]
    strict = Poller(alert(Gauge(float("nan")), above=1, empty="fail", name="strict"), T0)
    strict.poll()
    assert strict.state is not None and "no data" in strict.state["last_error"]
    assert "NaN" in strict.state["last_error"]


def test_fuzzed_readings_always_leave_storable_state_and_unique_keys() -> None:
    """Whatever a source returns (±Inf, NaN, huge, None, junk), the state and every event are
    JSON that PostgreSQL's jsonb accepts, and no two runs of the trigger share a key."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agents import event_to_json

    reading = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.none(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.sampled_from(["+Inf", "-Inf", "NaN", "n/a", "1e999"]),
    )

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(min_value=0, max_value=400), reading), max_size=25), st.booleans())
    def check(script: list[tuple[int, Any]], on_resolve: bool) -> None:
        gauge = Gauge()
        poller = Poller(
            alert(gauge, above=10, clear_below=5, on_resolve=on_resolve, cooldown=60, name="fuzzed"), T0
        )
        keys: list[str] = []
        for advance, value in script:
            gauge.value = value
            ev = poller.poll(advance)
            json.dumps(ev.state, allow_nan=False)
            for firing in ev.firings:
                json.dumps(event_to_json(firing.event), allow_nan=False)
                keys.append(firing.idempotency_key)
        assert len(keys) == len(set(keys)), keys

    check()
