"""Issue 12: the faults that stranded runs or silenced triggers, each reproduced.

Real Redis (kombu's own structures), real PostgreSQL and SQLite, real worker
processes where the fault is a process's; time from a FakeClock that follows the
wall clock where workers stamp real times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.core.verdict import SUCCEEDED, AttemptOutcome, lost
from scheduler.core.vocabulary import AttemptStatus, Delivery, RunStatus
from scheduler.dispatch.service import TickFailedError
from scheduler.ops.runs import Fired, fire
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Dispatch, NewRun, Store
from scheduler.storage.watch_store import WatchStore
from scheduler.worker.app import create_app
from scheduler.worker.executor import Executor
from tests.fixtures.reliability_triggers import calls_key
from tests.helpers import (
    PG_ADMIN_URL,
    database_refusing,
    make_service,
    make_watchdog,
    queue_length,
    registry_of,
    run_of,
    wait_for,
)
from triggers import Registry

MODULE = "tests.fixtures.reliability_triggers"


def fire_now(settings: Settings, store: Store, registry: Registry, trigger: str) -> Fired:
    """`nightowl fire TRIGGER` as the CLI does it: commit, then publish."""
    publisher = Publisher(create_app(settings, registry))
    try:
        return fire(store, publisher, registry, trigger, datetime.now(UTC))
    finally:
        publisher.close()


# -- 1. queued with no message -----------------------------------------------------------


class FastWorkerPublisher(Publisher):
    """Publishes, then lets a worker take and fail each run before `publish` returns: the
    window in which the old bookkeeping overwrote the worker's `waiting` with `queued`."""

    def __init__(self, settings: Settings, registry: Registry, worker: Executor) -> None:
        super().__init__(create_app(settings, registry))
        self.worker = worker

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        super().publish(dispatches)
        for d in dispatches:
            assert self.worker.execute(d.agent, d.run_id) == "retry"


def test_a_fast_retry_is_not_overwritten_by_the_publishers_bookkeeping(
    settings: Settings, store: Store, executor: Callable[..., Executor]
) -> None:
    registry = registry_of(MODULE, ["every-second-skip"])
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    svc = make_service(
        settings, registry, clock, publisher=FastWorkerPublisher(settings, registry, executor(registry))
    )
    svc.tick()
    clock.advance(1)
    (run_id,) = [rid for _, rid in svc.tick().fired]
    # The worker's retry stands: `waiting` with its backoff, not `queued` with no message.
    run = store.get_run(run_id)
    assert run is not None and (run.status, run.waiting_for) == ("waiting", "retry")
    (attempt,) = store.attempts_of(run_id)
    # (the worker's clock is the wall clock: its backoff counts from when the attempt ended)
    assert run.not_before is not None and attempt.finished_at is not None
    assert run.not_before > attempt.finished_at
    # And once the backoff passed, the sweeper sends it again (it is not stranded).
    clock.set(run.not_before + timedelta(seconds=1))
    assert svc.sweep() == 1


def test_lost_messages_are_republished_and_a_backlog_is_left_alone(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    registry = registry_of(MODULE, ["r-counts"])
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(settings, registry, clock)
    assert svc.hold_leadership()
    publisher = Publisher(create_app(settings, registry))
    try:
        ids = [fire(store, publisher, registry, "r-counts", clock.now()).run_id for _ in range(20)]
    finally:
        publisher.close()
    queue = f"{prefix}agents"
    assert queue_length(redis_client, prefix) == 20
    # A worker received one message (kombu moved it to `unacked`) and was SIGKILLed.
    raw = redis_client.rpop(queue)
    assert isinstance(raw, bytes)
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    redis_client.hset(f"{prefix}unacked", tag, json.dumps([message, "", "agents"]))
    redis_client.zadd(f"{prefix}unacked_index", {tag: time.time()})
    held = message["headers"]["nightowl_run_id"]
    # Within the bound nothing is republished: a live worker may be starting it.
    clock.advance(5)
    assert svc.sweep() == 0
    # Past it, exactly the run whose message is with the dead worker goes out again; the
    # 19 waiting in the backlog (queued just as long) are left alone.
    clock.advance(svc.sweeper.requeue_lost_after.total_seconds())
    assert svc.sweep() == 1
    assert queue_length(redis_client, prefix) == 20
    assert held in {json.loads(m)["headers"]["nightowl_run_id"] for m in redis_client.lrange(queue, 0, -1)}
    # Redis loses three messages (a failover without the last writes): those three, only.
    lost = set()
    for _ in range(3):
        popped = redis_client.rpop(queue)
        assert isinstance(popped, bytes)
        lost.add(json.loads(popped)["headers"]["nightowl_run_id"])
    clock.advance(svc.sweeper.requeue_lost_after.total_seconds())
    assert svc.sweep() == 3
    present = {json.loads(m)["headers"]["nightowl_run_id"] for m in redis_client.lrange(queue, 0, -1)}
    assert lost <= present and present == set(ids)


# -- 2. a failed tick commit ---------------------------------------------------------------


def test_a_failed_tick_commit_leaves_every_trigger_scheduled(
    pg_settings: Settings, pg_store: Store, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(MODULE, ["every-second", "minutely"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))
    svc = make_service(pg_settings, registry, clock)
    svc.tick()
    with database_refusing(pg_settings):
        clock.advance(60)  # both triggers due, and the database gone
        with pytest.raises(TickFailedError):
            svc.tick()
        # A tick with nothing due commits nothing: it proves nothing about the database.
        with caplog.at_level(logging.INFO, logger="nightowl.scheduler"):
            assert svc.tick().commits == 0
        assert "commit again" not in caplog.text
    # Then after the backoff both fire again: none was dropped from the schedule.
    clock.advance(1)
    with caplog.at_level(logging.INFO, logger="nightowl.scheduler"):
        fired = {trigger for trigger, _ in svc.tick().fired}
    assert caplog.text.count("ticks commit again after 1 failed tick") == 1
    assert fired == {"every-second", "minutely"}
    clock.advance(1)
    assert {t for t, _ in svc.tick().fired} == {"every-second"}


def test_triggers_fire_within_a_second_of_a_long_outage_ending(
    pg_settings: Settings, pg_store: Store
) -> None:
    """Many failed ticks (a 10 s outage fails one every 0.25 s) must not push the triggers
    they took off the heap to the backoff's ceiling: back within a second, not 30 s."""
    registry = registry_of(MODULE, ["every-second", "minutely"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 55, tzinfo=UTC))
    svc = make_service(pg_settings, registry, clock)
    svc.tick()
    with database_refusing(pg_settings):  # 12:00:55 to 12:01:05: the minutely slot inside
        for _ in range(40):
            clock.advance(0.25)
            with contextlib.suppress(TickFailedError):
                svc.tick()
    fired: set[str] = set()
    for _ in range(4):  # one second after the database answers
        clock.advance(0.25)
        fired |= {t for t, _ in svc.tick().fired}
    assert fired == {"every-second", "minutely"}


# -- 3. values PostgreSQL would refuse -------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "path"),
    [
        ("r-nan-result", "result.score is nan"),
        ("r-nul-result", "result.items[0].name contains a NUL character"),
        ("r-nan-outbox", "value.loss is inf"),
    ],
)
def test_unstorable_values_fail_the_run_naming_the_path(
    settings: Settings, store: Store, executor: Callable[..., Executor], trigger: str, path: str
) -> None:
    registry = registry_of(MODULE, [trigger])
    publisher = Publisher(create_app(settings, registry))
    try:
        fired = fire(store, publisher, registry, trigger, datetime.now(UTC))
    finally:
        publisher.close()
    agent = registry.agent_for(registry.triggers[trigger]).name
    assert executor(registry).execute(agent, fired.run_id) == "failed"
    run = store.get_run(fired.run_id)
    assert run is not None and (run.status, run.terminal_reason) == ("failed", "not_serialisable")
    assert path in (run.error or ""), run.error
    assert [a.status for a in store.attempts_of(run.id)] == ["failed"]  # not retried


def test_a_nan_heartbeat_detail_is_dropped_not_fatal(
    settings: Settings, store: Store, executor: Callable[..., Executor], caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_of(MODULE, ["r-nan-heartbeat"])
    fired = fire_now(settings, store, registry, "r-nan-heartbeat")
    with caplog.at_level(logging.WARNING):
        assert (
            executor(registry, heartbeat_interval=0.1).execute("nan-heartbeat", fired.run_id) == "succeeded"
        )
    run = store.get_run(fired.run_id)
    assert run is not None and run.last_heartbeat is not None
    assert run.last_heartbeat["details"] == {"step": 5}
    assert sum("heartbeat details dropped" in r.getMessage() for r in caplog.records) == 1


def test_a_manual_payload_with_nan_is_refused(settings: Settings, store: Store) -> None:
    from scheduler.ops.runs import OperationError

    registry = registry_of(MODULE, ["r-counts"])
    publisher = Publisher(create_app(settings, registry))
    try:
        with pytest.raises(OperationError, match=r"payload\.x is nan"):
            fire(store, publisher, registry, "r-counts", datetime.now(UTC), payload={"x": float("nan")})
    finally:
        publisher.close()
    assert store.list_runs() == []


# -- 4. cancellation aimed at the attempt and the run's future ---------------------------------


def test_a_fenced_out_attempt_notices_and_stops(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    executor: Callable[..., Executor],
) -> None:
    registry = registry_of(MODULE, ["r-loops"])
    fired = fire_now(settings, store, registry, "r-loops")
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            executor(registry, heartbeat_interval=0.1).execute("loops", fired.run_id)
        )
    )
    worker.start()
    # (in-process, the agent counts under the unprefixed key)
    wait_for(lambda: redis_client.get(calls_key(fired.run_id, "")), message="the agent")
    run = store.get_run(fired.run_id)
    assert run is not None
    # The watchdog stalls it (a new fence) while the agent is alive and looping.
    stall = WatchStore(store.engine).stall(
        run.id, 1, run.fence, reason="no_progress", now=datetime.now(UTC), run_status=lost(1, 3)
    )
    assert stall is not None and stall.run_status == "pending"
    worker.join(timeout=10)
    assert outcome == ["fenced_out"]
    assert [(a.status, a.reason) for a in store.attempts_of(run.id)] == [("stalled", "no_progress")]


def test_a_user_cancel_survives_the_retry(
    settings: Settings, store: Store, executor: Callable[..., Executor]
) -> None:
    from scheduler.ops.runs import cancel

    registry = registry_of(MODULE, ["r-fails-fast"])
    publisher = Publisher(create_app(settings, registry))
    client = redis.Redis.from_url(settings.require_redis_url())
    try:
        fired = fire(store, publisher, registry, "r-fails-fast", datetime.now(UTC))
        started = store.begin_attempt(fired.run_id, "w", None, datetime.now(UTC), agent="fails-fast")
        assert started is not None
        cancel(store, client, settings.redis_prefix, fired.run_id, datetime.now(UTC))
        # The attempt then fails: its retry verdict must not erase the cancel.
        written = store.finish(
            started,
            AttemptOutcome(
                RunStatus.WAITING, None, AttemptStatus.FAILED, Delivery.RETRY, retry_in=timedelta(seconds=30)
            ),
            now=datetime.now(UTC),
        )
    finally:
        publisher.close()
        client.close()
    assert written == "cancelled"
    assert run_of(store, fired.run_id) == ("cancelled", "by_user")


# -- 11. a transient error in the final write ----------------------------------------------------


def test_the_final_write_survives_a_killed_session(
    pg_settings: Settings, pg_store: Store, executor: Callable[..., Executor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIGHTOWL_TEST_PG_ADMIN", PG_ADMIN_URL)
    monkeypatch.setenv("NIGHTOWL_TEST_PG_DATABASE", pg_settings.require_database_url().rsplit("/", 1)[1])
    registry = registry_of(MODULE, ["r-kills-db-sessions"])
    fired = fire_now(pg_settings, pg_store, registry, "r-kills-db-sessions")
    worker = executor(registry)
    assert worker.execute("kills-db-sessions", fired.run_id) == "succeeded"
    pg_store.engine.dispose()  # the test's own pooled sessions were killed too
    run = pg_store.get_run(fired.run_id)
    assert run is not None and run.status == "succeeded" and run.result == {"done": True}


# -- 8. run_late at takeover, per gap, not for slots skipped by policy --------------------------


def test_run_late_is_one_alert_per_gap_and_looks_back_at_takeover(settings: Settings, store: Store) -> None:
    registry = registry_of(MODULE, ["minutely"])
    t0 = datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC)
    clock = FakeClock(t0)
    svc = make_service(settings, registry, clock)
    svc.tick()  # the trigger's state exists from 12:00:10; then the scheduler dies
    svc.resign()
    # No watchdog leads while the 12:01 and 12:02 slots pass their deadline.
    clock.set(datetime(2026, 3, 1, 12, 2, 45, tzinfo=UTC))
    dog = make_watchdog(settings, registry, clock)
    dog.check()  # takes over; judges the look-back once the scheduler had time to catch up
    clock.advance(25)
    late = dog.check().late
    assert late == [
        ("minutely", datetime(2026, 3, 1, 12, 1, tzinfo=UTC)),
        ("minutely", datetime(2026, 3, 1, 12, 2, tzinfo=UTC)),
    ]
    clock.set(datetime(2026, 3, 1, 12, 4, 31, tzinfo=UTC))
    dog.check()  # 12:03 and 12:04 are late too: the same gap
    fired = [(a.kind, a.state) for a in AlertStore(store.engine).history() if a.kind == "run_late"]
    assert fired == [("run_late", "firing")]
    # The scheduler comes back with catchup="latest": the 12:05 slot runs on time, closing the gap.
    clock.set(datetime(2026, 3, 1, 12, 5, 1, tzinfo=UTC))
    svc2 = make_service(settings, registry, clock, owner=f"s-{uuid.uuid4().hex[:4]}")
    svc2.tick()
    (run,) = [r for r in store.list_runs() if r.logical_time == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE runs SET started_at = :t WHERE id = :id"),
            {
                "t": clock.now().replace(tzinfo=None)
                if store.engine.dialect.name == "sqlite"
                else clock.now(),
                "id": run.id,
            },
        )
    clock.set(datetime(2026, 3, 1, 12, 5, 31, tzinfo=UTC))
    dog.check()
    states = [a.state for a in AlertStore(store.engine).history() if a.kind == "run_late"]
    assert sorted(states) == ["firing", "resolved"]


def test_slots_skipped_by_catch_up_are_not_late_after_a_restart(settings: Settings, store: Store) -> None:
    registry = registry_of(MODULE, ["minutely"])
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC))
    svc = make_service(settings, registry, clock)
    svc.tick()
    svc.resign()
    # Everything stops for 20 minutes (a laptop closed with `make demo` running), then both
    # come back: the scheduler's catch-up runs the newest slot and ledgers the rest.
    clock.set(datetime(2026, 3, 1, 12, 20, 5, tzinfo=UTC))
    dog = make_watchdog(settings, registry, clock)
    dog.check()
    svc2 = make_service(settings, registry, clock, owner="back")
    svc2.tick()
    for step in (10, 10, 4):  # the look-back is judged after the settling pause (20 s)
        clock.advance(step)
        dog.check()
    assert [a for a in AlertStore(store.engine).history() if a.kind == "run_late"] == []


# -- run_stuck ------------------------------------------------------------------------------------


def test_a_queued_run_without_a_message_raises_run_stuck(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    registry = registry_of(MODULE, ["r-counts"])
    publisher = Publisher(create_app(settings, registry))
    now = datetime.now(UTC)
    try:
        fired = fire(store, publisher, registry, "r-counts", now)
    finally:
        publisher.close()
    redis_client.delete(f"{prefix}agents")  # the message is gone, and no scheduler sweeps
    clock = FakeClock(now + timedelta(seconds=130))
    dog = make_watchdog(settings, registry, clock)
    for _ in range(6):  # two run_stuck scans: a run must be missing at both
        dog.check()
        clock.advance(1)
    stuck = [(a.kind, a.state, a.run_id) for a in AlertStore(store.engine).history() if a.kind == "run_stuck"]
    assert stuck == [("run_stuck", "firing", fired.run_id)]


# -- 10. one lock order ---------------------------------------------------------------------------


def test_a_stall_racing_a_finish_never_deadlocks(pg_store: Store) -> None:
    """The worker's finish locks the run, then the attempt; the watchdog's stall took them the
    other way round and PostgreSQL reported DeadlockDetected. Race them, many times."""
    watch = WatchStore(pg_store.engine)
    now = datetime.now(UTC)
    runs = pg_store.commit_tick(
        [
            NewRun(
                idempotency_key=f"race:{i}",
                trigger="t",
                agent="a",
                queue="agents",
                event={"kind": "manual", "trigger": "t", "payload": None, "fired_by": "test"},
                logical_time=now,
                agent_version="v",
            )
            for i in range(30)
        ],
        [],
        [],
        now,
    )
    errors: list[BaseException] = []
    outcomes: list[tuple[str | None, bool]] = []
    for run in runs:
        started = pg_store.begin_attempt(run.id, "w", None, now, agent="a")
        assert started is not None
        barrier = threading.Barrier(2)
        result: dict[str, object] = {}

        def finish(
            started: object = started,
            barrier: threading.Barrier = barrier,
            result: dict[str, object] = result,
        ) -> None:
            barrier.wait()
            try:
                result["finish"] = pg_store.finish(
                    started,  # type: ignore[arg-type]
                    SUCCEEDED,
                    now=now,
                )
            except BaseException as exc:
                errors.append(exc)

        def stall(
            run_id: str = run.id, barrier: threading.Barrier = barrier, result: dict[str, object] = result
        ) -> None:
            barrier.wait()
            try:
                result["stall"] = watch.stall(
                    run_id, 1, 1, reason="worker_lost", now=now, run_status=lost(1, 3)
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=finish), threading.Thread(target=stall)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        outcomes.append((result.get("finish"), result.get("stall") is not None))  # type: ignore[arg-type]
    assert errors == []
    # Exactly one of the two won each race: a finished run, or a stall that fenced it out.
    assert all((status == "succeeded") != stalled for status, stalled in outcomes), outcomes


def test_an_unstorable_row_fails_its_own_run_and_the_tick_commits(
    settings: Settings, store: Store, db_url: str
) -> None:
    """A row with NaN (PostgreSQL float) or a NUL character (SQLite text) made the whole
    chunk's commit fail on PostgreSQL and pass on SQLite; now its run alone is refused."""
    from tests.polling import forget, registry_with
    from triggers import db_change

    name = f"scores_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, score FLOAT, label TEXT)'))
    try:
        bad = (
            {"id": 2, "score": float("nan"), "label": "x"}
            if db_url.startswith("postgresql")
            else {"id": 2, "score": 1.0, "label": "a\x00b"}
        )
        spec = db_change(
            name, agent="on-row", name="scores", db_url=db_url, cursor="id", key="id", start="beginning"
        )
        clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        svc = make_service(settings, registry_with(spec), clock)
        with engine.begin() as conn:
            for row in ({"id": 1, "score": 0.5, "label": "ok"}, bad, {"id": 3, "score": 0.7, "label": "ok"}):
                conn.execute(sa.text(f'INSERT INTO "{name}" VALUES (:id, :score, :label)'), row)
        for _ in range(2):
            svc.tick()
            clock.advance(6)
        runs = {r.idempotency_key.split(":")[2]: r for r in store.list_runs()}
        assert set(runs) == {"1", "2", "3"}
        assert (runs["2"].status, runs["2"].terminal_reason) == ("failed", "not_serialisable")
        where = (
            "event.row.score is nan"
            if db_url.startswith("postgresql")
            else "event.row.label contains a NUL character"
        )
        assert where in (runs["2"].error or "")
        assert runs["1"].status == runs["3"].status == "queued"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
        engine.dispose()
        list(forget(__name__))


def test_an_episode_seen_during_a_database_outage_is_not_lost(
    pg_settings: Settings, pg_store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    """A queue that backs up and drains while the scheduler's database is down: the poll saw
    the episode, so its firing commits once the database answers, not never."""
    from tests.helpers import REDIS_URL
    from tests.polling import forget, registry_with
    from triggers import queue_depth

    spec = queue_depth(
        "inbox",
        agent="on-alert",
        name="inbox-backlog",
        above=2,
        broker_url=REDIS_URL,
        key_prefix=prefix,
        every=1,
    )
    try:
        clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        svc = make_service(pg_settings, registry_with(spec), clock)
        svc.tick()
        with database_refusing(pg_settings):
            redis_client.rpush(f"{prefix}inbox", *[b"m"] * 5)  # the backlog appears...
            clock.advance(1)
            with pytest.raises(TickFailedError):
                svc.tick()  # ...is seen, and cannot be committed
            redis_client.delete(f"{prefix}inbox")  # ...and drains during the outage
        clock.advance(2)
        svc.tick()
        keys = [r.idempotency_key for r in pg_store.list_runs()]
        assert keys == ["alert:inbox-backlog:1:firing"], keys
    finally:
        list(forget(__name__))
