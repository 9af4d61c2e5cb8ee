"""Storage contract: the same assertions on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from agents import OutboxWrite
from scheduler.core.errors import StateConflictError
from scheduler.core.verdict import SUCCEEDED, AttemptOutcome, lost
from scheduler.core.vocabulary import (
    AttemptStatus,
    Delivery,
    Reason,
    RunStatus,
    StallReason,
    WaitingFor,
)
from scheduler.storage.dialect import Dialect
from scheduler.storage.migrate import current, head_revision
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import (
    ConcurrencyBlockedError,
    Dispatch,
    MissedRow,
    NewRun,
    OverlapBlockedError,
    Plan,
    StateWrite,
    Store,
    missed_t,
    plan_for,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# A retry verdict: the run waits 30 s (the worker's verdict for a retryable error).
RETRY = AttemptOutcome(
    RunStatus.WAITING, None, AttemptStatus.FAILED, Delivery.RETRY, retry_in=timedelta(seconds=30)
)
FAILED = AttemptOutcome(RunStatus.FAILED, Reason.ERROR, AttemptStatus.FAILED, Delivery.FAILED)


def new_run(key: str, **kw: Any) -> NewRun:
    return NewRun(
        idempotency_key=key,
        trigger="t",
        agent="a",
        queue="agents",
        event={"kind": "cron", "trigger": "t", "scheduled_for": T0.isoformat(), "fired_at": T0.isoformat()},
        logical_time=T0,
        agent_version="v1",
        **kw,
    )


def claim(store: Store, run_id: str, now: datetime, grace: timedelta = timedelta(0)) -> bool:
    """The publish bookkeeping for one run, as the publisher would see it now."""
    run = store.get_run(run_id)
    assert run is not None
    seen = Dispatch(run.id, run.agent, run.queue, run.trigger, run.attempt, run.status, run.fence)
    return bool(store.claim_for_publish([seen], now, grace))


def test_schema_is_at_head(store: Store) -> None:
    assert current(store.engine) == head_revision() >= "0004"


def test_insert_dedupes_on_idempotency_key(store: Store) -> None:
    first = store.commit_tick([new_run("k1"), new_run("k2")], [], [], T0)
    assert len(first) == 2
    again = store.commit_tick([new_run("k1"), new_run("k3")], [], [], T0)
    assert [r.idempotency_key for r in again] == ["k3"]
    assert len(store.list_runs()) == 3


def test_times_round_trip_as_aware_utc(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    loaded = store.get_run(run.id)
    assert loaded is not None
    assert loaded.logical_time == T0 and loaded.logical_time.tzinfo is not None
    assert loaded.created_at == T0
    assert loaded.status == "pending" and loaded.fence == 0


def test_state_compare_and_set(store: Store) -> None:
    store.commit_tick([], [StateWrite("t", "cron", {"version": 1, "n": 1}, 0, T0)], [], T0)
    assert store.load_trigger_states()["t"] == ({"version": 1, "n": 1}, 1)
    store.commit_tick([], [StateWrite("t", "cron", {"version": 1, "n": 2}, 1, T0)], [], T0)
    assert store.load_trigger_states()["t"] == ({"version": 1, "n": 2}, 2)
    # A paused ex-leader writing from revision 1 loses, and its runs are not inserted either.
    with pytest.raises(StateConflictError):
        store.commit_tick(
            [new_run("stale")], [StateWrite("t", "cron", {"version": 1, "n": 9}, 1, T0)], [], T0
        )
    assert store.load_trigger_states()["t"] == ({"version": 1, "n": 2}, 2)
    assert store.list_runs() == []
    # Creating a state that already exists is a conflict too.
    with pytest.raises(StateConflictError):
        store.commit_tick([], [StateWrite("t", "cron", {"version": 1}, 0, T0)], [], T0)


def test_missed_ledger_rows(store: Store) -> None:
    store.commit_tick([], [], [MissedRow("t", T0, T0 + timedelta(minutes=9), 10, "missed")], T0)
    with store.engine.connect() as conn:
        (row,) = conn.execute(sa.select(missed_t)).all()
    assert (row._mapping["count"], row.reason) == (10, "missed")


# Every attempt plan on every database that has it: SQLite has only the transaction plan;
# PostgreSQL runs both, its transaction plan through a Dialect with single_statement off.
EACH_PLAN = pytest.mark.parametrize(
    ("db_url", "plan"),
    [("sqlite", Plan.TRANSACTION), ("postgresql", Plan.SINGLE_STATEMENT), ("postgresql", Plan.TRANSACTION)],
    indirect=["db_url"],
    ids=["sqlite-transaction", "postgresql-single_statement", "postgresql-transaction"],
)


@pytest.fixture
def plan_store(store: Store, plan: Plan) -> Store:
    """The store pinned to `plan` (a test taking it is marked EACH_PLAN)."""
    dialect = Dialect.for_engine(store.engine)
    if plan is Plan.TRANSACTION:
        dialect = dialect.without_single_statement()
    pinned = Store(store.engine, dialect=dialect)
    assert pinned.plan is plan
    return pinned


def test_the_plan_follows_the_dialect_alone(store: Store) -> None:
    dialect = Dialect.for_engine(store.engine)
    native = Plan.SINGLE_STATEMENT if dialect.name == "postgresql" else Plan.TRANSACTION
    assert store.plan is plan_for(dialect) is native
    assert plan_for(dialect.without_single_statement()) is Plan.TRANSACTION


@EACH_PLAN
def test_fence_comes_from_the_database_and_guards_the_final_write(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("k1")], [], [], T0)
    assert plan_store.begin_attempt(run.id, "w0", None, T0, agent="someone-else") is None
    a1 = plan_store.begin_attempt(run.id, "w1", "task-1", T0, agent="a")
    assert a1 is not None and (a1.fence, a1.attempt, a1.deliveries) == (1, 1, 1)
    # A second worker takes over (the first one is paused): a new, higher fence.
    a2 = plan_store.begin_attempt(run.id, "w2", "task-2", T0, agent="a")
    assert a2 is not None and a2.fence == 2
    # The stale worker's commit matches no row and writes nothing.
    assert not plan_store.finish(a1, SUCCEEDED, now=T0, result={"from": "w1"})
    assert plan_store.finish(a2, SUCCEEDED, now=T0, result={"from": "w2"})
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and loaded.status == "succeeded" and loaded.result == {"from": "w2"}
    statuses = [(a.number, a.status) for a in plan_store.attempts_of(run.id)]
    # The takeover closed attempt 1 as stalled; its late commit does not rewrite that.
    assert statuses == [(1, "stalled"), (2, "succeeded")]
    # Terminal runs cannot be started again.
    assert plan_store.begin_attempt(run.id, "w3", None, T0, agent="a") is None


def test_publish_bookkeeping(store: Store) -> None:
    runs = store.commit_tick([new_run("k1"), new_run("k2")], [], [], T0)
    # Pending runs are not swept before the grace period...
    assert store.due_for_publish(T0, T0 - timedelta(seconds=5), 10) == []
    # ...and are after it.
    due = store.due_for_publish(T0 + timedelta(seconds=10), T0 + timedelta(seconds=5), 10)
    assert {d.run_id for d in due} == {r.id for r in runs}
    assert claim(store, runs[0].id, T0)
    due = store.due_for_publish(T0 + timedelta(seconds=10), T0 + timedelta(seconds=5), 10)
    assert [d.run_id for d in due] == [runs[1].id]


@EACH_PLAN
def test_retry_waits_until_not_before(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("k1")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    assert plan_store.finish(started, RETRY, now=T0, error="boom", error_class="RuntimeError")
    (attempt,) = plan_store.attempts_of(run.id)
    assert (attempt.status, attempt.error_class, attempt.error_message, attempt.finished_at) == (
        "failed",
        "RuntimeError",
        "boom",
        T0,
    )
    waiting = plan_store.get_run(run.id)
    assert waiting is not None and (waiting.status, waiting.error, waiting.finished_at) == (
        "waiting",
        "boom",
        None,
    )
    assert plan_store.due_for_publish(T0 + timedelta(seconds=29), T0, 10) == []
    (due,) = plan_store.due_for_publish(T0 + timedelta(seconds=30), T0, 10)
    assert due.run_id == run.id and due.attempt == 1
    assert plan_store.claim_for_publish([due], T0 + timedelta(seconds=30), timedelta(0)) == [due]
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and loaded.status == "queued"


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    store.commit_tick([new_run("old")], [], [], T0)
    store.commit_tick([new_run("new")], [], [], T0 + timedelta(seconds=1))
    assert [r.idempotency_key for r in store.list_runs()] == ["new", "old"]
    assert [r.idempotency_key for r in store.list_runs(limit=1)] == ["new"]
    assert store.list_runs(status="succeeded") == []
    assert len(store.list_runs(trigger="t")) == 2


@EACH_PLAN
def test_heartbeats_are_conditional_and_expired_leases_are_swept(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("k1")], [], [], T0)
    ttl = timedelta(seconds=10)
    a1 = plan_store.begin_attempt(run.id, "w1", None, T0, ttl, agent="a")
    assert a1 is not None
    # A live worker's beat extends the lease mirror and records progress.
    assert plan_store.beat(a1, T0 + timedelta(seconds=5), ttl, {"note": "step", "details": {"n": 1}}).current
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and loaded.lease_expires_at == T0 + timedelta(seconds=15)
    assert loaded.last_heartbeat == {"note": "step", "details": {"n": 1}}
    # Before the lease expires nothing is swept; after, the run is due for redelivery.
    assert plan_store.due_for_publish(T0 + timedelta(seconds=14), T0, 10) == []
    (due,) = plan_store.due_for_publish(T0 + timedelta(seconds=16), T0, 10)
    assert due.run_id == run.id
    assert plan_store.claim_for_publish([due], T0 + timedelta(seconds=16), timedelta(seconds=5))
    assert plan_store.due_for_publish(T0 + timedelta(seconds=20), T0, 10) == []
    # The replacement attempt closes the lost one as stalled/worker_lost...
    a2 = plan_store.begin_attempt(run.id, "w2", None, T0 + timedelta(seconds=22), ttl, agent="a")
    assert a2 is not None and a2.fence == a1.fence + 1
    # ...and a late beat from the lost worker changes nothing.
    assert not plan_store.beat(a1, T0 + timedelta(seconds=23), ttl, {"note": "late", "details": {}}).current
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and loaded.last_heartbeat == {"note": "step", "details": {"n": 1}}
    assert [(a.number, a.status, a.reason) for a in plan_store.attempts_of(run.id)] == [
        (1, "stalled", "worker_lost"),
        (2, "running", None),
    ]


@EACH_PLAN
def test_concurrency_cap_parks_and_wakes(plan_store: Store) -> None:
    runs = plan_store.commit_tick([new_run("c1"), new_run("c2"), new_run("c3")], [], [], T0)
    a1 = plan_store.begin_attempt(runs[0].id, "w", None, T0, agent="a", concurrency=2)
    a2 = plan_store.begin_attempt(runs[1].id, "w", None, T0, agent="a", concurrency=2)
    assert a1 is not None and a2 is not None
    # A third run of the same agent must wait: the cap is fleet-wide, in the database.
    with pytest.raises(ConcurrencyBlockedError):
        plan_store.begin_attempt(runs[2].id, "w", None, T0, agent="a", concurrency=2)
    assert plan_store.park_blocked(runs[2].id, T0, timedelta(minutes=5), WaitingFor.CONCURRENCY, "a", cap=2)
    assert plan_store.due_for_publish(T0 + timedelta(seconds=1), T0, 10) == []
    # When one finishes, the parked run is woken at once.
    plan_store.finish(a1, SUCCEEDED, now=T0 + timedelta(seconds=2))
    (due,) = plan_store.due_for_publish(T0 + timedelta(seconds=2), T0, 10)
    assert due.run_id == runs[2].id
    assert plan_store.claim_for_publish([due], T0 + timedelta(seconds=2), timedelta(0))
    assert (
        plan_store.begin_attempt(runs[2].id, "w", None, T0 + timedelta(seconds=2), agent="a", concurrency=2)
        is not None
    )


def test_queued_runs_whose_message_was_lost_are_republished(store: Store) -> None:
    (run,) = store.commit_tick([new_run("q1")], [], [], T0)
    assert claim(store, run.id, T0)
    hour = timedelta(hours=1)
    # Waiting in a long queue is normal: nothing to do within the horizon.
    assert store.due_for_publish(T0 + hour, T0, 10, queued_before=T0 + hour - 2 * hour) == []
    # Past it (a Redis restart lost the message), the sweeper sends it again, once per horizon.
    (due,) = store.due_for_publish(T0 + 3 * hour, T0, 10, queued_before=T0 + hour)
    assert due.run_id == run.id
    assert store.claim_for_publish([due], T0 + 3 * hour, timedelta(0))
    assert store.due_for_publish(T0 + 3 * hour, T0, 10, queued_before=T0 + hour) == []


@EACH_PLAN
def test_one_running_run_per_overlap_key(plan_store: Store) -> None:
    r1, r2, r3 = plan_store.commit_tick(
        [
            new_run("o1", overlap="wait", overlap_key="t"),
            new_run("o2", overlap="wait", overlap_key="t"),
            new_run("o3", overlap="wait", overlap_key="other"),
        ],
        [],
        [],
        T0,
    )
    first = plan_store.begin_attempt(r1.id, "w", None, T0, agent="a")
    assert first is not None
    # The partial unique index refuses a second running run with the same key...
    with pytest.raises(OverlapBlockedError) as blocked:
        plan_store.begin_attempt(r2.id, "w", None, T0, agent="a")
    assert blocked.value.overlap == "wait"
    # ...but not one with another key.
    assert plan_store.begin_attempt(r3.id, "w", None, T0, agent="a") is not None
    assert plan_store.park_blocked(r2.id, T0, timedelta(minutes=5), WaitingFor.OVERLAP, "t")
    plan_store.finish(first, SUCCEEDED, now=T0 + timedelta(seconds=1))
    (due,) = plan_store.due_for_publish(T0 + timedelta(seconds=1), T0, 10)
    assert due.run_id == r2.id  # woken when the holder ended
    assert plan_store.claim_for_publish([due], T0 + timedelta(seconds=1), timedelta(0))
    assert plan_store.begin_attempt(r2.id, "w", None, T0 + timedelta(seconds=1), agent="a") is not None


@EACH_PLAN
def test_a_run_blocked_by_a_holder_that_has_since_ended_is_due_at_once(plan_store: Store) -> None:
    """The holder's finish ran between the blocked start and the park: it woke no one, so
    the park itself must see that nothing holds the key (else the run waits the poll out)."""
    holder, late = plan_store.commit_tick(
        [new_run("h", overlap="wait", overlap_key="k"), new_run("l", overlap="wait", overlap_key="k")],
        [],
        [],
        T0,
    )
    started = plan_store.begin_attempt(holder.id, "w", None, T0, agent="a")
    assert started is not None
    with pytest.raises(OverlapBlockedError):
        plan_store.begin_attempt(late.id, "w", None, T0, agent="a")
    plan_store.finish(started, SUCCEEDED, now=T0 + timedelta(seconds=1))
    assert not plan_store.park_blocked(
        late.id, T0 + timedelta(seconds=1), timedelta(minutes=5), WaitingFor.OVERLAP, "k"
    )
    (due,) = plan_store.due_for_publish(T0 + timedelta(seconds=1), T0, 10)
    assert due.run_id == late.id


@EACH_PLAN
def test_each_finish_wakes_a_run_no_earlier_finish_woke(plan_store: Store) -> None:
    """Two holders ending before the sweeper republished the first one woken: the second
    wakes the next run, not the same one again (a lost wake-up strands the queue's tail)."""
    h1, w1, w2, h2 = plan_store.commit_tick(
        [new_run(n, overlap="wait", overlap_key="k") for n in ("h1", "w1", "w2", "h2")], [], [], T0
    )
    first = plan_store.begin_attempt(h1.id, "w", None, T0, agent="a")
    assert first is not None
    for waiting in (w1, w2):
        with pytest.raises(OverlapBlockedError):
            plan_store.begin_attempt(waiting.id, "w", None, T0, agent="a")
        assert plan_store.park_blocked(waiting.id, T0, timedelta(minutes=5), WaitingFor.OVERLAP, "k")
    t1 = T0 + timedelta(seconds=1)
    plan_store.finish(first, SUCCEEDED, now=t1)
    second = plan_store.begin_attempt(h2.id, "w", None, t1, agent="a")  # a live run got in first
    assert second is not None
    plan_store.finish(second, SUCCEEDED, now=t1 + timedelta(seconds=1))
    due = plan_store.due_for_publish(t1 + timedelta(seconds=1), T0, 10)
    assert {d.run_id for d in due} == {w1.id, w2.id}


def test_a_delivery_deferred_behind_a_vanished_lease_holder_is_republished(store: Store) -> None:
    (run,) = store.commit_tick([new_run("d1")], [], [], T0)
    assert claim(store, run.id, T0)
    # A duplicate delivery found the lease held and noted when it expires...
    store.defer(run.id, T0 + timedelta(seconds=60))
    assert store.due_for_publish(T0 + timedelta(seconds=59), T0, 10) == []
    # ...the holder never started the run: once the lease is gone, it is sent again.
    (due,) = store.due_for_publish(T0 + timedelta(seconds=60), T0, 10)
    assert due.run_id == run.id
    assert store.claim_for_publish([due], T0 + timedelta(seconds=60), timedelta(0))
    assert store.due_for_publish(T0 + timedelta(seconds=61), T0, 10) == []


def test_migrations_match_the_models(store: Store) -> None:
    """`db upgrade` builds exactly the schema the code declares (no drift between the two)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from scheduler.storage.models import Base

    ours = set(Base.metadata.tables)

    def only_ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        # Other tests' sink and watched tables share the database; judge our schema only.
        return type_ != "table" or name in ours

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": only_ours})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_retention_prunes_finished_history_in_batches_and_never_active_runs(store: Store) -> None:
    from datetime import timedelta

    from scheduler.storage.retention import prune

    old = T0 - timedelta(days=40)
    rows = [
        NewRun(
            idempotency_key=f"old-{i}",
            trigger="t",
            agent="a",
            queue="q",
            event={},
            logical_time=old,
            agent_version=None,
        )
        for i in range(5)
    ]
    store.commit_tick(rows, [], [], old)
    finished = [store.begin_attempt(r.id, "w", "t", old, agent="a") for r in rows[:3]]
    for s in finished:
        assert s is not None
        store.finish(s, SUCCEEDED, now=old)
    (recent,) = store.commit_tick(
        [
            NewRun(
                idempotency_key="recent",
                trigger="t",
                agent="a",
                queue="q",
                event={},
                logical_time=T0,
                agent_version=None,
            )
        ],
        [],
        [],
        T0,
    )
    store.add_dead_letter(reason="bad", task_name=None, task_id=None, payload="x", details={}, now=old)
    # Batches of 2: the first pass takes two old finished runs, the second the third
    first = prune(store.engine, T0 - timedelta(days=30), batch=2)
    second = prune(store.engine, T0 - timedelta(days=30), batch=2)
    assert (first.runs, second.runs, first.dead_letters) == (2, 1, 1)
    left = {r.idempotency_key: r.status for r in store.list_runs(limit=50)}
    assert left == {"old-3": "pending", "old-4": "pending", "recent": "pending"}
    assert all(store.attempts_of(s.run_id) == [] for s in finished if s is not None)
    assert recent.id in {r.id for r in store.list_runs(limit=50)}


@EACH_PLAN
def test_a_claim_never_overwrites_what_a_worker_wrote(plan_store: Store) -> None:
    """The publish-then-mark race: a worker that failed the attempt fast and committed
    `waiting` before the publisher's bookkeeping must keep `waiting`."""
    (run,) = plan_store.commit_tick([new_run("race")], [], [], T0)
    seen = Dispatch(run.id, "a", "agents", "t", 0)  # what the publisher saw: pending, fence 0
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    assert plan_store.finish(started, RETRY, now=T0) == "waiting"
    assert plan_store.claim_for_publish([seen], T0, timedelta(0)) == []
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and (loaded.status, loaded.not_before) == (
        "waiting",
        T0 + timedelta(seconds=30),
    )
    # The same holds for a run the sweeper saw `running` with an expired lease and a worker
    # took over meanwhile: the claim does not shorten the new lease.
    due = Dispatch(run.id, "a", "agents", "t", 1, "waiting", started.fence)
    assert claim(plan_store, run.id, T0 + timedelta(seconds=30))
    again = plan_store.begin_attempt(
        run.id, "w2", None, T0 + timedelta(seconds=31), timedelta(seconds=60), agent="a"
    )
    assert again is not None
    stale = Dispatch(run.id, "a", "agents", "t", 1, "running", started.fence)
    assert plan_store.claim_for_publish([due, stale], T0 + timedelta(seconds=200), timedelta(0)) == []


def test_an_unpublished_claim_goes_back_to_pending(store: Store) -> None:
    (run,) = store.commit_tick([new_run("u1")], [], [], T0)
    (claimed,) = store.claim_for_publish([Dispatch(run.id, "a", "agents", "t", 0)], T0, timedelta(0))
    store.unclaim([claimed], T0)
    loaded = store.get_run(run.id)
    assert loaded is not None and loaded.status == "pending"
    (due,) = store.due_for_publish(T0 + timedelta(seconds=10), T0 + timedelta(seconds=5), 10)
    assert due.run_id == run.id


def test_lost_message_candidates_are_old_queued_runs_not_deferred(store: Store) -> None:
    r1, r2, r3 = store.commit_tick([new_run("l1"), new_run("l2"), new_run("l3")], [], [], T0)
    for r in (r1, r2, r3):
        assert claim(store, r.id, T0)
    store.defer(r2.id, T0 + timedelta(seconds=60))  # a lease holder: the sweeper's own path
    assert store.queued_candidates(T0, T0 + timedelta(seconds=20), 10) == []
    found = store.queued_candidates(T0 + timedelta(seconds=1), T0 + timedelta(seconds=20), 10)
    assert {c.dispatch.run_id for c in found} == {r1.id, r3.id}
    assert all(c.dispatch.status == "queued" and c.queued_at == T0 for c in found)


@EACH_PLAN
def test_a_stray_delivery_does_not_start_a_retry_before_not_before(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("early")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    plan_store.finish(started, RETRY, now=T0)
    assert plan_store.begin_attempt(run.id, "w", None, T0 + timedelta(seconds=29), agent="a") is None
    # A duplicate delivery's defer cannot shorten the backoff either.
    plan_store.defer(run.id, T0 + timedelta(seconds=5))
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and loaded.not_before == T0 + timedelta(seconds=30)
    assert plan_store.begin_attempt(run.id, "w", None, T0 + timedelta(seconds=30), agent="a")


@EACH_PLAN
def test_a_cancel_request_outlives_attempts_and_beats_a_retry(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("cancel")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    assert plan_store.request_cancel([run.id], "by_user") == [run.id]
    # The running attempt learns it on its next beat...
    beat = plan_store.beat(started, T0 + timedelta(seconds=1), timedelta(seconds=60), None)
    assert (beat.current, beat.cancel_requested) == (True, "by_user")
    # ...and a retry verdict written after it yields to it.
    assert plan_store.finish(started, RETRY, now=T0 + timedelta(seconds=2)) == "cancelled"
    loaded = plan_store.get_run(run.id)
    assert loaded is not None
    assert (loaded.status, loaded.terminal_reason, loaded.not_before) == ("cancelled", "by_user", None)
    assert loaded.finished_at == T0 + timedelta(seconds=2)


@EACH_PLAN
def test_a_later_delivery_ends_a_cancelled_run_instead_of_starting_it(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("c2")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    plan_store.request_cancel([run.id], "cancel_other")
    # Its worker dies; the next delivery must not start it again (the request targets the
    # run's future), but end it.
    assert plan_store.begin_attempt(run.id, "w2", None, T0 + timedelta(seconds=90), agent="a") is None
    assert plan_store.end_cancelled(run.id, T0 + timedelta(seconds=90)) == "cancel_other"
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and (loaded.status, loaded.terminal_reason) == ("cancelled", "cancel_other")
    assert [(a.status, a.reason) for a in plan_store.attempts_of(run.id)] == [("stalled", "worker_lost")]
    # The old worker waking up writes nothing.
    assert plan_store.finish(started, SUCCEEDED, now=T0 + timedelta(seconds=91)) is None


@EACH_PLAN
def test_a_takeover_says_so(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("t1")], [], [], T0)
    first = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert first is not None and not first.took_over
    second = plan_store.begin_attempt(run.id, "w2", None, T0 + timedelta(seconds=90), agent="a")
    assert second is not None and second.took_over and second.attempt == 2


@EACH_PLAN
def test_a_stalled_attempt_stays_stalled_when_its_worker_wakes(plan_store: Store) -> None:
    from scheduler.storage.watch_store import WatchStore

    (run,) = plan_store.commit_tick([new_run("s1")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    stall = WatchStore(plan_store.engine).stall(
        run.id,
        1,
        started.fence,
        reason=StallReason.WORKER_LOST,
        now=T0 + timedelta(seconds=70),
        run_status=lost(1, 3),
    )
    assert stall is not None and stall.run_status == "pending" and stall.fence == started.fence + 1
    # The presumed-dead worker wakes and tries to commit: fenced out, and the stall remains.
    assert plan_store.finish(started, SUCCEEDED, now=T0 + timedelta(seconds=71)) is None
    assert [(a.status, a.reason) for a in plan_store.attempts_of(run.id)] == [("stalled", "worker_lost")]


@EACH_PLAN
def test_close_ends_only_a_running_attempt_and_leaves_its_run(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("close")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    plan_store.close(started, AttemptStatus.FENCED_OUT, Reason.FENCED_OUT, T0 + timedelta(seconds=1))
    # An attempt already ended stays as it ended.
    plan_store.close(started, AttemptStatus.CANCELLED, None, T0 + timedelta(seconds=2))
    (attempt,) = plan_store.attempts_of(run.id)
    assert (attempt.status, attempt.reason, attempt.finished_at) == (
        "fenced_out",
        "fenced_out",
        T0 + timedelta(seconds=1),
    )
    loaded = plan_store.get_run(run.id)
    assert loaded is not None and (loaded.status, loaded.fence) == ("running", started.fence)


@EACH_PLAN
def test_outbox_rows_commit_with_a_success_and_never_with_a_failure(plan_store: Store) -> None:
    ok_run, bad_run = plan_store.commit_tick([new_run("ok"), new_run("bad")], [], [], T0)
    ok = plan_store.begin_attempt(ok_run.id, "w", None, T0, agent="a")
    bad = plan_store.begin_attempt(bad_run.id, "w", None, T0, agent="a")
    assert ok is not None and bad is not None
    writes = [OutboxWrite("rec", "k", 1), OutboxWrite("rec", "k", 2)]
    assert plan_store.finish(ok, SUCCEEDED, now=T0, outbox=writes) == "succeeded"
    assert (
        plan_store.finish(bad, FAILED, now=T0, error="boom", outbox=[OutboxWrite("rec", "k", 3)]) == "failed"
    )
    rows = OutboxStore(plan_store.engine).rows()
    assert [(r.run_id, r.key, r.seq, r.value) for r in rows] == [
        (ok_run.id, "k", 1, 1),
        (ok_run.id, "k", 2, 2),
    ]
    assert [(a.status, a.reason) for a in plan_store.attempts_of(bad_run.id)] == [("failed", "error")]


@EACH_PLAN
def test_a_stall_on_the_last_attempt_ends_the_run_dead(plan_store: Store) -> None:
    from scheduler.storage.watch_store import WatchStore

    (run,) = plan_store.commit_tick([new_run("last")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
    assert started is not None
    stall = WatchStore(plan_store.engine).stall(
        run.id,
        1,
        started.fence,
        reason=StallReason.NO_PROGRESS,
        now=T0 + timedelta(seconds=70),
        run_status=lost(1, 1),
    )
    assert stall is not None and stall.run_status == "dead"
    loaded = plan_store.get_run(run.id)
    assert loaded is not None
    assert (loaded.status, loaded.terminal_reason, loaded.finished_at) == (
        "dead",
        "attempts_exhausted",
        T0 + timedelta(seconds=70),
    )


@EACH_PLAN
def test_each_plan_takes_its_own_number_of_statements(plan_store: Store, plan: Plan) -> None:
    """The single-statement plan is one round trip per start and per finish; the
    transaction plan's start is the fence and the new attempt (a first attempt has no lost
    one to close), its finish the run and the attempt."""
    (run,) = plan_store.commit_tick([new_run("count")], [], [], T0)
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"WITH", "UPDATE", "INSERT", "SELECT"}:
            seen.append(statement)

    sa.event.listen(plan_store.engine, "before_cursor_execute", record)
    try:
        started = plan_store.begin_attempt(run.id, "w", None, T0, agent="a")
        assert started is not None
        starts = len(seen)
        assert plan_store.finish(started, SUCCEEDED, now=T0) == "succeeded"
    finally:
        sa.event.remove(plan_store.engine, "before_cursor_execute", record)
    per_step = 1 if plan is Plan.SINGLE_STATEMENT else 2
    assert (starts, len(seen) - starts) == (per_step, per_step), seen
