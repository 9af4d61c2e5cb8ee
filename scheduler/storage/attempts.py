"""The worker's writes to its run: start an attempt, beat, finish, close, end a cancelled run.

The start and the finish each have two named plans, and `plan_for(dialect)` picks one per
store from the Dialect alone (the contract tests pin the other with a Dialect whose
`single_statement` is off):

- `Plan.SINGLE_STATEMENT` (PostgreSQL): the start and the finish are each ONE
  data-modifying CTE. A start used to take BEGIN, UPDATE runs, INSERT attempts, COMMIT
  (four round trips) and a finish as many again; in a throughput benchmark they were two
  thirds of a run's cost. One statement is atomic on its own and its sub-statements share
  one snapshot (the stale attempt being closed cannot see the attempt being opened), so it
  runs in autocommit. When a call has companion statements (a concurrency cap's lock and
  count before the start; outbox rows or a wake-up after the finish), the same CTE runs
  inside one transaction with them.
- `Plan.TRANSACTION` (SQLite, whose `BEGIN IMMEDIATE` already serialises writers): the same
  writes as separate statements in one transaction.

Both plans run the same statements below (a CTE is built from the transaction plan's
statement, never written twice), so the two cannot drift apart.

A start:
1. with a concurrency cap, lock the agent and count its running runs (at the cap: refuse);
2. take a new fence from the database (`fence = fence + 1 ... RETURNING`) on a run of this
   agent that may start (none: nothing starts);
3. close an attempt still `running` as `stalled/worker_lost`: its worker vanished;
4. open the new attempt, `running`.

A finish:
1. the fenced UPDATE of the run (`WHERE fence = :ours AND status = 'running'`): a stale
   fence matches no row and writes nothing; a retry verdict yields to a cancel request;
2. close the attempt with its status;
3. on success, the run's outbox rows (scheduler.storage.outbox_store);
4. wake the next run parked on the overlap key or on the agent's concurrency cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from agents import OutboxWrite
from scheduler.core.errors import StorageError
from scheduler.core.values import Beat, StartedAttempt
from scheduler.core.verdict import AttemptOutcome
from scheduler.core.vocabulary import (
    ACTIVE_STATUSES,
    AttemptStatus,
    Reason,
    RunStatus,
    StallReason,
    WaitingFor,
)
from scheduler.storage._sql import StoreGroup, attempts_t, runs_t
from scheduler.storage.dialect import Dialect
from scheduler.storage.outbox_store import insert_writes
from scheduler.storage.runs import wake_next

log = logging.getLogger("nightowl.storage")

# How long the final fenced write keeps retrying through connection errors.
FINISH_RETRY_FOR = timedelta(seconds=20)


class Plan(StrEnum):
    """How a start and a finish reach the database."""

    SINGLE_STATEMENT = "single_statement"  # one data-modifying CTE each, in autocommit
    TRANSACTION = "transaction"  # the same writes as separate statements in one transaction


def plan_for(dialect: Dialect) -> Plan:
    """The one place a plan is chosen: from what the database can do, and nothing else."""
    return Plan.SINGLE_STATEMENT if dialect.single_statement else Plan.TRANSACTION


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: the connection or the server went away (a restart,
    a failover, a terminated session, too many clients, SQLite's lock timeout)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _log_finish_retry(exc: BaseException | None) -> None:
    log.warning(
        "final write failed (%s); retrying (the fence keeps it safe)", type(exc).__name__ if exc else "error"
    )


class ConcurrencyBlockedError(StorageError):
    """The agent already runs `concurrency` runs across the fleet; this one must wait."""

    def __init__(self, run_id: str, cap: int) -> None:
        self.run_id = run_id
        self.cap = cap
        super().__init__(f"run {run_id} waits: its agent is at its concurrency cap of {cap}")


class OverlapBlockedError(StorageError):
    """Another run with the same overlap key is running; this one may not start now."""

    def __init__(self, run_id: str, overlap: str | None, key: str | None = None) -> None:
        self.run_id = run_id
        self.overlap = overlap
        self.key = key  # the overlap key, which the run parks on
        super().__init__(f"run {run_id} is blocked by a running run with the same overlap key")


# -- the statements, built once: a worker runs them for every delivery ----------------------
# Bind names carry a p_ prefix: a name equal to a column of an UPDATE would be taken as a SET
# value for that column. Every datetime bind is typed, so SQLite gets naive UTC (UTCDateTime).
_b = sa.bindparam
_WHEN = runs_t.c.not_before.type


def _now() -> sa.BindParameter[datetime]:
    return _b("p_now", type_=_WHEN)


def startable(now: Any) -> list[sa.ColumnElement[bool]]:
    """Which active runs a delivery may start: none with a cancel request (the request ends
    it instead), and no `waiting` one before its `not_before` (a stray message must not cut
    a retry's backoff short)."""
    return [
        runs_t.c.status.in_(ACTIVE_STATUSES),
        runs_t.c.cancel_requested.is_(None),
        sa.or_(
            runs_t.c.status != RunStatus.WAITING, runs_t.c.not_before.is_(None), runs_t.c.not_before <= now
        ),
    ]


def _finish_outcome() -> dict[str, Any]:
    """The run columns a finish sets, as CASE expressions over the binds `p_status`,
    `p_reason`, `p_not_before`, `p_waiting_for`, `p_finished_at` and `p_now`: a retry
    verdict (`waiting`) yields to a cancel request that reached the run first, so a cancel
    is never lost to a retry."""
    cancelled = sa.and_(
        runs_t.c.cancel_requested.is_not(None), _b("p_status", type_=sa.String) == RunStatus.WAITING
    )
    return {
        "status": sa.case(
            (cancelled, sa.literal(RunStatus.CANCELLED.value)), else_=_b("p_status", type_=sa.String)
        ),
        "terminal_reason": sa.case(
            (cancelled, runs_t.c.cancel_requested), else_=_b("p_reason", type_=sa.String)
        ),
        "not_before": sa.case((cancelled, sa.null()), else_=_b("p_not_before", type_=_WHEN)),
        "waiting_for": sa.case((cancelled, sa.null()), else_=_b("p_waiting_for", type_=sa.String)),
        "finished_at": sa.case((cancelled, _now()), else_=_b("p_finished_at", type_=_WHEN)),
    }


# Start, step 2: a new fence on a run of this agent that may start.
_TAKE_FENCE = (
    sa.update(runs_t)
    .where(runs_t.c.id == _b("p_run_id"), runs_t.c.agent == _b("p_agent"), *startable(_now()))
    .values(
        status=RunStatus.RUNNING,
        fence=runs_t.c.fence + 1,
        attempt=runs_t.c.attempt + 1,
        deliveries=runs_t.c.deliveries + 1,
        not_before=None,
        waiting_for=None,
        lease_expires_at=_b("p_lease_expires_at", type_=_WHEN),
        started_at=sa.func.coalesce(runs_t.c.started_at, _now()),
    )
    .returning(
        runs_t.c.fence,
        runs_t.c.attempt,
        runs_t.c.deliveries,
        runs_t.c.overlap_key,
        runs_t.c.idempotency_key,
        runs_t.c.trigger,
        runs_t.c.event,
        runs_t.c.logical_time,
        runs_t.c.last_heartbeat,
        runs_t.c.usage,
        runs_t.c.deferrals,
        runs_t.c.agent_version,
        runs_t.c.replay_of,
    )
)
# Start, step 3 (and a cancelled run's end): an attempt still `running` lost its worker.
_CLOSE_LOST = (
    sa.update(attempts_t)
    .where(attempts_t.c.run_id == _b("p_run_id"), attempts_t.c.status == AttemptStatus.RUNNING)
    .values(status=AttemptStatus.STALLED, reason=StallReason.WORKER_LOST, finished_at=_now())
)
# Start, step 4: the new attempt.
_OPEN_COLUMNS = (
    "run_id",
    "number",
    "fence",
    "status",
    "worker",
    "celery_task_id",
    "started_at",
    "heartbeat_at",
    "agent_version",
)
_OPEN_ATTEMPT = sa.insert(attempts_t).values(
    run_id=_b("p_run_id"),
    number=_b("p_number"),
    fence=_b("p_fence"),
    status=AttemptStatus.RUNNING,
    worker=_b("p_worker"),
    celery_task_id=_b("p_task_id"),
    started_at=_now(),
    heartbeat_at=_now(),
    agent_version=_b("p_agent_version"),
)

# Finish, step 1: the fenced write of the run.
_FINISH_RUN = (
    sa.update(runs_t)
    .where(
        runs_t.c.id == _b("p_run_id"), runs_t.c.fence == _b("p_fence"), runs_t.c.status == RunStatus.RUNNING
    )
    .values(
        result=_b("p_result"),
        error=_b("p_error"),
        usage=_b("p_usage"),
        last_heartbeat=_b("p_heartbeat"),
        lease_expires_at=None,
        # A deferral is no delivery of the run's work: it gives its delivery back (so `runs
        # retry`, which resets deliveries, resets what the poison guard counts).
        deferrals=runs_t.c.deferrals + _b("p_deferred", type_=sa.Integer),
        deliveries=runs_t.c.deliveries - _b("p_deferred", type_=sa.Integer),
        **_finish_outcome(),
    )
)
# Finish, step 2: the attempt's own ending.
_FINISH_ATTEMPT = (
    sa.update(attempts_t)
    .where(attempts_t.c.run_id == _b("p_run_id"), attempts_t.c.number == _b("p_number"))
    .values(
        status=_b("p_attempt_status"),
        reason=_b("p_reason"),
        error_class=_b("p_error_class"),
        error_message=_b("p_error"),
        traceback=_b("p_traceback"),
        progress_at=sa.func.coalesce(_b("p_progress_at", type_=_WHEN), attempts_t.c.progress_at),
        usage=_b("p_attempt_usage"),
        finished_at=_now(),
    )
)
_FINISH_RUN_STEP = _FINISH_RUN.returning(runs_t.c.status)

_RUNNING_OF_AGENT = (
    sa.select(sa.func.count())
    .select_from(runs_t)
    .where(
        runs_t.c.agent == _b("p_agent"), runs_t.c.status == RunStatus.RUNNING, runs_t.c.id != _b("p_run_id")
    )
)
_CLOSE_ATTEMPT = (
    sa.update(attempts_t)
    .where(
        attempts_t.c.run_id == _b("p_run_id"),
        attempts_t.c.number == _b("p_number"),
        # A `stalled` attempt stays stalled when its worker wakes up and tries to commit:
        # the stall happened and is alerted (rewriting it hid it).
        attempts_t.c.status == AttemptStatus.RUNNING,
    )
    .values(status=_b("p_attempt_status"), reason=_b("p_reason"), finished_at=_now())
)


def _start_in_one_statement() -> sa.Select[Any]:
    """Start, steps 2-4 as one CTE: the fence, the lost attempt closed, the new one opened."""
    started = _TAKE_FENCE.cte("started")
    stale = _CLOSE_LOST.where(sa.exists(sa.select(started.c.fence))).returning(attempts_t.c.id).cte("stale")
    opened = (
        sa.insert(attempts_t)
        .from_select(
            list(_OPEN_COLUMNS),
            sa.select(
                _b("p_run_id", type_=sa.Text),
                started.c.attempt,
                started.c.fence,
                sa.literal(AttemptStatus.RUNNING.value),
                _b("p_worker", type_=sa.Text),
                _b("p_task_id", type_=sa.Text),
                _now(),
                _now(),
                _b("p_agent_version", type_=sa.String),
            ),
        )
        .cte("opened")
    )
    took_over = sa.select(sa.func.count()).select_from(stale).scalar_subquery()
    return sa.select(started, (took_over > 0).label("took_over")).add_cte(opened)


def _finish_in_one_statement() -> sa.Select[Any]:
    """Finish, steps 1-2 as one CTE: the attempt is closed only when the fenced write matched."""
    finished = _FINISH_RUN.returning(runs_t.c.id, runs_t.c.status).cte("finished")
    closed = _FINISH_ATTEMPT.where(sa.exists(sa.select(finished.c.id))).cte("closed")
    return sa.select(finished.c.status).add_cte(closed)


_START_IN_ONE_STATEMENT = _start_in_one_statement()
_FINISH_IN_ONE_STATEMENT = _finish_in_one_statement()

# What a start's steps 2-4 hand back: the run row and whether a lost attempt was closed.
Opened = tuple[Row[Any], bool]


def _start_single(conn: Connection, binds: dict[str, Any]) -> Opened | None:
    row = conn.execute(_START_IN_ONE_STATEMENT, binds).first()
    return None if row is None else (row, bool(row.took_over))


def _start_steps(conn: Connection, binds: dict[str, Any]) -> Opened | None:
    row = conn.execute(_TAKE_FENCE, binds).first()
    if row is None:
        return None
    # A first attempt has no earlier one to close: skip the round trip.
    took_over = row.attempt > 1 and conn.execute(_CLOSE_LOST, binds).rowcount > 0
    conn.execute(_OPEN_ATTEMPT, {**binds, "p_number": row.attempt, "p_fence": row.fence})
    return row, took_over


def _finish_single(conn: Connection, binds: dict[str, Any]) -> str | None:
    written = conn.execute(_FINISH_IN_ONE_STATEMENT, binds).scalar()
    return None if written is None else str(written)


def _finish_steps(conn: Connection, binds: dict[str, Any]) -> str | None:
    written = conn.execute(_FINISH_RUN_STEP, binds).scalar()
    if written is None:
        return None
    conn.execute(_FINISH_ATTEMPT, binds)
    return str(written)


_STARTS: dict[Plan, Callable[[Connection, dict[str, Any]], Opened | None]] = {
    Plan.SINGLE_STATEMENT: _start_single,
    Plan.TRANSACTION: _start_steps,
}
_FINISHES: dict[Plan, Callable[[Connection, dict[str, Any]], str | None]] = {
    Plan.SINGLE_STATEMENT: _finish_single,
    Plan.TRANSACTION: _finish_steps,
}


@dataclass(frozen=True, slots=True)
class Ending:
    """Everything a finish writes besides the verdict: what the agent produced, and when."""

    now: datetime
    result: Any = None
    error: str | None = None
    error_class: str | None = None
    usage: dict[str, Any] | None = None
    last_heartbeat: dict[str, Any] | None = None
    outbox: Sequence[OutboxWrite] = ()
    attempt_usage: dict[str, Any] | None = None
    traceback: str | None = None
    progress_at: datetime | None = None


def _finish_binds(started: StartedAttempt, outcome: AttemptOutcome, ending: Ending) -> dict[str, Any]:
    """The binds of a finish, the same for both plans."""
    terminal = outcome.terminal
    now = ending.now
    return {
        "p_run_id": started.run_id,
        "p_fence": started.fence,
        "p_number": started.attempt,
        "p_status": outcome.status,
        "p_reason": outcome.reason,
        "p_attempt_status": outcome.attempt_status,
        "p_not_before": outcome.not_before(now),
        "p_waiting_for": None if terminal else (outcome.waiting_for or WaitingFor.RETRY),
        "p_deferred": 1 if outcome.deferral else 0,
        "p_finished_at": now if terminal else None,
        "p_now": now,
        "p_result": ending.result,
        "p_error": ending.error,
        "p_error_class": ending.error_class,
        "p_traceback": ending.traceback,
        "p_progress_at": ending.progress_at,
        "p_usage": ending.usage,
        "p_attempt_usage": ending.attempt_usage,
        "p_heartbeat": ending.last_heartbeat,
    }


class AttemptStore(StoreGroup):
    """The worker's side of a run: start, beat, finish (fenced), close, end cancelled."""

    def __init__(self, engine: Engine, *, dialect: Dialect | None = None) -> None:
        super().__init__(engine, dialect=dialect)
        self.plan = plan_for(self.dialect)
        self._autocommit = self.dialect.autocommit(engine)

    @contextmanager
    def _connect(self, *, alone: bool) -> Iterator[Connection]:
        """Where a plan's step runs: autocommit for the single statement on its own, else
        one transaction (the transaction plan, or a statement with companions)."""
        if alone and self._autocommit is not None:
            with self._autocommit.connect() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    # -- start ------------------------------------------------------------

    def begin_attempt(
        self,
        run_id: str,
        worker: str,
        task_id: str | None,
        now: datetime,
        lease_ttl: timedelta = timedelta(seconds=60),
        *,
        agent: str,
        concurrency: int | None = None,
        agent_version: str | None = None,
    ) -> StartedAttempt | None:
        """Take a new fence from the database and open an attempt; None if the run may not
        start (terminal, cancel requested, waiting for its `not_before`, another agent's).

        `fence = fence + 1 ... RETURNING` makes the database, not Redis, the source of
        fencing tokens, so a Redis restart cannot repeat one. A message routed to the wrong
        agent's task starts nothing.
        """
        binds = {
            "p_run_id": run_id,
            "p_agent": agent,
            "p_now": now,
            "p_lease_expires_at": now + lease_ttl,
            "p_worker": worker,
            "p_task_id": task_id,
            "p_agent_version": agent_version,
        }
        try:
            with self._connect(alone=concurrency is None) as conn:
                if concurrency is not None:
                    self._check_concurrency(conn, run_id, agent, concurrency)
                opened = _STARTS[self.plan](conn, binds)
        except IntegrityError:
            # uq_runs_running_overlap: a run with the same overlap key is running.
            raise OverlapBlockedError(run_id, *self._overlap_of(run_id)) from None
        if opened is None:
            return None
        row, took_over = opened
        return StartedAttempt(
            run_id,
            row.fence,
            row.attempt,
            row.deliveries,
            row.overlap_key,
            agent if concurrency is not None else None,
            row.idempotency_key,
            row.trigger,
            row.event,
            row.logical_time,
            row.last_heartbeat,
            took_over,
            row.usage,
            row.deferrals or 0,
            row.agent_version,
            row.replay_of,
        )

    def _check_concurrency(self, conn: Connection, run_id: str, agent: str, cap: int) -> None:
        """Start, step 1: raise ConcurrencyBlockedError when `agent` already runs `cap` runs.

        On PostgreSQL a transaction-scoped advisory lock per agent makes the
        count-then-start atomic across workers; SQLite's BEGIN IMMEDIATE already is.
        """
        lock = self.dialect.agent_lock(agent)
        if lock is not None:
            conn.execute(lock)
        running = conn.execute(_RUNNING_OF_AGENT, {"p_agent": agent, "p_run_id": run_id}).scalar_one()
        if running >= cap:
            raise ConcurrencyBlockedError(run_id, cap)

    def _overlap_of(self, run_id: str) -> tuple[str | None, str | None]:
        """(overlap policy, overlap key) of a run a holder blocked."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_t.c.overlap, runs_t.c.overlap_key).where(runs_t.c.id == run_id)
            ).first()
        return (None, None) if row is None else (row.overlap, row.overlap_key)

    # -- while it runs ----------------------------------------------------

    def beat(
        self,
        started: StartedAttempt,
        now: datetime,
        lease_ttl: timedelta,
        last_heartbeat: dict[str, Any] | None,
        *,
        progress_at: datetime | None = None,
        usage: dict[str, Any] | None = None,
        attempt_usage: dict[str, Any] | None = None,
    ) -> Beat:
        """Record liveness (and the latest progress); say whether the attempt is still current
        and whether someone asked the run to stop.

        Conditional on our fence and `running`, so a late beat from a finished
        or fenced-out attempt changes nothing, and learns it was fenced out.
        """
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"lease_expires_at": now + lease_ttl}
            if last_heartbeat is not None:
                values["last_heartbeat"] = last_heartbeat
            if usage is not None:  # spend is persisted as reported: a killed attempt's counts
                values["usage"] = usage
            row = conn.execute(
                sa.update(runs_t)
                .where(
                    runs_t.c.id == started.run_id,
                    runs_t.c.fence == started.fence,
                    runs_t.c.status == RunStatus.RUNNING,
                )
                .values(**values)
                .returning(runs_t.c.cancel_requested)
            ).first()
            if row is None:
                return Beat(False)
            conn.execute(
                sa.update(attempts_t)
                .where(
                    attempts_t.c.run_id == started.run_id,
                    attempts_t.c.number == started.attempt,
                    attempts_t.c.status == AttemptStatus.RUNNING,
                )
                .values(
                    heartbeat_at=now,
                    progress_at=progress_at,
                    **({} if attempt_usage is None else {"usage": attempt_usage}),
                )
            )
            return Beat(True, row.cancel_requested)

    # -- finish -----------------------------------------------------------

    def finish(
        self,
        started: StartedAttempt,
        outcome: AttemptOutcome,
        *,
        now: datetime,
        result: Any = None,
        error: str | None = None,
        error_class: str | None = None,
        usage: dict[str, Any] | None = None,
        last_heartbeat: dict[str, Any] | None = None,
        outbox: Sequence[OutboxWrite] = (),
        attempt_usage: dict[str, Any] | None = None,
        traceback: str | None = None,
        progress_at: datetime | None = None,
    ) -> RunStatus | None:
        """The fenced final write of `outcome`: the run status written, or None (and nothing
        written) when our fence is stale.

        On success the run's outbox writes commit in this same transaction; on any
        other outcome, or with a stale fence, none of them do. A retry verdict yields to
        a cancel request already on the run (the status written is then `cancelled`).

        A connection error (a restart, a failover, a killed session) is retried for up to
        FINISH_RETRY_FOR: throwing finished work away would redo the run after its lease.
        The fence keeps a retry safe; a try whose commit landed before its connection broke
        is recognised by the run carrying our fence and an ended status.
        """
        ending = Ending(
            now,
            result,
            error,
            error_class,
            usage,
            last_heartbeat,
            outbox,
            attempt_usage,
            traceback,
            progress_at,
        )
        try:
            written = self._finish_once(started, outcome, ending)  # the common case
        except Exception as exc:
            if not is_transient(exc):
                raise
            _log_finish_retry(exc)
            for try_ in Retrying(
                stop=stop_after_delay(FINISH_RETRY_FOR.total_seconds()),
                wait=wait_exponential(multiplier=0.2, max=4),
                retry=retry_if_exception(is_transient),
                reraise=True,
                before_sleep=lambda state: _log_finish_retry(
                    state.outcome.exception() if state.outcome else None
                ),
            ):
                with try_:
                    written = self._finish_once(started, outcome, ending)
            if written is None:  # an earlier try may have committed before its connection broke
                written = self._landed(started, outcome.attempt_status)
        if written is None:
            # Someone holds a newer fence: our result must not land anywhere.
            self.close(started, AttemptStatus.FENCED_OUT, Reason.FENCED_OUT, now)
        return written

    def _finish_once(
        self, started: StartedAttempt, outcome: AttemptOutcome, ending: Ending
    ) -> RunStatus | None:
        """One try of the finish's four steps, on this store's plan."""
        writes = outcome.status == RunStatus.SUCCEEDED and bool(ending.outbox)
        wakes = started.overlap_key is not None or started.capped_agent is not None
        with self._connect(alone=not (writes or wakes)) as conn:
            written = _FINISHES[self.plan](conn, _finish_binds(started, outcome, ending))
            if written is None:
                return None
            if written == RunStatus.SUCCEEDED and ending.outbox:
                insert_writes(conn, started.run_id, ending.outbox, ending.now)
            if started.overlap_key is not None:
                wake_next(
                    conn,
                    ending.now,
                    after=started.run_id,
                    waiting_for=WaitingFor.OVERLAP,
                    column=runs_t.c.overlap_key,
                    value=started.overlap_key,
                )
            if started.capped_agent is not None:
                wake_next(
                    conn,
                    ending.now,
                    after=started.run_id,
                    waiting_for=WaitingFor.CONCURRENCY,
                    column=runs_t.c.agent,
                    value=started.capped_agent,
                )
            return RunStatus(written)

    def _landed(self, started: StartedAttempt, attempt_status: AttemptStatus) -> RunStatus | None:
        """After a retried finish: the status an earlier try committed, if it did."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_t.c.status, runs_t.c.fence, attempts_t.c.status.label("attempt"))
                .join(
                    attempts_t,
                    sa.and_(attempts_t.c.run_id == runs_t.c.id, attempts_t.c.number == started.attempt),
                )
                .where(runs_t.c.id == started.run_id)
            ).first()
        if (
            row is not None
            and row.fence == started.fence
            and row.status != RunStatus.RUNNING
            and row.attempt == attempt_status
        ):
            return RunStatus(row.status)
        return None

    def close(
        self, started: StartedAttempt, status: AttemptStatus, reason: str | None, now: datetime
    ) -> None:
        """End a still-`running` attempt without touching its run (a fenced-out worker)."""
        with self.engine.begin() as conn:
            conn.execute(
                _CLOSE_ATTEMPT,
                {
                    "p_run_id": started.run_id,
                    "p_number": started.attempt,
                    "p_attempt_status": status,
                    "p_reason": reason,
                    "p_now": now,
                },
            )

    # -- a cancelled run --------------------------------------------------

    def end_cancelled(self, run_id: str, now: datetime) -> str | None:
        """A delivery found a cancel request on the run: end it `cancelled/<reason>` without
        starting it (and close an attempt its vanished worker left running). The reason, or
        None if the run was not in that state."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.update(runs_t)
                .where(
                    runs_t.c.id == run_id,
                    runs_t.c.status.in_(ACTIVE_STATUSES),
                    runs_t.c.cancel_requested.is_not(None),
                )
                .values(
                    status=RunStatus.CANCELLED,
                    terminal_reason=runs_t.c.cancel_requested,
                    fence=runs_t.c.fence + 1,
                    finished_at=now,
                    lease_expires_at=None,
                    not_before=None,
                    waiting_for=None,
                )
                .returning(runs_t.c.terminal_reason)
            ).first()
            if row is None:
                return None
            conn.execute(_CLOSE_LOST, {"p_run_id": run_id, "p_now": now})
            return str(row.terminal_reason)
