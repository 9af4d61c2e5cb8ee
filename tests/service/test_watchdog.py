"""The watchdog's check(now) with a fake clock, on both databases and real Redis.

Attempts are driven by hand through the store (as a worker would), so each
deadline is crossed exactly; tests with real workers and signals are in
test_watchdog_processes.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis

from agents import ManualFire, event_to_json
from scheduler.alerts import Alert, AlertKind, WebhookChannel
from scheduler.core.clock import FakeClock
from scheduler.core.heartbeats import HeartbeatIndex, Member
from scheduler.core.settings import Settings
from scheduler.core.verdict import SUCCEEDED
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import NewRun, StartedAttempt, Store
from tests.helpers import T0, make_service, make_watchdog, registry_of, wait_for
from tests.receiver import Receiver, verify
from triggers import DbChangeTrigger

MODULE = "tests.fixtures.watch_agents"
SECRET = "s3cret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def hook(receiver: Receiver) -> WebhookChannel:
    from pydantic import SecretStr

    return WebhookChannel(receiver.url, SecretStr(SECRET))


def start(
    store: Store, settings: Settings, clock: FakeClock, agent: str = "steady", key: str = "k1"
) -> StartedAttempt:
    """A run taken by a (pretend) worker: an attempt row and its heartbeat deadlines."""
    registry = registry_of(MODULE)
    (run,) = store.commit_tick(
        [
            NewRun(
                idempotency_key=key,
                trigger=None,
                agent=agent,
                queue="agents",
                event=event_to_json(ManualFire(trigger="manual", fired_by="test")),
                logical_time=clock.now(),
                agent_version=None,
            )
        ],
        [],
        [],
        clock.now(),
    )
    started = store.begin_attempt(run.id, "worker-1", f"task-{key}", clock.now(), agent=agent)
    assert started is not None
    beat(settings, registry.agents[agent], started, clock.now(), clock.now())
    return started


def beat(settings: Settings, spec: Any, started: StartedAttempt, now: Any, progress_at: Any) -> None:
    index = HeartbeatIndex(redis.Redis.from_url(settings.require_redis_url()), settings.redis_prefix)
    progress = (progress_at + spec.progress_timeout).timestamp() if spec.progress_timeout else None
    index.beat(
        Member(started.run_id, started.attempt, started.fence),
        (now + spec.heartbeat_timeout).timestamp(),
        progress,
    )


def test_a_dead_worker_is_stalled_requeued_alerted_once_and_resolved(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    # Given a running attempt whose worker beat at T0 (heartbeat_timeout 5 s)
    clock = FakeClock(T0)
    registry = registry_of(MODULE)
    dog = make_watchdog(settings, registry, clock, channels=[hook(receiver)])
    standby = make_watchdog(settings, registry, clock, channels=[hook(receiver)], owner="standby")
    started = start(store, settings, clock)
    assert dog.check().stalled == []
    # When its deadline passes without a beat
    clock.advance(6)
    report = dog.check()
    standby.check()
    dog.check()
    # (and a second watchdog that becomes leader too, as after a lease lapse, finds the same
    # stalled attempt but sends nothing: the alert row of this episode exists)
    redis.Redis.from_url(settings.require_redis_url()).delete(f"{settings.redis_prefix}leader:watchdog")
    assert standby.check().leader
    # Then the attempt is stalled, the run requeued with a new fence, and one alert is sent
    assert report.stalled == [(started.run_id, 1, "worker_lost")]
    assert report.requeued == [started.run_id]
    run = store.get_run(started.run_id)
    assert run is not None and run.status == "queued" and run.fence == started.fence + 1
    assert [(a.status, a.reason) for a in store.attempts_of(started.run_id)] == [("stalled", "worker_lost")]
    dog.alerts.flush()
    alerts = receiver.alerts()
    assert [(a["kind"], a["state"], a["run_id"]) for a in alerts] == [
        ("run_stalled", "firing", started.run_id)
    ]
    assert alerts[0]["details"]["reason"] == "worker_lost"
    request = receiver.requests[0]
    assert verify(
        SECRET,
        request["headers"]["X-Nightowl-Timestamp"],
        request["body"],
        request["headers"]["X-Nightowl-Signature"],
    )
    # A replayed body with a fresh timestamp does not verify
    assert not verify(
        SECRET,
        str(int(request["headers"]["X-Nightowl-Timestamp"]) + 1),
        request["body"],
        request["headers"]["X-Nightowl-Signature"],
    )
    # The late worker cannot finish the stalled attempt: its fence is gone
    assert not store.finish(started, SUCCEEDED, now=clock.now())
    # And when the retry succeeds, a resolved alert follows
    retry = store.begin_attempt(started.run_id, "worker-2", "task-2", clock.now(), agent="steady")
    assert retry is not None and retry.attempt == 2
    assert store.finish(retry, SUCCEEDED, now=clock.now())
    clock.advance(1)
    standby.check()
    standby.alerts.flush()
    assert [(a["kind"], a["state"]) for a in receiver.alerts()] == [
        ("run_stalled", "firing"),
        ("run_stalled", "resolved"),
    ]
    # And later checks that still see the stall in their look-back do not raise it again
    # (each used to open a new episode: the fault harness counted 82 sends for 3 stalls).
    for _ in range(3):
        clock.advance(2)
        standby.check()
    standby.alerts.flush()
    assert [(a["kind"], a["state"]) for a in receiver.alerts()] == [
        ("run_stalled", "firing"),
        ("run_stalled", "resolved"),
    ]


def test_no_progress_revokes_and_exhausted_attempts_go_dead(
    settings: Settings, store: Store, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = FakeClock(T0)
    registry = registry_of(MODULE)
    revoked: list[str] = []
    dog = make_watchdog(settings, registry, clock, channels=[hook(receiver)], revoke=revoked.append)
    started = start(store, settings, clock, agent="thinker")
    # Given a worker that keeps beating (alive) but the agent never reports progress
    stalled = []
    for _ in range(11):
        clock.advance(1)
        store.beat(started, clock.now(), timedelta(seconds=5), None, progress_at=T0)
        beat(settings, registry.agents["thinker"], started, clock.now(), T0)
        stalled += dog.check().stalled
        if stalled:
            break
    assert clock.now() == T0 + timedelta(seconds=10)  # exactly at the progress deadline
    # Then it is stalled for no progress, its task revoked, its fence taken, and with
    # max_attempts=1 the run is dead
    assert stalled == [(started.run_id, 1, "no_progress")]
    assert revoked == ["task-k1"]
    # The stop request is the new fence: the attempt's next beat finds it fenced out.
    assert not store.beat(started, clock.now(), timedelta(seconds=5), None).current
    run = store.get_run(started.run_id)
    assert run is not None and (run.status, run.terminal_reason) == ("dead", "attempts_exhausted")
    dog.check()
    dog.alerts.flush()
    # The death is its own alert; the stall's ends with the run (it cannot recover any more)
    assert sorted((a["kind"], a["state"]) for a in receiver.alerts()) == [
        ("run_dead", "firing"),
        ("run_stalled", "firing"),
        ("run_stalled", "resolved"),
    ]


def test_a_redis_restart_loses_no_stall(settings: Settings, store: Store, redis_client: redis.Redis) -> None:
    clock = FakeClock(T0)
    started = start(store, settings, clock)
    # Given heartbeat deadlines that Redis lost (a restart without persistence)
    redis_client.delete(f"{settings.redis_prefix}hb:live", f"{settings.redis_prefix}hb:progress")
    clock.advance(6)
    # When a watchdog becomes leader, it rebuilds the sets from the database
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    assert dog.check().stalled == [(started.run_id, 1, "worker_lost")]


def test_the_database_sweep_finds_what_the_sorted_set_missed(
    settings: Settings, store: Store, redis_client: redis.Redis
) -> None:
    clock = FakeClock(T0)
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    dog.check()  # leader, with empty sets
    started = start(store, settings, clock, key="k2")
    redis_client.delete(f"{settings.redis_prefix}hb:live")
    clock.advance(6)
    stalled = []
    for _ in range(10):  # the sweep runs every 10th check
        stalled += dog.check().stalled
    assert stalled == [(started.run_id, 1, "worker_lost")]


def test_check_reads_only_expired_entries(
    settings: Settings, store: Store, redis_client: redis.Redis
) -> None:
    clock = FakeClock(T0)
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    dog.check()
    index = HeartbeatIndex(redis_client, settings.redis_prefix)
    far = (T0 + timedelta(hours=1)).timestamp()
    index.load(("live", Member(f"run-{i}", 1, 1), far) for i in range(5000))
    index.load(("live", Member(f"gone-{i}", 1, 1), T0.timestamp() - 1) for i in range(3))
    report = dog.check()
    assert report.expired_read == 3  # not 5003: the cost follows what expired
    assert index.size() == 5000  # the unknown (finished) ones were dropped


def test_a_late_cron_slot_is_alerted_with_the_scheduler_down(
    settings: Settings, store: Store, receiver: Receiver
) -> None:
    # Given a scheduler that ran a cron trigger (each minute, 30 s start deadline), then stopped
    clock = FakeClock(T0 - timedelta(seconds=30))
    registry = registry_of(MODULE)
    svc = make_service(settings, registry, clock)
    svc.tick()
    svc.close()
    dog = make_watchdog(settings, registry, clock, channels=[hook(receiver)])
    dog.check()
    # When the 12:00 slot is 30 s old and nothing started it
    clock.advance(30 + 29)
    assert dog.check().late == []
    clock.advance(2)
    report = dog.check()
    # Then it is alerted run_late (dedupe: once), even though no run row exists
    assert [(n, s.isoformat()) for n, s in report.late] == [("each-minute", "2026-03-01T12:00:00+00:00")]
    clock.advance(1)
    dog.check()
    dog.alerts.flush()
    late = [a for a in receiver.alerts() if a["kind"] == "run_late"]
    assert len(late) == 1 and late[0]["trigger"] == "each-minute"
    assert "no run exists" in late[0]["message"]


def test_started_skipped_and_waiting_slots_are_not_late(settings: Settings, store: Store) -> None:
    clock = FakeClock(T0)
    registry = registry_of(MODULE)
    svc = make_service(settings, registry, clock)
    dog = make_watchdog(settings, registry, clock)
    svc.tick()
    dog.check()
    clock.advance(60)
    svc.tick()  # creates the 12:01 run (queued, not started)
    (run,) = store.list_runs()
    started = store.begin_attempt(run.id, "w", "t", clock.now(), agent="steady")
    assert started is not None
    clock.advance(31)
    assert dog.check().late == []  # 12:01 started
    clock.advance(29)  # 12:02: skipped, since 12:01 still runs (overlap="skip")
    svc.tick()
    clock.advance(31)
    assert dog.check().late == []
    assert [r.status for r in store.list_runs()] == ["skipped", "running"]
    assert store.finish(started, SUCCEEDED, now=clock.now())
    clock.advance(29)  # 12:03: the scheduler made the run, but no worker took it
    svc.tick()
    clock.advance(31)
    late = dog.check().late
    assert [s.isoformat() for _, s in late] == ["2026-03-01T12:03:00+00:00"]


def test_source_failing_is_alerted_and_resolved(settings: Settings, store: Store, receiver: Receiver) -> None:
    from tests.polling import forget, registry_with
    from triggers import db_change

    clock = FakeClock(T0)
    spec = db_change(
        "orders",
        agent="on-row",
        name="shop-orders",
        cursor="updated_at",
        key="id",
        db_url="postgresql://shop:pw-123@127.0.0.1:1/shop",
        every=1,
    )
    try:
        registry = registry_with(spec)
        svc = make_service(settings, registry, clock)
        dog = make_watchdog(settings, registry, clock, channels=[hook(receiver)])
        for _ in range(3):
            svc.tick()
            clock.advance(1)
        dog.check()
        dog.check()
        dog.alerts.flush()
        alerts = receiver.alerts()
        assert [(a["kind"], a["state"], a["trigger"]) for a in alerts] == [
            ("trigger_source_failing", "firing", "shop-orders")
        ]
        assert "pw-123" not in str(alerts)
        # The source answers again (here: it is pointed at a real empty table)
        import sqlalchemy as sa

        engine = sa.create_engine(
            settings.require_database_url().replace("postgresql://", "postgresql+psycopg://")
        )
        with engine.begin() as conn:
            conn.execute(
                sa.text("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, updated_at TIMESTAMP)")
            )
        assert isinstance(spec.source, DbChangeTrigger)
        spec.source.db_url = None
        svc.tick()
        dog.check()
        dog.alerts.flush()
        assert [(a["kind"], a["state"]) for a in receiver.alerts()][-1] == (
            "trigger_source_failing",
            "resolved",
        )
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE orders"))
        engine.dispose()
    finally:
        list(forget(__name__))


def test_missing_leaders_are_alerted_both_ways(settings: Settings, store: Store) -> None:
    clock = FakeClock(T0)
    registry = registry_of(MODULE)
    dog = make_watchdog(settings, registry, clock)
    dog.check()
    clock.advance(25)  # past the grace (2 x leader_ttl) with no scheduler leader
    dog.check()
    alerts = AlertStore(store.engine)
    assert [(a.kind, a.state) for a in alerts.history()] == [("scheduler_down", "firing")]
    # A scheduler appears: resolved; and it, in turn, watches the watchdog
    svc = make_service(settings, registry, clock)
    svc.tick()
    dog.check()
    assert next((a.kind, a.state) for a in alerts.history()) == ("scheduler_down", "resolved")
    from scheduler.alerts import AlertManager

    svc.alerts = AlertManager(alerts, clock)
    dog.resign()
    svc.sweep()
    clock.advance(25)
    svc.sweep()
    assert next((a.kind, a.state) for a in alerts.history()) == ("watchdog_down", "firing")


def test_dedupe_reminders_and_a_failing_channel_that_does_not_block_others(
    settings: Settings, store: Store
) -> None:
    from pydantic import SecretStr

    from scheduler.alerts import AlertManager

    flaky, broken, good = Receiver(fail_first=2), Receiver(status=500), Receiver()
    try:
        clock = FakeClock(T0)
        manager = AlertManager(
            AlertStore(store.engine),
            clock,
            [WebhookChannel(u.url, SecretStr(SECRET)) for u in (broken, flaky, good)],
            repeat=timedelta(minutes=30),
            attempts=3,
            backoff_max=0.1,
        )
        alert = Alert(kind=AlertKind.RUN_STALLED, dedupe_key="run_stalled:r1:1", message="stuck", run_id="r1")
        assert manager.fire(alert) is True
        assert manager.fire(alert) is False  # still firing: not re-sent
        clock.advance(31 * 60)
        assert manager.fire(alert) is True  # a reminder after alert_repeat
        assert manager.fire(alert) is False
        assert manager.flush(timeout=30)
        assert [a["reminder"] for a in good.alerts()] == [False, True]
        assert len(flaky.alerts()) == 2  # retried through its two failures
        assert len(broken.requests) == 6  # each of the two sends tried 3 times, then given up
        (row,) = AlertStore(store.engine).history()
        assert row.channels is not None
        outcomes = sorted(row.channels.values())
        assert outcomes[0].startswith("failed: HTTPStatusError") and outcomes[1:] == ["sent", "sent"]
        # Resolving ends the episode; the next firing is a new episode and is sent again
        assert manager.resolve(alert) is True
        assert manager.fire(alert) is True
        assert [(a.state, a.episode) for a in AlertStore(store.engine).history()] == [
            ("firing", 1),
            ("resolved", 0),
            ("firing", 0),
        ]
        manager.close()
    finally:
        for r in (flaky, broken, good):
            r.close()


def test_an_alert_receiver_that_hangs_holds_up_nothing(settings: Settings, store: Store) -> None:
    """A webhook receiver that never answers in time: the alert is stored and the log and other
    channels get it at once; the hung channel times out, is retried, and records its failure."""
    from pydantic import SecretStr

    from scheduler.alerts import AlertManager

    hung, good = Receiver(delay=3.0), Receiver()
    try:
        manager = AlertManager(
            AlertStore(store.engine),
            FakeClock(T0),
            [
                WebhookChannel(hung.url, SecretStr(SECRET), timeout=0.5),
                WebhookChannel(good.url, SecretStr(SECRET)),
            ],
            attempts=2,
            backoff_max=0.1,
        )
        started = time.monotonic()
        assert (
            manager.fire(
                Alert(kind=AlertKind.RUN_DEAD, dedupe_key="run_dead:r9", message="dead", run_id="r9")
            )
            is True
        )
        assert time.monotonic() - started < 0.5  # the caller (the watchdog loop) never waits
        wait_for(good.alerts, timeout=5, message="the good channel's alert")
        assert manager.flush(timeout=30)
        (row,) = AlertStore(store.engine).history()
        assert row.channels is not None
        assert sorted(v.split(":")[0] for v in row.channels.values()) == ["failed", "sent"]
        manager.close()
    finally:
        hung.close()
        good.close()
