"""Paused triggers through the scheduler service, on SQLite and PostgreSQL, with a fake clock:
cron slots become one ledger entry per pause (or the newest runs on resume), a db_change
cursor freezes, a metric keeps evaluating and fires nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.core.pauses import ALL, MissedOnPause, PauseRecord, PauseScope
from scheduler.core.settings import Settings
from scheduler.storage.store import Store, missed_t
from tests.helpers import T0, make_service, registry_of
from tests.polling import Gauge, forget, registry_with
from tests.service.test_db_change import Watched, trigger
from triggers import metric

MODULE = "tests.fixtures.e2e_triggers"
RELIABILITY = "tests.fixtures.reliability_triggers"


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


def pause(store: Store, name: str, at: datetime, **kw: object) -> None:
    store.pause(PauseRecord(PauseScope.TRIGGER, name, at, reason="maintenance", **kw))  # type: ignore[arg-type]


def ledger(store: Store, name: str) -> list[tuple[datetime, datetime, int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(missed_t.c.first_slot, missed_t.c.last_slot, missed_t.c.count, missed_t.c.reason)
            .where(missed_t.c.trigger == name)
            .order_by(missed_t.c.id)
        )
        return [(a.astimezone(UTC), b.astimezone(UTC), c, r) for a, b, c, r in rows]


def keys(store: Store) -> list[str]:
    return sorted(r.idempotency_key for r in store.list_runs(limit=1000))


def test_a_paused_cron_trigger_records_one_ledger_entry_and_fires_again_on_resume(
    settings: Settings, store: Store
) -> None:
    clock = FakeClock(T0)
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    svc.tick()
    clock.advance(1)
    svc.tick()
    assert keys(store) == ["cron:every-second:2026-03-01T12:00:01Z"]
    # When it is paused for five slots
    pause(store, "every-second", clock.now())
    for _ in range(5):
        clock.advance(1)
        svc.tick()
    # Then nothing ran, and the ledger holds one row for the pause (not one per slot)
    assert keys(store) == ["cron:every-second:2026-03-01T12:00:01Z"]
    assert ledger(store, "every-second") == [
        (T0 + timedelta(seconds=2), T0 + timedelta(seconds=6), 5, "paused")
    ]
    # And after the resume the next slot runs, and the paused ones stay skipped
    assert store.resume(PauseScope.TRIGGER, "every-second", clock.now())[0] is not None
    clock.advance(1)
    svc.tick()
    assert keys(store) == [
        "cron:every-second:2026-03-01T12:00:01Z",
        "cron:every-second:2026-03-01T12:00:07Z",
    ]
    # A second pause is a ledger row of its own
    pause(store, ALL, clock.now())
    clock.advance(1)
    svc.tick()
    assert ledger(store, "every-second")[-1] == (
        T0 + timedelta(seconds=8),
        T0 + timedelta(seconds=8),
        1,
        "paused",
    )


def test_run_latest_on_resume_runs_the_newest_paused_slot_once_under_its_live_key(
    settings: Settings, store: Store
) -> None:
    clock = FakeClock(T0)
    registry = registry_of(RELIABILITY, ["minutely"])
    svc = make_service(settings, registry, clock)
    svc.tick()
    pause(store, "minutely", clock.now(), missed=MissedOnPause.RUN_LATEST)
    for _ in range(4):
        clock.advance(60)
        svc.tick()
    assert keys(store) == []
    assert ledger(store, "minutely") == [(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3), 3, "paused")]
    # A scheduler that takes over while paused keeps holding it (the slot is in the state)
    svc.close()
    svc = make_service(settings, registry, clock)
    svc.tick()
    assert keys(store) == []
    # When resumed, the held slot runs within a tick or so (not at the next slot, a minute
    # away), once, even with two replicas
    store.resume(PauseScope.TRIGGER, "minutely", clock.now())
    other = make_service(settings, registry, clock, owner="standby")
    for _ in range(3):
        clock.advance(0.5)
        svc.tick()
        other.tick()
    assert keys(store) == ["cron:minutely:2026-03-01T12:04:00Z"]
    (run,) = store.list_runs()
    assert run.logical_time == T0 + timedelta(minutes=4)
    assert "paused_slot" not in store.trigger_rows()["minutely"].state
    clock.advance(60)
    svc.tick()
    assert keys(store) == ["cron:minutely:2026-03-01T12:04:00Z", "cron:minutely:2026-03-01T12:05:00Z"]


def test_a_paused_db_change_trigger_freezes_its_cursor_and_loses_no_row(
    settings: Settings, store: Store, db_url: str
) -> None:
    watched = Watched(db_url)
    try:
        clock = FakeClock(T0)
        svc = make_service(settings, registry_with(trigger(watched, every=1)), clock)
        svc.tick()
        base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        pause(store, "orders", clock.now())
        cursor_before = store.trigger_rows()["orders"].state
        watched.insert({"id": 1, "updated_at": base}, {"id": 2, "updated_at": base + timedelta(seconds=1)})
        for _ in range(3):
            clock.advance(1)
            svc.tick()
        assert store.list_runs() == []
        assert store.trigger_rows()["orders"].state == cursor_before  # not polled at all
        store.resume(PauseScope.TRIGGER, "orders", clock.now())
        clock.advance(1)
        svc.tick()
        assert sorted(r.idempotency_key.split(":")[2] for r in store.list_runs()) == ["1", "2"]
        assert ledger(store, "orders") == []
    finally:
        watched.close()


def test_a_paused_metric_trigger_keeps_evaluating_and_fires_nothing(settings: Settings, store: Store) -> None:
    gauge = Gauge(20)
    clock = FakeClock(T0)
    spec = metric(gauge, agent="on-alert", name="errors", every=10, above=10, cooldown=0)
    svc = make_service(settings, registry_with(spec), clock)
    pause(store, "errors", clock.now())
    svc.tick()
    # It saw the breach (its episode is firing) but no run was made
    assert store.trigger_rows()["errors"].state["alert_state"] == "firing"
    assert gauge.calls == 1 and store.list_runs() == []
    store.resume(PauseScope.TRIGGER, "errors", clock.now())
    clock.advance(10)
    svc.tick()
    assert gauge.calls == 2
    assert store.list_runs() == []  # the episode began while paused: it does not fire late
    gauge.value = 1  # resolves, then breaches again: a new episode fires
    clock.advance(10)
    svc.tick()
    gauge.value = 20
    clock.advance(10)
    svc.tick()
    assert [r.idempotency_key for r in store.list_runs()] == ["alert:errors:2:firing"]


def test_a_db_change_poll_in_flight_when_the_pause_lands_commits_nothing(
    settings: Settings, store: Store, db_url: str
) -> None:
    """A poll that started before the pause and ends after it must not move the cursor past
    rows it did not fire (they would never run)."""
    import threading
    from datetime import timedelta as td

    watched = Watched(db_url)
    try:
        clock = FakeClock(T0)
        spec = trigger(watched, every=1)
        svc = make_service(settings, registry_with(spec), clock)
        svc.poll_wait = td(seconds=0.1)
        svc.tick()
        cursor_before = store.trigger_rows()["orders"].state
        release = threading.Event()
        real = spec.source.evaluate

        def slow(*args: object, **kwargs: object) -> object:
            release.wait(10)
            return real(*args, **kwargs)

        spec.source.evaluate = slow
        base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        watched.insert({"id": 1, "updated_at": base})
        clock.advance(1)
        svc.tick()  # the poll starts and is still running
        pause(store, "orders", clock.now())
        release.set()
        import time

        time.sleep(0.3)
        clock.advance(1)
        svc.tick()  # it finishes while paused: dropped
        assert store.list_runs() == []
        assert store.trigger_rows()["orders"].state == cursor_before
        spec.source.evaluate = real
        store.resume(PauseScope.TRIGGER, "orders", clock.now())
        for _ in range(2):
            clock.advance(1)
            svc.tick()
        assert [r.idempotency_key.split(":")[2] for r in store.list_runs()] == ["1"]
    finally:
        watched.close()
