"""Faults an independent review of the issue 12 work found, each reproduced (both databases)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

import redis
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.core.verdict import AttemptOutcome
from scheduler.core.vocabulary import AttemptStatus, Delivery, Reason, RunStatus
from scheduler.ops.runs import cancel, fire, retry
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from scheduler.worker.executor import Executor
from tests.helpers import make_service, make_watchdog, registry_of, run_of

MODULE = "tests.fixtures.reliability_triggers"


def started_now(store: Store, clock: FakeClock) -> None:
    """Mark every run started (as a worker would at once), so its slot is on time."""
    now = clock.now().replace(tzinfo=None) if store.engine.dialect.name == "sqlite" else clock.now()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET started_at = :t WHERE started_at IS NULL"), {"t": now})


def test_a_retry_after_a_cancel_runs_instead_of_ending_cancelled(
    settings: Settings, store: Store, executor: Callable[..., Executor]
) -> None:
    registry = registry_of(MODULE, ["r-fails-fast"])
    publisher = Publisher(create_app(settings, registry))
    client = redis.Redis.from_url(settings.require_redis_url())
    try:
        fired = fire(store, publisher, registry, "r-fails-fast", datetime.now(UTC))
        started = store.begin_attempt(fired.run_id, "w", None, datetime.now(UTC), agent="fails-fast")
        assert started is not None
        cancel(store, client, settings.redis_prefix, fired.run_id, datetime.now(UTC))
        # The attempt ends failed before its beat saw the cancel; the operator retries it.
        assert (
            store.finish(
                started,
                AttemptOutcome(RunStatus.FAILED, Reason.NON_RETRYABLE, AttemptStatus.FAILED, Delivery.FAILED),
                now=datetime.now(UTC),
            )
            == "failed"
        )
        retry(store, publisher, fired.run_id, datetime.now(UTC))
        assert executor(registry).execute("fails-fast", fired.run_id) == "retry"
    finally:
        publisher.close()
        client.close()
    assert run_of(store, fired.run_id) == ("waiting", None)


def test_a_run_late_gap_resolves_after_a_watchdog_failover(settings: Settings, store: Store) -> None:
    registry = registry_of(MODULE, ["minutely"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    svc = make_service(settings, registry, clock)
    svc.tick()
    svc.resign()  # the scheduler is down
    clock.set(datetime(2026, 3, 1, 12, 2, 45, tzinfo=UTC))
    dog = make_watchdog(settings, registry, clock, owner="dog1")
    dog.check()
    clock.advance(25)
    assert dog.check().late  # the gap is alerted
    dog.resign()  # the watchdog is redeployed while the gap is open
    clock.set(datetime(2026, 3, 1, 12, 4, 35, tzinfo=UTC))
    back = make_service(settings, registry, clock, owner="sched2")
    back.tick()
    started_now(store, clock)
    dog2 = make_watchdog(settings, registry, clock, owner="dog2")
    dog2.check()
    for _ in range(6):
        clock.advance(10)
        back.tick()
        started_now(store, clock)
        dog2.check()
    states = sorted(a.state for a in AlertStore(store.engine).history() if a.kind == "run_late")
    assert states == ["firing", "resolved"]


def test_one_gap_is_one_alert_across_a_watchdog_redeploy(settings: Settings, store: Store) -> None:
    registry = registry_of(MODULE, ["minutely"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    svc = make_service(settings, registry, clock)
    svc.tick()
    svc.resign()  # the scheduler stays down
    clock.set(datetime(2026, 3, 1, 12, 2, 45, tzinfo=UTC))
    dog = make_watchdog(settings, registry, clock, owner="dog1")
    dog.check()
    clock.advance(25)
    dog.check()
    dog.resign()
    clock.set(datetime(2026, 3, 1, 13, 30, 0, tzinfo=UTC))  # beyond the look-back window
    dog2 = make_watchdog(settings, registry, clock, owner="dog2")
    for _ in range(6):
        dog2.check()
        clock.advance(10)
    assert len([a for a in AlertStore(store.engine).history() if a.kind == "run_late"]) == 1


def test_a_long_look_back_does_not_hold_up_other_triggers_late_alerts(
    settings: Settings, store: Store
) -> None:
    registry = registry_of(MODULE, ["minutely", "every-second"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    svc = make_service(settings, registry, clock)
    svc.tick()
    svc.resign()
    clock.set(datetime(2026, 3, 1, 12, 0, 50, tzinfo=UTC))
    dog = make_watchdog(settings, registry, clock)
    dog.check()
    seen: datetime | None = None
    for _ in range(60):
        clock.advance(2)
        if any(name == "minutely" for name, _ in dog.check().late):
            seen = clock.now()
            break
    # The 12:01 slot is late at 12:01:30; a per-second trigger's hour of look-back must not
    # delay that by more than a check or two.
    assert seen is not None
    assert (seen - datetime(2026, 3, 1, 12, 1, 30, tzinfo=UTC)).total_seconds() <= 6


def test_a_row_key_longer_than_the_overlap_column_does_not_stop_the_scheduler(
    settings: Settings, store: Store
) -> None:
    from tests.fixtures.long_key_triggers import SOURCE as source

    with sqlite3.connect(source) as conn:
        conn.execute("DROP TABLE IF EXISTS pages")
        conn.execute("CREATE TABLE pages (url TEXT PRIMARY KEY, seq INTEGER)")
    registry = registry_of("tests.fixtures.long_key_triggers")
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    svc = make_service(settings, registry, clock)
    for i in range(8):
        if i == 2:
            with sqlite3.connect(source) as conn:
                conn.execute("INSERT INTO pages VALUES (?, ?)", ("https://example.com/" + "x" * 280, 5))
        svc.tick()
        clock.advance(40)
    runs = store.list_runs(limit=1000)
    assert sum(1 for r in runs if r.trigger == "healthy-cron") >= 5
    (page,) = [r for r in runs if r.trigger == "n" * 60]
    assert page.overlap_key is not None and len(page.overlap_key) <= 256
