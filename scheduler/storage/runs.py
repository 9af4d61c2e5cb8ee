"""The runs table from the scheduling side: firings become runs, runs become messages.

Every state change is a guarded UPDATE (compare-and-set on status, fence or queued_at),
never a blind write, so a paused ex-leader or a stale publisher changes nothing when it
wakes up. The worker's own writes to a run (start, beat, finish) live in attempts.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.core.values import Dispatch, MissedRow, NewRun, QueuedRun, StateWrite
from scheduler.core.vocabulary import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Reason,
    RunOverlap,
    RunStatus,
    WaitingFor,
)
from scheduler.storage._sql import StoreGroup, missed_t, runs_t
from scheduler.storage.trigger_state import json_default, write_states

# Runs not started yet: the ones a park, a skip or a cancel may still end or hold.
UNSTARTED = (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.WAITING)

_RUN_COLUMNS: dict[str, str] = {
    "id": "text",
    "idempotency_key": "text",
    "trigger": "text",
    "agent": "text",
    "queue": "text",
    "status": "text",
    "terminal_reason": "text",
    "attempt": "int",
    "deliveries": "int",
    "fence": "bigint",
    "event": "jsonb",
    "logical_time": "timestamptz",
    "agent_version": "text",
    "overlap_key": "text",
    "overlap": "text",
    "created_at": "timestamptz",
    "finished_at": "timestamptz",
    "error": "text",
    "origin": "text",
    "replay_of": "text",
}
# A chunk of rows travels as ONE JSON document, expanded by jsonb_to_recordset: json.dumps
# is C, while psycopg dumps array parameters element by element in Python (17 arrays of 500
# per chunk were a third of a 10,000-trigger tick).
_INSERT_RUNS_JSON = sa.text(
    # Built once from the constant column map above; the only value is the bound document.
    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) SELECT {', '.join(_RUN_COLUMNS)} "  # noqa: S608
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v("
    + ", ".join(f"{c} {t}" for c, t in _RUN_COLUMNS.items())
    + ") ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
# Overlap policies that may end a firing `skipped` at insert time, and how many active runs
# of the key that takes.
_SKIP_LIMIT = {RunOverlap.SKIP: 1, RunOverlap.BUFFER_ONE: 2}


def wake_next(
    conn: Connection,
    now: datetime,
    *,
    after: str,
    waiting_for: WaitingFor,
    column: sa.Column[Any],
    value: str,
) -> None:
    """Let the oldest run parked for `waiting_for` on `column = value` go now (a holder of
    the overlap key or of the agent's concurrency ended: attempts.py calls it in its finish)."""
    nxt = (
        sa.select(runs_t.c.id)
        .where(
            column == value,
            runs_t.c.status == RunStatus.WAITING,
            runs_t.c.waiting_for == waiting_for,
            runs_t.c.id != after,
            # not one an earlier finish already woke: two finishes close together would
            # both wake the same run, and the second wake-up would be lost
            runs_t.c.not_before > now,
        )
        .order_by(runs_t.c.created_at, runs_t.c.id)
        .limit(1)
        .scalar_subquery()
    )
    conn.execute(sa.update(runs_t).where(runs_t.c.id == nxt).values(not_before=now))


def _extend_ledger(conn: Connection, m: MissedRow) -> bool:
    """Add `m` to the trigger's newest ledger row of the same reason recorded since
    `m.extends_since` (the same pause); False when there is none."""
    newest = (
        sa.select(sa.func.max(missed_t.c.id))
        .where(
            missed_t.c.trigger == m.trigger,
            missed_t.c.reason == m.reason,
            missed_t.c.recorded_at >= m.extends_since,
            missed_t.c.last_slot < m.first,
        )
        .scalar_subquery()
    )
    return bool(
        conn.execute(
            sa.update(missed_t)
            .where(missed_t.c.id == newest)
            .values(last_slot=m.last, count=missed_t.c.count + m.count)
        ).rowcount
    )


class RunStore(StoreGroup):
    """Inserting firings, publishing runs (claim, unclaim, what is due) and the scheduler's
    and operator's writes to runs that have not started (park, skip, defer, cancel)."""

    # -- firings ----------------------------------------------------------

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
            write_states(conn, self.dialect, states, now)
            inserted: list[NewRun] = []
            runs = self._apply_overlap(conn, runs)
            if runs:
                rows = [
                    {
                        "id": r.id,
                        "idempotency_key": r.idempotency_key,
                        "trigger": r.trigger,
                        "agent": r.agent,
                        "queue": r.queue,
                        "status": r.status,
                        "terminal_reason": r.terminal_reason,
                        "attempt": 0,
                        "deliveries": 0,
                        "fence": 0,
                        "event": r.event,
                        "logical_time": r.logical_time,
                        "agent_version": r.agent_version,
                        "overlap_key": r.overlap_key,
                        "overlap": r.overlap,
                        "created_at": now,
                        "finished_at": now if r.status in TERMINAL_STATUSES else None,
                        "error": r.error,
                        "origin": r.origin,
                        "replay_of": r.replay_of,
                    }
                    for r in runs
                ]
                ids = self._insert_runs(conn, rows)
                inserted = [r for r in runs if r.id in ids]
            fresh = [m for m in missed if m.extends_since is None or not _extend_ledger(conn, m)]
            if fresh:
                conn.execute(
                    sa.insert(missed_t),
                    [
                        {
                            "trigger": m.trigger,
                            "first_slot": m.first,
                            "last_slot": m.last,
                            "count": m.count,
                            "reason": m.reason,
                            "recorded_at": now,
                        }
                        for m in fresh
                    ],
                )
            return inserted

    def _apply_overlap(self, conn: Connection, runs: Sequence[NewRun]) -> list[NewRun]:
        """Decide at insert time which firings are `skipped` for overlap.

        `skip`: any active run with the key. `buffer_one`: a running one and a
        buffered one already. `cancel_other` and `wait` never skip here (the
        worker-side unique index makes them wait their turn).
        """
        keys = {r.overlap_key for r in runs if r.overlap_key and r.overlap in _SKIP_LIMIT}
        if not keys:
            return list(runs)
        active: dict[str, int] = {
            row.overlap_key: row.n
            for row in conn.execute(
                sa.select(runs_t.c.overlap_key, sa.func.count().label("n"))
                .where(
                    self.dialect.in_values(runs_t.c.overlap_key, sorted(keys)),
                    runs_t.c.status.in_(ACTIVE_STATUSES),
                )
                .group_by(runs_t.c.overlap_key)
            )
        }
        out = []
        for r in runs:
            key = r.overlap_key
            if key is None or r.overlap not in tuple(RunOverlap):
                out.append(r)
                continue
            n = active.get(key, 0)
            limit = _SKIP_LIMIT.get(RunOverlap(r.overlap))
            if limit is not None and n >= limit:
                out.append(replace(r, status=RunStatus.SKIPPED, terminal_reason=Reason.OVERLAP))
            else:
                active[key] = n + 1
                out.append(r)
        return out

    def _insert_runs(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert runs, skipping existing idempotency keys; the ids actually inserted."""
        if self.dialect.json_batches:
            # One short statement and one JSON parameter: no per-row SQL for the driver to parse.
            document = json.dumps(rows, default=json_default)
            return {row.id for row in conn.execute(_INSERT_RUNS_JSON, {"rows": document})}
        # executemany form: compiled once and cached; insertmanyvalues batches it.
        stmt = (
            self.dialect.insert(runs_t)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(runs_t.c.id)
        )
        return {row.id for row in conn.execute(stmt, rows)}

    # -- publishing (scheduler.core.publish.dispatch calls these) ---------

    def claim_for_publish(
        self, dispatches: Sequence[Dispatch], now: datetime, redeliver_grace: timedelta
    ) -> list[Dispatch]:
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
        idle = [d for d in dispatches if d.status != RunStatus.RUNNING]
        running = [d for d in dispatches if d.status == RunStatus.RUNNING]
        claimed: set[str] = set()
        with self.engine.begin() as conn:
            if idle:
                claimed |= self._claim(
                    conn,
                    idle,
                    sa.update(runs_t).values(
                        status=RunStatus.QUEUED, queued_at=now, not_before=None, waiting_for=None
                    ),
                )
            if running:
                claimed |= self._claim(
                    conn,
                    running,
                    sa.update(runs_t)
                    .where(runs_t.c.lease_expires_at < now)
                    .values(lease_expires_at=now + redeliver_grace),
                )
        return [d for d in dispatches if d.run_id in claimed]

    def _claim(self, conn: Connection, dispatches: Sequence[Dispatch], stmt: sa.Update) -> set[str]:
        fresh = [d for d in dispatches if d.status == RunStatus.PENDING and d.fence == 0]
        if len(fresh) == len(dispatches):
            # The tick's case (just inserted): an id list, one JSON parameter on PostgreSQL.
            where = [
                self.dialect.in_values(runs_t.c.id, [d.run_id for d in fresh]),
                runs_t.c.status == RunStatus.PENDING,
                runs_t.c.fence == 0,
            ]
        else:
            where = [
                sa.tuple_(runs_t.c.id, runs_t.c.status, runs_t.c.fence).in_(
                    [(d.run_id, d.status, d.fence) for d in dispatches]
                )
            ]
        return {row.id for row in conn.execute(stmt.where(*where).returning(runs_t.c.id))}

    def unclaim(self, dispatches: Sequence[Dispatch], now: datetime) -> None:
        """The publish failed: hand the claimed runs back to the sweeper as `pending` (runs
        a worker already touched stay as the worker left them)."""
        ids = [d.run_id for d in dispatches if d.status != RunStatus.RUNNING]
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(runs_t)
                .where(
                    self.dialect.in_values(runs_t.c.id, ids),
                    runs_t.c.status == RunStatus.QUEUED,
                    runs_t.c.queued_at == now,
                )
                .values(status=RunStatus.PENDING)
            )

    def queued_candidates(self, queued_before: datetime, now: datetime, limit: int) -> list[QueuedRun]:
        """`queued` runs older than `queued_before` that are not deferred behind a lease:
        the ones whose message the lost-message check looks for in the broker."""
        stmt = (
            sa.select(
                runs_t.c.id,
                runs_t.c.agent,
                runs_t.c.queue,
                runs_t.c.trigger,
                runs_t.c.attempt,
                runs_t.c.fence,
                runs_t.c.queued_at,
            )
            .where(
                runs_t.c.status == RunStatus.QUEUED,
                runs_t.c.queued_at < queued_before,
                sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before <= now),
            )
            .order_by(runs_t.c.queued_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                QueuedRun(
                    Dispatch(r.id, r.agent, r.queue, r.trigger, r.attempt, RunStatus.QUEUED, r.fence),
                    r.queued_at,
                )
                for r in conn.execute(stmt)
            ]

    def due_for_publish(
        self, now: datetime, pending_before: datetime, limit: int, queued_before: datetime | None = None
    ) -> list[Dispatch]:
        """Runs the sweeper must (re)publish.

        `pending` older than the grace (the publisher died), `waiting` whose
        `not_before` passed (retries), `queued` deferred behind a lease whose
        holder never started, `running` whose lease expired (the
        worker was killed: Celery would only redeliver after the visibility
        timeout), and `queued` since before `queued_before` (its message was lost,
        say with a Redis restart that kept nothing: no run waits forever).
        """
        due = [
            sa.and_(runs_t.c.status == RunStatus.PENDING, runs_t.c.created_at <= pending_before),
            sa.and_(
                runs_t.c.status == RunStatus.WAITING,
                sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before <= now),
            ),
            sa.and_(runs_t.c.status == RunStatus.RUNNING, runs_t.c.lease_expires_at < now),
            # A delivery dropped because another worker held the lease, whose holder then
            # never started the run (it died between taking the lease and its start commit).
            sa.and_(runs_t.c.status == RunStatus.QUEUED, runs_t.c.not_before <= now),
        ]
        if queued_before is not None:
            due.append(sa.and_(runs_t.c.status == RunStatus.QUEUED, runs_t.c.queued_at < queued_before))
        stmt = (
            sa.select(
                runs_t.c.id,
                runs_t.c.agent,
                runs_t.c.queue,
                runs_t.c.trigger,
                runs_t.c.attempt,
                runs_t.c.status,
                runs_t.c.fence,
            )
            .where(sa.or_(*due))
            .order_by(runs_t.c.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                Dispatch(r.id, r.agent, r.queue, r.trigger, r.attempt, r.status, r.fence)
                for r in conn.execute(stmt)
            ]

    # -- runs that have not started ---------------------------------------

    def park(self, run_id: str, until: datetime, waiting_for: WaitingFor) -> None:
        """Wait until `until` (a spend cap's window) or until a holder's finish wakes it."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(UNSTARTED))
                .values(status=RunStatus.WAITING, not_before=until, waiting_for=waiting_for)
            )

    def park_blocked(
        self,
        run_id: str,
        now: datetime,
        poll: timedelta,
        waiting_for: WaitingFor,
        held: str | None,
        *,
        cap: int = 1,
    ) -> bool:
        """Blocked on `held` (its overlap key, or for CONCURRENCY its agent, capped at `cap`
        running runs): wait until a holder's finish wakes it, or `poll` at the latest.
        True: it waits for a holder.

        The holders are locked before the run is parked, so a holder finishing at the same
        moment either sees the parked run (and wakes it) or is seen finished here (and the
        run is due at once): no wake-up is lost to that race, which would leave the run
        waiting out the whole poll.
        """
        column = runs_t.c.agent if waiting_for == WaitingFor.CONCURRENCY else runs_t.c.overlap_key
        holders = sa.select(runs_t.c.id).where(
            column == held, runs_t.c.status == RunStatus.RUNNING, runs_t.c.id != run_id
        )
        if self.dialect.skip_locked_rows:  # row locks: wait for a holder's finish in flight
            holders = holders.with_for_update(of=runs_t)
        with self.engine.begin() as conn:
            blocked = len(conn.execute(holders).all()) >= cap
            conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(UNSTARTED))
                .values(
                    status=RunStatus.WAITING,
                    not_before=now + poll if blocked else now,
                    waiting_for=waiting_for,
                )
            )
        return blocked

    def skip(self, run_id: str, reason: Reason, now: datetime) -> bool:
        """End an active run `skipped/<reason>` before it started."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(runs_t)
                    .where(runs_t.c.id == run_id, runs_t.c.status.in_(UNSTARTED))
                    .values(status=RunStatus.SKIPPED, terminal_reason=reason, finished_at=now)
                ).rowcount
                == 1
            )

    def defer(self, run_id: str, not_before: datetime) -> None:
        """Note when the sweeper may redeliver a run whose lease someone else holds.

        Only a `queued` or `running` run, and never earlier than a time already set: a
        duplicate delivery must not cut a retry's backoff short.
        """
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(runs_t)
                .where(
                    runs_t.c.id == run_id,
                    runs_t.c.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
                    sa.or_(runs_t.c.not_before.is_(None), runs_t.c.not_before < not_before),
                )
                .values(not_before=not_before)
            )

    def fail_without_attempt(self, run_id: str, reason: Reason, error: str, now: datetime) -> bool:
        """End an active run `failed/<reason>` before any attempt ran (poison, unknown agent)."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(runs_t)
                    .where(runs_t.c.id == run_id, runs_t.c.status.in_(ACTIVE_STATUSES))
                    .values(status=RunStatus.FAILED, terminal_reason=reason, error=error, finished_at=now)
                ).rowcount
                == 1
            )

    def revive(self, run_id: str, from_statuses: Sequence[str]) -> Dispatch | None:
        """Reopen an ended run for one more attempt (`pending`, deliveries reset)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.status.in_(from_statuses))
                # A cancel request belonged to the run's earlier life: a retry asked for now
                # must run, not end cancelled at its first delivery.
                .values(
                    status=RunStatus.PENDING,
                    terminal_reason=None,
                    finished_at=None,
                    not_before=None,
                    deliveries=0,
                    lease_expires_at=None,
                    cancel_requested=None,
                )
                .returning(runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger, runs_t.c.attempt, runs_t.c.fence)
            ).first()
        return (
            None
            if row is None
            else Dispatch(
                run_id, row.agent, row.queue, row.trigger, row.attempt, RunStatus.PENDING, row.fence
            )
        )

    # -- cancelling -------------------------------------------------------

    def cancel_unstarted(self, run_id: str, now: datetime) -> bool:
        """`cancelled/by_user` for a run that has not started; False if it is running or ended."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(runs_t)
                    .where(runs_t.c.id == run_id, runs_t.c.status.in_(UNSTARTED))
                    .values(status=RunStatus.CANCELLED, terminal_reason=Reason.BY_USER, finished_at=now)
                ).rowcount
                == 1
            )

    def running_with_keys(self, keys: Iterable[str]) -> list[str]:
        """Ids of running runs holding any of `keys` (for cancel_other)."""
        wanted = list(keys)
        if not wanted:
            return []
        with self.engine.connect() as conn:
            return [
                r.id
                for r in conn.execute(
                    sa.select(runs_t.c.id).where(
                        self.dialect.in_values(runs_t.c.overlap_key, wanted),
                        runs_t.c.status == RunStatus.RUNNING,
                    )
                )
            ]

    def request_cancel(self, run_ids: Iterable[str], reason: str) -> list[str]:
        """Aim a cancel request at active runs (and their future attempts); the ids it reached.

        The worker running one learns it on its next beat; a retry verdict yields to it;
        a delivery that starts later ends the run instead of running it.
        """
        ids = list(run_ids)
        if not ids:
            return []
        with self.engine.begin() as conn:
            return [
                r.id
                for r in conn.execute(
                    sa.update(runs_t)
                    .where(self.dialect.in_values(runs_t.c.id, ids), runs_t.c.status.in_(ACTIVE_STATUSES))
                    .values(cancel_requested=sa.func.coalesce(runs_t.c.cancel_requested, reason))
                    .returning(runs_t.c.id)
                )
            ]
