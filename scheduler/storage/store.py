"""Data access for runs, attempts and trigger state.

Every state change is a guarded UPDATE (compare-and-set on status, fence or
revision), never a blind write, so a paused ex-leader or a stale worker
changes nothing when it wakes up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from agents._context import OutboxWrite
from scheduler.core.errors import StateConflictError, StorageError
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
from scheduler.storage import worker_sql
from scheduler.storage.dialect import Dialect, in_values
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


_RUN_COLUMNS: dict[str, str] = {
    "id": "text", "idempotency_key": "text", "trigger": "text", "agent": "text", "queue": "text",
    "status": "text", "terminal_reason": "text", "attempt": "int", "deliveries": "int",
    "fence": "bigint", "event": "jsonb", "logical_time": "timestamptz",
    "agent_version": "text", "overlap_key": "text", "overlap": "text", "created_at": "timestamptz",
    "finished_at": "timestamptz", "error": "text",
}
# A chunk of rows travels as ONE JSON document, expanded by jsonb_to_recordset: json.dumps
# is C, while psycopg dumps array parameters element by element in Python (17 arrays of 500
# per chunk were a third of a 10,000-trigger tick).
_PG_INSERT_RUNS = sa.text(
    # Built once from the constant column map above; the only value is the bound document.
    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) SELECT {', '.join(_RUN_COLUMNS)} "  # noqa: S608
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v("
    + ", ".join(f"{c} {t}" for c, t in _RUN_COLUMNS.items())
    + ") ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
_PG_CAS_STATES = sa.text(
    "UPDATE trigger_state AS t SET state = v.state, revision = t.revision + 1, "
    "next_evaluation = v.next, source_failing = v.failing, updated_at = :now "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS v(name text, rev int, state jsonb, next timestamptz, failing boolean) "
    "WHERE t.name = v.name AND t.revision = v.rev RETURNING t.name"
)


def _json_default(value: object) -> str:
    """Datetimes in a JSON document for PostgreSQL: ISO 8601 with the offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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


class Store:
    """Runs, attempts and trigger state on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = Dialect.for_engine(engine)
        # The worker's hot statements are single, atomic statements on PostgreSQL: run them
        # without BEGIN/COMMIT (worker_sql.py).
        self._single = self.dialect.autocommit(engine)

    # -- scheduler side ---------------------------------------------------

    def load_trigger_states(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every persisted trigger state as (state, revision)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(state_t.c.name, state_t.c.state, state_t.c.revision))
            return {r.name: (r.state, r.revision) for r in rows}

    def commit_tick(
        self,
        runs: Sequence[NewRun],
        states: Sequence[StateWrite],
        missed: Sequence[MissedRow],
        now: datetime,
    ) -> list[NewRun]:
        """One transaction: insert runs (duplicates ignored) and CAS-write trigger states.

        Returns the runs actually inserted. Raises StateConflictError (and
        writes nothing) when any state's revision moved: another leader won.
        """
        with self.engine.begin() as conn:
            self._write_states(conn, states, now)
            inserted: list[NewRun] = []
            runs = self._apply_overlap(conn, runs)
            if runs:
                rows = [
                    {
                        "id": r.id, "idempotency_key": r.idempotency_key, "trigger": r.trigger,
                        "agent": r.agent, "queue": r.queue, "status": r.status,
                        "terminal_reason": r.terminal_reason, "attempt": 0, "deliveries": 0,
                        "fence": 0, "event": r.event, "logical_time": r.logical_time,
                        "agent_version": r.agent_version, "overlap_key": r.overlap_key,
                        "overlap": r.overlap,
                        "created_at": now,
                        "finished_at": now if r.status in TERMINAL_STATUSES else None,
                        "error": r.error,
                    }
                    for r in runs
                ]
                ids = self._insert_runs(conn, rows)
                inserted = [r for r in runs if r.id in ids]
            if missed:
                conn.execute(sa.insert(missed_t), [
                    {"trigger": m.trigger, "first_slot": m.first, "last_slot": m.last,
                     "count": m.count, "reason": m.reason, "recorded_at": now} for m in missed
                ])
            return inserted

    @staticmethod
    def _apply_overlap(conn: Connection, runs: Sequence[NewRun]) -> list[NewRun]:
        """Decide at insert time which firings are `skipped` for overlap.

        `skip`: any active run with the key. `buffer_one`: a running one and a
        buffered one already. `cancel_other` and `wait` never skip here (the
        worker-side unique index makes them wait their turn).
        """
        keys = {r.overlap_key for r in runs
                if r.overlap_key and r.overlap in ("skip", "buffer_one")}
        if not keys:
            return list(runs)
        active: dict[str, int] = {
            row.overlap_key: row.n for row in conn.execute(
                sa.select(runs_t.c.overlap_key, sa.func.count().label("n"))
                .where(in_values(conn, runs_t.c.overlap_key, sorted(keys)),
                       runs_t.c.status.in_(ACTIVE_STATUSES))
                .group_by(runs_t.c.overlap_key))
        }
        out = []
        for r in runs:
            key = r.overlap_key
            if key is None or r.overlap not in ("skip", "buffer_one", "wait", "cancel_other"):
                out.append(r)
                continue
            n = active.get(key, 0)
            limit = {"skip": 1, "buffer_one": 2}.get(r.overlap or "")
            if limit is not None and n >= limit:
                out.append(replace(r, status="skipped", terminal_reason="overlap"))
            else:
                active[key] = n + 1
                out.append(r)
        return out

    def _write_states(self, conn: Connection, states: Sequence[StateWrite], now: datetime) -> None:
        new = [s for s in states if s.expected_revision == 0]
        old = [s for s in states if s.expected_revision > 0]
        if new:
            stmt = (_insert(conn, state_t).on_conflict_do_nothing(index_elements=["name"])
                    .returning(state_t.c.name))
            written = {row.name for row in conn.execute(stmt, [
                {"name": s.name, "kind": s.kind, "state": s.state, "revision": 1,
                 "next_evaluation": s.next_evaluation, "updated_at": now,
                 "source_failing": s.source_failing, "paused": False} for s in new
            ])}
            if len(written) != len(new):
                lost = sorted({s.name for s in new} - written)
                raise StateConflictError(f"trigger state created concurrently: {lost}")
        if old and Dialect.of(conn).json_batches:
            self._cas_states_postgres(conn, old, now)
        elif old:
            stmt = (
                sa.update(state_t)
                .where(state_t.c.name == sa.bindparam("b_name"))
                .where(state_t.c.revision == sa.bindparam("b_rev"))
                .values(state=sa.bindparam("b_state"), revision=state_t.c.revision + 1,
                        next_evaluation=sa.bindparam("b_next"),
                        source_failing=sa.bindparam("b_failing"), updated_at=now)
            )
            params = [{"b_name": s.name, "b_rev": s.expected_revision, "b_state": s.state,
                       "b_next": s.next_evaluation, "b_failing": s.source_failing} for s in old]
            result = conn.execute(stmt, params)
            if result.rowcount != len(old):
                raise StateConflictError(
                    f"{len(old) - result.rowcount} trigger state(s) changed under us"
                )

    @staticmethod
    def _insert_runs(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert runs, skipping existing idempotency keys; the ids actually inserted."""
        if Dialect.of(conn).json_batches:
            # One short statement and one JSON parameter: no per-row SQL for the driver to parse.
            document = json.dumps(rows, default=_json_default)
            return {row.id for row in conn.execute(_PG_INSERT_RUNS, {"rows": document})}
        # executemany form: compiled once and cached; insertmanyvalues batches it.
        stmt = (_insert(conn, runs_t).on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(runs_t.c.id))
        return {row.id for row in conn.execute(stmt, rows)}

    @staticmethod
    def _cas_states_postgres(conn: Connection, old: Sequence[StateWrite], now: datetime) -> None:
        """Every compare-and-set of a chunk in one statement (one round trip, not 500)."""
        document = json.dumps(
            [{"name": s.name, "rev": s.expected_revision, "state": s.state,
              "next": s.next_evaluation, "failing": s.source_failing} for s in old],
            default=_json_default)
        result = conn.execute(_PG_CAS_STATES, {"rows": document, "now": now})
        matched = len(result.fetchall())
        if matched != len(old):
            raise StateConflictError(f"{len(old) - matched} trigger state(s) changed under us")

    def claim_for_publish(self, dispatches: Sequence[Dispatch], now: datetime,
                          redeliver_grace: timedelta) -> list[Dispatch]:
        """The bookkeeping of a publish, done BEFORE the publish; returns what to publish.

        Each run is claimed only if it is still as the publisher saw it (status and fence):
        a worker that started, retried or finished it meanwhile keeps what it wrote, and no
        message is sent for it. Until the message exists no worker can act on the run, so no
        write of a worker can ever be overwritten by this one. `pending`/`waiting`/`queued`
        become `queued` (stamped `queued_at`); a republished `running` run (its worker died)
        gets `redeliver_grace` before the sweeper may send it again.
        """
        if not dispatches:
            return []
        idle = [d for d in dispatches if d.status != "running"]
        running = [d for d in dispatches if d.status == "running"]
        claimed: set[str] = set()
        with self.engine.begin() as conn:
            if idle:
                claimed |= self._claim(conn, idle, sa.update(runs_t).values(
                    status="queued", queued_at=now, not_before=None, waiting_for=None))
            if running:
                claimed |= self._claim(conn, running, sa.update(runs_t)
                                       .where(runs_t.c.lease_expires_at < now)
                                       .values(lease_expires_at=now + redeliver_grace))
        return [d for d in dispatches if d.run_id in claimed]

    @staticmethod
    def _claim(conn: Connection, dispatches: Sequence[Dispatch], stmt: sa.Update) -> set[str]:
        fresh = [d for d in dispatches if d.status == "pending" and d.fence == 0]
        if len(fresh) == len(dispatches):
            # The tick's case (just inserted): an id list, one JSON parameter on PostgreSQL.
            where = [in_values(conn, runs_t.c.id, [d.run_id for d in fresh]),
                     runs_t.c.status == "pending", runs_t.c.fence == 0]
        else:
            where = [sa.tuple_(runs_t.c.id, runs_t.c.status, runs_t.c.fence).in_(
                [(d.run_id, d.status, d.fence) for d in dispatches])]
        return {row.id for row in conn.execute(stmt.where(*where).returning(runs_t.c.id))}

    def unclaim(self, dispatches: Sequence[Dispatch], now: datetime) -> None:
        """The publish failed: hand the claimed runs back to the sweeper as `pending` (runs
        a worker already touched stay as the worker left them)."""
        ids = [d.run_id for d in dispatches if d.status != "running"]
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(sa.update(runs_t)
                         .where(in_values(conn, runs_t.c.id, ids), runs_t.c.status == "queued",
                                runs_t.c.queued_at == now)
                         .values(status="pending"))

    def queued_candidates(self, queued_before: datetime, now: datetime, limit: int
                          ) -> list[QueuedRun]:
        """`queued` runs older than `queued_before` that are not deferred behind a lease:
        the ones whose message the lost-message check looks for in the broker."""
        stmt = (
            sa.select(runs_t.c.id, runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger,
                      runs_t.c.attempt, runs_t.c.fence, runs_t.c.queued_at)
            .where(runs_t.c.status == "queued", runs_t.c.queued_at < queued_before,
                   sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before <= now))
            .order_by(runs_t.c.queued_at).limit(limit)
        )
        with self.engine.connect() as conn:
            return [QueuedRun(Dispatch(r.id, r.agent, r.queue, r.trigger, r.attempt, "queued",
                                       r.fence), r.queued_at) for r in conn.execute(stmt)]

    def due_for_publish(self, now: datetime, pending_before: datetime, limit: int,
                        queued_before: datetime | None = None) -> list[Dispatch]:
        """Runs the sweeper must (re)publish.

        `pending` older than the grace (the publisher died), `waiting` whose
        `not_before` passed (retries), `queued` deferred behind a lease whose
        holder never started, `running` whose lease expired (the
        worker was killed: Celery would only redeliver after the visibility
        timeout), and `queued` since before `queued_before` (its message was lost,
        say with a Redis restart that kept nothing: no run waits forever).
        """
        due = [
            sa.and_(runs_t.c.status == "pending", runs_t.c.created_at <= pending_before),
            sa.and_(runs_t.c.status == "waiting",
                    sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before <= now)),
            sa.and_(runs_t.c.status == "running", runs_t.c.lease_expires_at < now),
            # A delivery dropped because another worker held the lease, whose holder then
            # never started the run (it died between taking the lease and its start commit).
            sa.and_(runs_t.c.status == "queued", runs_t.c.not_before <= now),
        ]
        if queued_before is not None:
            due.append(sa.and_(runs_t.c.status == "queued", runs_t.c.queued_at < queued_before))
        stmt = (
            sa.select(runs_t.c.id, runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger,
                      runs_t.c.attempt, runs_t.c.status, runs_t.c.fence)
            .where(sa.or_(*due))
            .order_by(runs_t.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [Dispatch(r.id, r.agent, r.queue, r.trigger, r.attempt, r.status, r.fence)
                    for r in conn.execute(stmt)]


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
                self._wake_next(conn, now, after=started.run_id, waiting_for="overlap",
                                column=runs_t.c.overlap_key, value=started.overlap_key)
            if started.capped_agent is not None:
                self._wake_next(conn, now, after=started.run_id, waiting_for="concurrency",
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

    @staticmethod
    def _wake_next(conn: Connection, now: datetime, *, after: str, waiting_for: str,
                   column: sa.Column[Any], value: str) -> None:
        """Let the oldest run parked for `waiting_for` on `column = value` go now."""
        nxt = (sa.select(runs_t.c.id)
               .where(column == value, runs_t.c.status == "waiting",
                      runs_t.c.waiting_for == waiting_for, runs_t.c.id != after)
               .order_by(runs_t.c.created_at).limit(1).scalar_subquery())
        conn.execute(sa.update(runs_t).where(runs_t.c.id == nxt).values(not_before=now))

    def park(self, run_id: str, until: datetime, waiting_for: str) -> None:
        """Blocked (overlap or concurrency): wait until a holder ends, or `until` at the latest."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(("pending", "queued", "waiting")))
                .values(status="waiting", not_before=until, waiting_for=waiting_for)
            )

    def skip(self, run_id: str, reason: str, now: datetime) -> bool:
        """End an active run `skipped/<reason>` before it started."""
        with self.engine.begin() as conn:
            return conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(("pending", "queued", "waiting")))
                .values(status="skipped", terminal_reason=reason, finished_at=now)
            ).rowcount == 1

    def revive(self, run_id: str, from_statuses: Sequence[str]) -> Dispatch | None:
        """Reopen an ended run for one more attempt (`pending`, deliveries reset)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(from_statuses))
                # A cancel request belonged to the run's earlier life: a retry asked for now
                # must run, not end cancelled at its first delivery.
                .values(status="pending", terminal_reason=None, finished_at=None,
                        not_before=None, deliveries=0, lease_expires_at=None,
                        cancel_requested=None)
                .returning(runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger, runs_t.c.attempt,
                           runs_t.c.fence)
            ).first()
        return None if row is None else Dispatch(run_id, row.agent, row.queue, row.trigger,
                                                 row.attempt, "pending", row.fence)

    def cancel_unstarted(self, run_id: str, now: datetime) -> bool:
        """`cancelled/by_user` for a run that has not started; False if it is running or ended."""
        with self.engine.begin() as conn:
            return conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(("pending", "queued", "waiting")))
                .values(status="cancelled", terminal_reason="by_user", finished_at=now)
            ).rowcount == 1

    def running_with_keys(self, keys: Iterable[str]) -> list[str]:
        """Ids of running runs holding any of `keys` (for cancel_other)."""
        wanted = list(keys)
        if not wanted:
            return []
        with self.engine.connect() as conn:
            return [r.id for r in conn.execute(
                sa.select(runs_t.c.id).where(in_values(conn, runs_t.c.overlap_key, wanted),
                                             runs_t.c.status == "running"))]

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

    def fail_without_attempt(self, run_id: str, reason: str, error: str, now: datetime) -> bool:
        """End an active run `failed/<reason>` before any attempt ran (poison, unknown agent)."""
        with self.engine.begin() as conn:
            return conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(ACTIVE_STATUSES))
                .values(status="failed", terminal_reason=reason, error=error, finished_at=now)
            ).rowcount == 1

    def defer(self, run_id: str, not_before: datetime) -> None:
        """Note when the sweeper may redeliver a run whose lease someone else holds.

        Only a `queued` or `running` run, and never earlier than a time already set: a
        duplicate delivery must not cut a retry's backoff short.
        """
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(("queued", "running")),
                       sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before < not_before))
                .values(not_before=not_before)
            )

    def request_cancel(self, run_ids: Iterable[str], reason: str) -> list[str]:
        """Aim a cancel request at active runs (and their future attempts); the ids it reached.

        The worker running one learns it on its next beat; a retry verdict yields to it;
        a delivery that starts later ends the run instead of running it.
        """
        ids = list(run_ids)
        if not ids:
            return []
        with self.engine.begin() as conn:
            return [r.id for r in conn.execute(
                sa.update(runs_t)
                .where(in_values(conn, runs_t.c.id, ids), runs_t.c.status.in_(ACTIVE_STATUSES))
                .values(cancel_requested=sa.func.coalesce(runs_t.c.cancel_requested, reason))
                .returning(runs_t.c.id))]

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

    def trigger_rows(self) -> dict[str, TriggerState]:
        with Session(self.engine, expire_on_commit=False) as session:
            return {row.name: row for row in session.scalars(sa.select(TriggerState))}


__all__ = ["Beat", "Dispatch", "MissedRow", "NewRun", "QueuedRun", "StartedAttempt", "StateWrite",
           "Store", "is_transient", "new_run_id"]
