"""The alert state machine shared by metric and queue_depth: transitions, failures, persistence."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.conftest import T0
from tests.helpers import make_service
from tests.polling import Poller, forget, registry_with
from triggers import TriggerDefinitionError, metric


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


class Gauge:
    """A callable metric source the test sets; it can also fail, hang or return NaN."""

    def __init__(self, value: Any = 0.0) -> None:
        self.value = value
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Any:
        self.calls += 1
        self.release.wait(30)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def alert(gauge: Gauge, **options: Any) -> Any:
    options.setdefault("every", 10)
    return metric(gauge, agent="on-alert", name=options.pop("name", "errors"), **options)


def walk(poller: Poller, gauge: Gauge, script: list[tuple[float, Any]]) -> list[tuple[str, list[str]]]:
    """Feed (seconds later, value) pairs; return (alert state, fired states) after each poll."""
    out = []
    for advance, value in script:
        gauge.value = value
        ev = poller.poll(advance)
        out.append((ev.state["alert_state"],
                    [f.event.state for f in ev.firings]))  # type: ignore[union-attr]
    return out


def test_transitions_with_for_hysteresis_resolve_and_cooldown() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, clear_below=5, for_=60, cooldown=300, on_resolve=True), T0)
    assert walk(poller, gauge, [
        (0, 3),     # ok
        (10, 12),   # breach: pending
        (30, 12),   # held 30 s < for_
        (30, 12),   # held 60 s: firing, one run
        (10, 12),   # still firing: no second run
        (10, 8),    # below the threshold but above clear_below: still firing (hysteresis)
        (10, 4),    # past the clear bound: ok, and a resolved run
        (10, 12),   # a new breach: pending
        (60, 12),   # held for_, but only 90 s since the last firing run: held by cooldown
        (120, 12),  # 210 s
        (100, 12),  # 310 s since the last run: fires
    ]) == [
        ("ok", []), ("pending", []), ("pending", []), ("firing", ["firing"]), ("firing", []),
        ("firing", []), ("ok", ["resolved"]), ("pending", []), ("pending", []), ("pending", []),
        ("firing", ["firing"]),
    ]


def test_a_breach_that_ends_before_for_never_fires() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, for_=60), T0)
    assert walk(poller, gauge, [(0, 11), (30, 11), (10, 9), (30, 11), (40, 11)]) == [
        ("pending", []), ("pending", []), ("ok", []), ("pending", []), ("pending", [])]


def test_firing_and_resolved_runs_name_the_episode() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, above=10, on_resolve=True), T0)
    gauge.value = 50
    fired = poller.poll().firings
    gauge.value = 1
    resolved = poller.poll(10).firings
    assert [f.idempotency_key for f in fired + resolved] == [
        "alert:errors:1:firing", "alert:errors:1:resolved"]
    event = fired[0].event
    assert (event.kind, event.value, event.threshold, event.state) == (  # type: ignore[union-attr]
        "metric", 50.0, 10.0, "firing")
    assert resolved[0].event.value == 1.0  # type: ignore[union-attr]


def test_below_uses_clear_above() -> None:
    gauge = Gauge()
    poller = Poller(alert(gauge, below=100, clear_above=150, on_resolve=True), T0)
    assert walk(poller, gauge, [(0, 120), (10, 90), (10, 120), (10, 151)]) == [
        ("ok", []), ("firing", ["firing"]), ("firing", []), ("ok", ["resolved"])]


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


def test_a_restart_keeps_pending_and_firing(settings: Settings, store: Store) -> None:
    # Given a scheduler that saw the breach begin (pending, for_=60 s)
    gauge = Gauge(20)
    clock = FakeClock(T0)
    first = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    first.tick()
    clock.advance(30)
    first.tick()
    assert store.trigger_rows()["errors"].state["alert_state"] == "pending"
    first.close()
    # When a new scheduler process takes over 30 s later (not a fresh 60 s wait)
    clock.advance(30)
    second = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    report = second.tick()
    # Then the breach that began before the restart fires now, once
    assert report.inserted == 1
    clock.advance(10)
    second.close()
    third = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    assert third.tick().inserted == 0  # still firing after another restart: no re-fire
    assert [r.idempotency_key for r in store.list_runs()] == ["alert:errors:1:firing"]


def test_a_paused_ex_leader_cannot_write_an_older_episode_back(settings: Settings, store: Store) -> None:
    # Given leader A whose poll of the source is stuck (a paused process, as far as we care)
    gauge = Gauge(20)
    clock = FakeClock(T0)
    a = make_service(settings, registry_with(alert(gauge, above=10, on_resolve=True)), clock,
                     owner="a")
    a.poll_wait = timedelta(seconds=0.2)
    gauge.release.clear()
    a.tick()
    # When A loses the lease and B runs a whole episode (firing, then resolved)
    a.resign()
    b_gauge = Gauge(20)
    b = make_service(settings, registry_with(alert(b_gauge, above=10, on_resolve=True)), clock,
                     owner="b")
    b.tick()
    clock.advance(10)
    b_gauge.value = 1
    b.tick()
    b.resign()
    after_b = store.trigger_rows()["errors"]
    assert after_b.state["alert_state"] == "ok"
    # And A takes the lease back and its stale poll (breach seen long ago) completes
    gauge.release.set()
    time.sleep(0.5)  # the stuck poll finishes
    clock.advance(10)
    report = a.tick()
    # Then A's write loses the compare-and-set: B's episode stands, nothing fires twice
    assert report.conflicts == 1
    assert store.trigger_rows()["errors"].revision == after_b.revision
    keys = sorted(r.idempotency_key for r in store.list_runs())
    assert keys == ["alert:errors:1:firing", "alert:errors:1:resolved"]


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


def test_state_transitions_are_listed(settings: Settings, store: Store) -> None:
    gauge = Gauge(20)
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(alert(gauge, above=10, for_=timedelta(minutes=1))),
                       clock)
    svc.tick()
    row = store.trigger_rows()["errors"]
    assert row.state["alert_state"] == "pending" and row.state["last_value"] == 20
    assert row.next_evaluation == T0 + timedelta(seconds=10)


def test_sql_source_reads_a_scalar_with_bound_values(db_url: str) -> None:
    import sqlalchemy as sa

    from triggers import sql

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    table = f"jobs_{T0:%H%M%S}_{id(engine) % 10000}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, status TEXT)"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'failed'), (2, 'failed'), (3, 'ok')"))
    try:
        spec = metric(sql(f"SELECT count(*) FROM {table} WHERE status = :s", db_url=db_url,
                          params={"s": "failed"}), agent="on-alert", name="failed-jobs", above=1)
        poller = Poller(spec, T0)
        fired = poller.poll().firings
        assert [(f.event.state, f.event.value) for f in fired] == [("firing", 2.0)]  # type: ignore[union-attr]
        empty = Poller(metric(sql(f"SELECT max(id) FROM {table} WHERE status = 'none'", db_url=db_url),
                              agent="on-alert", name="none", above=1, empty="fail"), T0)
        empty.poll()
        assert empty.state is not None and "no data" in empty.state["last_error"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()


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
    assert keys == ["alert:errors:1:firing", "alert:errors:1:resolved", "alert:errors:2:firing",
                    "alert:errors:2:resolved", "alert:errors:3:firing"]
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
    assert walk(above, gauge, [(0, float("inf")), (10, float("-inf")), (10, "+Inf"),
                               (10, float("nan"))]) == [
        ("firing", ["firing"]), ("ok", ["resolved"]), ("firing", ["firing"]), ("ok", ["resolved"])]
    assert above.state is not None and above.state["last_value"] is None
    below = Poller(alert(gauge, below=-1e300, name="low"), T0)
    gauge.value = float("-inf")
    fired = below.poll().firings
    assert below.state is not None and below.state["last_value"] == "-Inf"
    assert [(f.event.state, f.event.value) for f in fired] == [  # type: ignore[union-attr]
        ("firing", float("-inf"))]
    strict = Poller(alert(Gauge(float("nan")), above=1, empty="fail", name="strict"), T0)
    strict.poll()
    assert strict.state is not None and "no data" in strict.state["last_error"]
    assert "NaN" in strict.state["last_error"]


def test_an_infinite_reading_is_stored_and_runs_on_both_databases(settings: Settings,
                                                                    store: Store) -> None:
    """jsonb refuses Infinity: the state and the run's event must be stored in a form it takes,
    the same on SQLite and PostgreSQL, and the agent still gets a float."""
    from agents import event_from_json

    gauge = Gauge(float("inf"))
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(alert(gauge, above=0.05, on_resolve=True)), clock)
    report = svc.tick()
    assert (report.inserted, report.errors) == (1, 0)
    row = store.trigger_rows()["errors"]
    assert (row.state["alert_state"], row.state["last_value"], row.state["episode"]) == (
        "firing", "+Inf", 1)
    (run,) = store.list_runs()
    assert run.idempotency_key == "alert:errors:1:firing"
    assert run.event is not None and run.event["value"] == "+Inf"
    event = event_from_json(run.event)
    assert event.value == float("inf")  # type: ignore[union-attr]
    # And a NaN reading afterwards (0/0: traffic stopped) is no data: the alert resolves
    gauge.value = float("nan")
    clock.advance(10)
    assert svc.tick().inserted == 1
    assert store.trigger_rows()["errors"].state["alert_state"] == "ok"


def test_fuzzed_readings_always_leave_storable_state_and_unique_keys() -> None:
    """Whatever a source returns (±Inf, NaN, huge, None, junk), the state and every event are
    JSON that PostgreSQL's jsonb accepts, and no two runs of the trigger share a key."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agents import event_to_json

    reading = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(),
                        st.integers(min_value=-(10**30), max_value=10**30),
                        st.sampled_from(["+Inf", "-Inf", "NaN", "n/a", "1e999"]))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(min_value=0, max_value=400), reading), max_size=25),
           st.booleans())
    def check(script: list[tuple[int, Any]], on_resolve: bool) -> None:
        gauge = Gauge()
        poller = Poller(alert(gauge, above=10, clear_below=5, on_resolve=on_resolve, cooldown=60,
                              name="fuzzed"), T0)
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
