"""Data access for runs, attempts and trigger state.

Every state change is a guarded UPDATE (compare-and-set on status, fence or
revision), never a blind write, so a paused ex-leader or a stale worker
changes nothing when it wakes up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from agents.outbox import OutboxWrite
from scheduler.core.errors import StorageError
from scheduler.core.values import (  # re-exported: callers may still import them from here
    Beat,
    Dispatch,
    MissedRow,
    NewRun,
    QueuedRun,
    StartedAttempt,
    StateWrite,
    new_run_id,
)
from scheduler.core.vocabulary import WaitingFor
from scheduler.storage import worker_sql
from scheduler.storage.dialect import Dialect
from scheduler.storage.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Attempt,
    DeadLetter,
    MissedSlot,
    Run,
    TriggerState,
)
from scheduler.storage.outbox_store import insert_writes
from scheduler.storage.runs import RunStore, wake_next
from scheduler.storage.trigger_state import TriggerStateStore

log = logging.getLogger("nightowl.storage")

# How long the final fenced write keeps retrying through connection errors.
FINISH_RETRY_FOR = timedelta(seconds=20)

runs_t = cast(sa.Table, Run.__table__)
attempts_t = cast(sa.Table, Attempt.__table__)
state_t = cast(sa.Table, TriggerState.__table__)
missed_t = cast(sa.Table, MissedSlot.__table__)
dead_t = cast(sa.Table, DeadLetter.__table__)


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: the connection or the server went away (a restart,
    a failover, a terminated session, too many clients, SQLite's lock timeout)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


def _log_finish_retry(exc: BaseException | None) -> None:
    log.warning("final write failed (%s); retrying (the fence keeps it safe)",
                type(exc).__name__ if exc else "error")


class ConcurrencyBlockedError(StorageError):
    """The agent already runs `concurrency` runs across the fleet; this one must wait."""

    def __init__(self, run_id: str, cap: int) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} waits: its agent is at its concurrency cap of {cap}")


class OverlapBlockedError(StorageError):
    """Another run with the same overlap key is running; this one may not start now."""

    def __init__(self, run_id: str, overlap: str | None) -> None:
        self.run_id = run_id
        self.overlap = overlap
        super().__init__(f"run {run_id} is blocked by a running run with the same overlap key")


# A chunk of rows travels as ONE JSON document, expanded by jsonb_to_recordset: json.dumps
# is C, while psycopg dumps array parameters element by element in Python (17 arrays of 500
# per chunk were a third of a 10,000-trigger tick).




# Hot-path statements, built once: a worker runs them for every delivery.
_FINISH_RUN = (
    sa.update(runs_t)
    .where(runs_t.c.id == sa.bindparam("b_id"), runs_t.c.fence == sa.bindparam("b_fence"),
           runs_t.c.status == "running")
    .values(result=sa.bindparam("b_result"), error=sa.bindparam("b_error"),
            usage=sa.bindparam("b_usage"), last_heartbeat=sa.bindparam("b_heartbeat"),
            lease_expires_at=None,
            **worker_sql.finish_outcome("b_"))
    .returning(runs_t.c.status)
)
_FINISH_ATTEMPT = (
    sa.update(attempts_t)
    .where(attempts_t.c.run_id == sa.bindparam("b_run_id"),
           attempts_t.c.number == sa.bindparam("b_number"))
    .values(status=sa.bindparam("b_status"), reason=sa.bindparam("b_reason"),
            error_class=sa.bindparam("b_error_class"), error_message=sa.bindparam("b_error"),
            finished_at=sa.bindparam("b_now"))
)
_INSERT_ATTEMPT = sa.insert(attempts_t)


def _insert(conn: Connection, table: sa.Table) -> Any:
    return Dialect.of(conn).insert(table)


class Store(RunStore, TriggerStateStore):
    """Runs, attempts and trigger state on one SQLAlchemy engine.

    The scheduling side's statements live in their groups (runs.py, trigger_state.py),
    which a caller needing only one of them may use alone (`scheduler.core.publish.dispatch`
    takes a RunStore)."""

    def __init__(self, engine: Engine, *, dialect: Dialect | None = None) -> None:
        super().__init__(engine, dialect=dialect)
        # The worker's hot statements are single, atomic statements on PostgreSQL: run them
        # without BEGIN/COMMIT (worker_sql.py).
        self._single = self.dialect.autocommit(engine)

    # -- scheduler side ---------------------------------------------------













    # -- worker side ------------------------------------------------------

    def get_run(self, run_id: str) -> Run | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Run, run_id)

    def begin_attempt(
        self, run_id: str, worker: str, task_id: str | None, now: datetime,
        lease_ttl: timedelta = timedelta(seconds=60), *, agent: str | None = None,
        concurrency: int | None = None,
    ) -> StartedAttempt | None:
        """Take a new fence from the database and open an attempt; None if the run is terminal.

        `fence = fence + 1 ... RETURNING` makes the database, not Redis, the
        source of fencing tokens, so a Redis restart cannot repeat one. An
        attempt still marked `running` belonged to a worker that vanished: it
        is closed as `stalled/worker_lost`.
        """
        try:
            return self._begin_attempt(run_id, worker, task_id, now, lease_ttl, agent=agent,
                                       concurrency=concurrency)
        except IntegrityError:
            # uq_runs_running_overlap: a run with the same overlap key is running.
            run = self.get_run(run_id)
            raise OverlapBlockedError(run_id, run.overlap if run else None) from None

    def _begin_attempt(self, run_id: str, worker: str, task_id: str | None, now: datetime,
                       lease_ttl: timedelta, *, agent: str | None,
                       concurrency: int | None) -> StartedAttempt | None:
        if self._single is not None and agent is not None and concurrency is None:
            with self._single.connect() as conn:
                row = conn.execute(worker_sql.BEGIN_ATTEMPT, {
                    "p_run_id": run_id, "p_agent": agent, "p_lease_expires_at": now + lease_ttl,
                    "p_now": now, "p_worker": worker, "p_task_id": task_id}).first()
            if row is None:
                return None
            return StartedAttempt(run_id, row.fence, row.attempt, row.deliveries, row.overlap_key,
                                  None, row.idempotency_key, row.trigger, row.event,
                                  row.logical_time, row.last_heartbeat, bool(row.took_over))
        with self.engine.begin() as conn:
            if concurrency is not None and agent is not None:
                self._check_concurrency(conn, run_id, agent, concurrency)
            stmt = (
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, *worker_sql.startable(now))
                .values(status="running", fence=runs_t.c.fence + 1, attempt=runs_t.c.attempt + 1,
                        deliveries=runs_t.c.deliveries + 1, not_before=None, waiting_for=None,
                        lease_expires_at=now + lease_ttl,
                        started_at=sa.func.coalesce(runs_t.c.started_at, now))
                .returning(runs_t.c.fence, runs_t.c.attempt, runs_t.c.deliveries,
                           runs_t.c.overlap_key, runs_t.c.idempotency_key, runs_t.c.trigger,
                           runs_t.c.event, runs_t.c.logical_time, runs_t.c.last_heartbeat)
            )
            if agent is not None:  # a message routed to the wrong agent's task starts nothing
                stmt = stmt.where(runs_t.c.agent == agent)
            row = conn.execute(stmt).first()  # (compiled once: SQLAlchemy caches by shape)
            if row is None:
                return None
            took_over = row.attempt > 1 and conn.execute(
                sa.update(attempts_t)
                .where(attempts_t.c.run_id == run_id, attempts_t.c.status == "running")
                .values(status="stalled", reason="worker_lost", finished_at=now)
            ).rowcount > 0
            conn.execute(_INSERT_ATTEMPT, {
                "run_id": run_id, "number": row.attempt, "fence": row.fence, "status": "running",
                "worker": worker, "celery_task_id": task_id, "started_at": now,
                "heartbeat_at": now,
            })
            return StartedAttempt(
                run_id, row.fence, row.attempt, row.deliveries, row.overlap_key,
                agent if concurrency is not None else None, row.idempotency_key, row.trigger,
                row.event, row.logical_time, row.last_heartbeat, took_over)

    def beat(self, started: StartedAttempt, now: datetime, lease_ttl: timedelta,
             last_heartbeat: dict[str, Any] | None, *, progress_at: datetime | None = None) -> Beat:
        """Record liveness (and the latest progress); say whether the attempt is still current
        and whether someone asked the run to stop.

        Conditional on our fence and `running`, so a late beat from a finished
        or fenced-out attempt changes nothing, and learns it was fenced out.
        """
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"lease_expires_at": now + lease_ttl}
            if last_heartbeat is not None:
                values["last_heartbeat"] = last_heartbeat
            row = conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == started.run_id, runs_t.c.fence == started.fence,
                       runs_t.c.status == "running")
                .values(**values)
                .returning(runs_t.c.cancel_requested)
            ).first()
            if row is None:
                return Beat(False)
            conn.execute(
                sa.update(attempts_t)
                .where(attempts_t.c.run_id == started.run_id,
                       attempts_t.c.number == started.attempt,
                       attempts_t.c.status == "running")
                .values(heartbeat_at=now, progress_at=progress_at)
            )
            return Beat(True, row.cancel_requested)

    def finish(
        self,
        started: StartedAttempt,
        *,
        status: str,
        reason: str | None,
        attempt_status: str,
        now: datetime,
        result: Any = None,
        error: str | None = None,
        error_class: str | None = None,
        usage: dict[str, Any] | None = None,
        last_heartbeat: dict[str, Any] | None = None,
        not_before: datetime | None = None,
        outbox: Sequence[OutboxWrite] = (),
    ) -> str | None:
        """The fenced final write: the run status written, or None (and nothing written)
        when our fence is stale.

        On success the run's outbox writes commit in this same transaction; on any
        other outcome, or with a stale fence, none of them do. A retry verdict yields to
        a cancel request already on the run (the status written is then `cancelled`).

        A connection error (a restart, a failover, a killed session) is retried for up to
        FINISH_RETRY_FOR: throwing finished work away would redo the run after its lease.
        The fence keeps a retry safe; a try whose commit landed before its connection broke
        is recognised by the run carrying our fence and an ended status.
        """
        args = dict(status=status, reason=reason, attempt_status=attempt_status, now=now,
                    result=result, error=error, error_class=error_class, usage=usage,
                    last_heartbeat=last_heartbeat, not_before=not_before, outbox=outbox)
        try:
            written = self._finish_once(started, **args)  # the common case: no retry machinery
        except Exception as exc:
            if not is_transient(exc):
                raise
            _log_finish_retry(exc)
            for try_ in Retrying(stop=stop_after_delay(FINISH_RETRY_FOR.total_seconds()),
                                 wait=wait_exponential(multiplier=0.2, max=4),
                                 retry=retry_if_exception(is_transient), reraise=True,
                                 before_sleep=lambda state: _log_finish_retry(
                                     state.outcome.exception() if state.outcome else None)):
                with try_:
                    written = self._finish_once(started, **args)
            if written is None:  # an earlier try may have committed before its connection broke
                written = self._landed(started, attempt_status)
        if written is None:
            # Someone holds a newer fence: our result must not land anywhere.
            self._close_attempt(started, "fenced_out", "fenced_out", now)
        return written

    def _landed(self, started: StartedAttempt, attempt_status: str) -> str | None:
        """After a retried finish: the status an earlier try committed, if it did."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_t.c.status, runs_t.c.fence, attempts_t.c.status.label("attempt"))
                .join(attempts_t, sa.and_(attempts_t.c.run_id == runs_t.c.id,
                                          attempts_t.c.number == started.attempt))
                .where(runs_t.c.id == started.run_id)).first()
        if (row is not None and row.fence == started.fence and row.status != "running"
                and row.attempt == attempt_status):
            return str(row.status)
        return None

    def _finish_once(self, started: StartedAttempt, *, status: str, reason: str | None,
                     attempt_status: str, now: datetime, result: Any, error: str | None,
                     error_class: str | None, usage: dict[str, Any] | None,
                     last_heartbeat: dict[str, Any] | None, not_before: datetime | None,
                     outbox: Sequence[OutboxWrite]) -> str | None:
        terminal = status in TERMINAL_STATUSES
        if (self._single is not None and started.overlap_key is None
                and started.capped_agent is None and not (status == "succeeded" and outbox)):
            with self._single.connect() as conn:
                written = conn.execute(worker_sql.FINISH_ATTEMPT, {
                    "p_run_id": started.run_id, "p_fence": started.fence, "p_status": status,
                    "p_reason": reason, "p_result": result, "p_error": error, "p_usage": usage,
                    "p_heartbeat": last_heartbeat, "p_not_before": not_before,
                    "p_waiting_for": None if terminal else "retry",
                    "p_finished_at": now if terminal else None, "p_number": started.attempt,
                    "p_attempt_status": attempt_status, "p_error_class": error_class,
                    "p_now": now,
                }).scalar()
            return None if written is None else str(written)
        with self.engine.begin() as conn:
            written = conn.execute(_FINISH_RUN, {
                "b_id": started.run_id, "b_fence": started.fence, "b_status": status,
                "b_reason": reason, "b_result": result, "b_error": error, "b_usage": usage,
                "b_heartbeat": last_heartbeat, "b_not_before": not_before,
                "b_waiting_for": None if terminal else "retry",
                "b_finished_at": now if terminal else None, "b_now": now,
            }).scalar()
            if written is None:
                return None
            if written == "succeeded" and outbox:
                insert_writes(conn, started.run_id, outbox, now)
            conn.execute(_FINISH_ATTEMPT, {
                "b_run_id": started.run_id, "b_number": started.attempt,
                "b_status": attempt_status, "b_reason": reason, "b_error_class": error_class,
                "b_error": error, "b_now": now,
            })
            if started.overlap_key is not None:
                wake_next(conn, now, after=started.run_id, waiting_for=WaitingFor.OVERLAP,
                                column=runs_t.c.overlap_key, value=started.overlap_key)
            if started.capped_agent is not None:
                wake_next(conn, now, after=started.run_id, waiting_for=WaitingFor.CONCURRENCY,
                                column=runs_t.c.agent, value=started.capped_agent)
            return str(written)

    @staticmethod
    def _check_concurrency(conn: Connection, run_id: str, agent: str, cap: int) -> None:
        """Raise ConcurrencyBlockedError when `agent` already runs `cap` runs.

        On PostgreSQL a transaction-scoped advisory lock per agent makes the
        count-then-start atomic across workers; SQLite's BEGIN IMMEDIATE already is.
        """
        lock = Dialect.of(conn).agent_lock(agent)
        if lock is not None:
            conn.execute(lock)
        running = conn.execute(
            sa.select(sa.func.count()).select_from(runs_t)
            .where(runs_t.c.agent == agent, runs_t.c.status == "running", runs_t.c.id != run_id)
        ).scalar_one()
        if running >= cap:
            raise ConcurrencyBlockedError(run_id, cap)







    def _close_attempt(self, started: StartedAttempt, status: str, reason: str | None,
                       now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(attempts_t)
                .where(attempts_t.c.run_id == started.run_id,
                       attempts_t.c.number == started.attempt,
                       # A `stalled` attempt stays stalled when its worker wakes up and tries to
                       # commit: the stall happened and is alerted (rewriting it hid it).
                       attempts_t.c.status == "running")
                .values(status=status, reason=reason, finished_at=now)
            )




    def end_cancelled(self, run_id: str, now: datetime) -> str | None:
        """A delivery found a cancel request on the run: end it `cancelled/<reason>` without
        starting it (and close an attempt its vanished worker left running). The reason, or
        None if the run was not in that state."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(ACTIVE_STATUSES),
                       runs_t.c.cancel_requested.is_not(None))
                .values(status="cancelled", terminal_reason=runs_t.c.cancel_requested,
                        fence=runs_t.c.fence + 1, finished_at=now, lease_expires_at=None,
                        not_before=None, waiting_for=None)
                .returning(runs_t.c.terminal_reason)
            ).first()
            if row is None:
                return None
            conn.execute(sa.update(attempts_t)
                         .where(attempts_t.c.run_id == run_id, attempts_t.c.status == "running")
                         .values(status="stalled", reason="worker_lost", finished_at=now))
            return str(row.terminal_reason)

    def add_dead_letter(self, *, reason: str, task_name: str | None, task_id: str | None,
                        payload: str | None, details: dict[str, Any] | None,
                        now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(dead_t).values(
                reason=reason, task_name=task_name, task_id=task_id, payload=payload,
                details=details, created_at=now))

    def list_dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        stmt = sa.select(DeadLetter).order_by(dead_t.c.created_at.desc(), dead_t.c.id.desc())
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt.limit(limit)))

    # -- queries for the CLI ---------------------------------------------

    def list_runs(self, *, status: str | None = None, trigger: str | None = None,
                  limit: int = 50) -> list[Run]:
        stmt = sa.select(Run).order_by(runs_t.c.created_at.desc(), runs_t.c.id).limit(limit)
        if status:
            stmt = stmt.where(runs_t.c.status == status)
        if trigger:
            stmt = stmt.where(runs_t.c.trigger == trigger)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    def attempts_of(self, run_id: str) -> list[Attempt]:
        stmt = sa.select(Attempt).where(attempts_t.c.run_id == run_id).order_by(attempts_t.c.number)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))



__all__ = ["Beat", "Dispatch", "MissedRow", "NewRun", "QueuedRun", "StartedAttempt", "StateWrite",
           "Store", "is_transient", "new_run_id"]
