"""Alerts that end, with the watchdog's check on a fake clock (both databases, real Redis):
a stall's alert resolves once a later attempt runs (or the run ends), a death's once it is
retried to success or cancelled, and an acknowledged episode sends no reminder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.core.verdict import SUCCEEDED
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Store
from tests.contract.test_storage_contract import FAILED
from tests.helpers import T0, make_watchdog, registry_of
from tests.service.test_watchdog import MODULE, beat, start


def dead_open(alerts: AlertStore) -> set[str | None]:
    return {a.run_id for a in alerts.open_alerts() if a.kind == "run_dead"}


def states(store: Store, kind: str) -> list[str]:
    return [a.state for a in reversed(AlertStore(store.engine).history(kind=kind))]


def test_a_stall_alert_resolves_when_a_later_attempt_runs(settings: Settings, store: Store) -> None:
    clock = FakeClock(T0)
    registry = registry_of(MODULE)
    dog = make_watchdog(settings, registry, clock)
    started = start(store, settings, clock)
    clock.advance(6)
    assert dog.check().stalled == [(started.run_id, 1, "worker_lost")]
    assert states(store, "run_stalled") == ["firing"]
    # The retry starts and beats: the stall is over, though the run has not finished
    retry = store.begin_attempt(started.run_id, "worker-2", "task-2", clock.now(), agent="steady")
    assert retry is not None and retry.attempt == 2
    beat(settings, registry.agents["steady"], retry, clock.now(), clock.now())
    clock.advance(1)
    dog.check()
    assert states(store, "run_stalled") == ["firing", "resolved"]
    (resolved,) = AlertStore(store.engine).history(kind="run_stalled", state="resolved")
    assert "attempt 2 is running" in resolved.message
    assert [a for a in AlertStore(store.engine).open_alerts() if a.kind == "run_stalled"] == []


def test_a_stall_alert_resolves_when_the_run_ends_however_it_ends(settings: Settings, store: Store) -> None:
    clock = FakeClock(T0)
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    started = start(store, settings, clock)
    clock.advance(6)
    dog.check()
    retry = store.begin_attempt(started.run_id, "worker-2", "task-2", clock.now(), agent="steady")
    assert retry is not None
    assert store.finish(retry, FAILED, now=clock.now(), error="boom")
    clock.advance(1)
    dog.check()
    assert states(store, "run_stalled") == ["firing", "resolved"]


def test_a_dead_runs_alert_resolves_when_it_is_retried_to_success(settings: Settings, store: Store) -> None:
    from scheduler.core.verdict import EXHAUSTED

    clock = FakeClock(T0)
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    started = start(store, settings, clock)
    assert store.finish(started, EXHAUSTED, now=clock.now(), error="RuntimeError: gave up")
    clock.advance(1)
    dog.check()
    assert states(store, "run_dead") == ["firing"]
    # `runs retry`: revived, and while it runs the death's alert stays open
    assert store.revive(started.run_id, ("dead",)) is not None
    again = store.begin_attempt(started.run_id, "worker-2", "task-2", clock.now(), agent="steady")
    assert again is not None
    clock.advance(1)
    dog.check()
    assert states(store, "run_dead") == ["firing"]
    assert store.finish(again, SUCCEEDED, now=clock.now())
    clock.advance(1)
    dog.check()
    assert states(store, "run_dead") == ["firing", "resolved"]


def test_an_acknowledged_alert_sends_no_reminder_and_still_resolves(settings: Settings, store: Store) -> None:
    from scheduler.core.verdict import EXHAUSTED

    clock = FakeClock(T0)
    dog = make_watchdog(settings, registry_of(MODULE), clock, repeat=60)
    first = start(store, settings, clock, key="k1")
    second = start(store, settings, clock, key="k2")
    for s in (first, second):
        assert store.finish(s, EXHAUSTED, now=clock.now(), error="gave up")
    clock.advance(1)
    dog.check()
    alerts = AlertStore(store.engine)
    by_run = {a.run_id: a for a in alerts.open_alerts() if a.kind == "run_dead"}
    acked = alerts.ack(by_run[first.run_id].id, "ops@host", "looking", datetime.now(UTC))
    assert (acked.acked_by, acked.ack_reason) == ("ops@host", "looking")
    # An hour of checks: the other one is reminded, the acknowledged one is not
    for _ in range(3):
        clock.advance(61)
        dog.check()
    reminded = {a.run_id: a.reminded_at for a in alerts.open_alerts() if a.kind == "run_dead"}
    assert reminded[first.run_id] is None and reminded[second.run_id] is not None
    assert dead_open(alerts) == {first.run_id, second.run_id}  # still open
    # A resolved episode cannot be acknowledged; an unknown id is named
    assert store.revive(first.run_id, ("dead",)) is not None
    again = store.begin_attempt(first.run_id, "worker-2", "task-2", clock.now(), agent="steady")
    assert again is not None and store.finish(again, SUCCEEDED, now=clock.now())
    dog.check()
    assert dead_open(alerts) == {second.run_id}
    with pytest.raises(ValueError, match="already resolved"):
        alerts.ack(by_run[first.run_id].id, "ops@host", None, datetime.now(UTC))
    with pytest.raises(LookupError, match="no alert with id"):
        alerts.ack(999_999, "ops@host", None, datetime.now(UTC))
