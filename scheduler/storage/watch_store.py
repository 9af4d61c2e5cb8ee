"""The watchdog's reads and its one write (ending a stalled attempt), kept apart from the hot path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scheduler.core.vocabulary import AttemptStatus, Reason, RunStatus
from scheduler.storage._sql import attempts_t, missed_t, runs_t, state_t
from scheduler.storage.dialect import in_values


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    run_id: str
    attempt: int
    fence: int
    agent: str
    trigger: str | None
    status: str
    heartbeat_at: datetime | None
    progress_at: datetime | None
    started_at: datetime
    task_id: str | None
    worker: str | None
    reason: str | None = None
    deferrals: int = 0  # attempts of the run deferred for an unavailable provider

    @property
    def counted_attempt(self) -> int:
        """The attempt's number among those that count towards max_attempts."""
        return self.attempt - self.deferrals


@dataclass(frozen=True, slots=True)
class Stall:
    """What ending a stalled attempt did to its run."""

    run_status: RunStatus | None  # pending (requeued), dead, or None (a newer attempt runs)
    agent: str
    queue: str
    trigger: str | None
    fence: int = 0  # the run's fence after the stall (the requeue's claim compares on it)


_ATTEMPT_COLUMNS = (
    attempts_t.c.run_id,
    attempts_t.c.number,
    attempts_t.c.fence,
    runs_t.c.agent,
    runs_t.c.trigger,
    attempts_t.c.status,
    attempts_t.c.heartbeat_at,
    attempts_t.c.progress_at,
    attempts_t.c.started_at,
    attempts_t.c.celery_task_id,
    attempts_t.c.worker,
    runs_t.c.deferrals,
)


def _attempt(row: Any) -> RunningAttempt:
    return RunningAttempt(
        row.run_id,
        row.number,
        row.fence,
        row.agent,
        row.trigger,
        row.status,
        row.heartbeat_at,
        row.progress_at,
        row.started_at,
        row.celery_task_id,
        row.worker,
        getattr(row, "reason", None),
        row.deferrals or 0,
    )


class WatchStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def attempts(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], RunningAttempt]:
        """The current rows of the given (run_id, attempt) pairs, whatever their status."""
        pairs = list(keys)
        if not pairs:
            return {}
        query = (
            sa.select(*_ATTEMPT_COLUMNS)
            .join(runs_t, runs_t.c.id == attempts_t.c.run_id)
            .where(sa.tuple_(attempts_t.c.run_id, attempts_t.c.number).in_(pairs))
        )
        with self.engine.connect() as conn:
            return {(r.run_id, r.number): _attempt(r) for r in conn.execute(query)}

    def running(
        self, *, heartbeat_before: datetime | None = None, progress_before: datetime | None = None
    ) -> list[RunningAttempt]:
        """Attempts still `running` (optionally only stale ones): the sweep and the rebuild."""
        query = (
            sa.select(*_ATTEMPT_COLUMNS)
            .join(runs_t, runs_t.c.id == attempts_t.c.run_id)
            .where(attempts_t.c.status == AttemptStatus.RUNNING)
        )
        stale = []
        if heartbeat_before is not None:
            stale.append(
                sa.func.coalesce(attempts_t.c.heartbeat_at, attempts_t.c.started_at) < heartbeat_before
            )
        if progress_before is not None:
            stale.append(
                sa.func.coalesce(attempts_t.c.progress_at, attempts_t.c.started_at) < progress_before
            )
        if stale:
            query = query.where(sa.or_(*stale))
        with self.engine.connect() as conn:
            return [_attempt(r) for r in conn.execute(query)]

    def oldest_heartbeat(self) -> datetime | None:
        """The oldest liveness beat among running attempts (for the heartbeat-age gauge)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(
                    sa.func.min(sa.func.coalesce(attempts_t.c.heartbeat_at, attempts_t.c.started_at))
                ).where(attempts_t.c.status == AttemptStatus.RUNNING)
            ).scalar()
        if isinstance(value, str):  # SQLite aggregates lose the column type
            value = datetime.fromisoformat(value)
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def stall(
        self, run_id: str, attempt: int, fence: int, *, reason: str, now: datetime, run_status: RunStatus
    ) -> Stall | None:
        """End a stalled attempt and move its run to `run_status` with a new fence: `pending`
        (requeued) or `dead` (attempts exhausted), as `verdict.lost()` decided; storage
        writes the verdict and does not judge it.

        One transaction, conditional on the attempt still running and the run
        still holding that fence: if the execution path's redelivery already
        started the next attempt, the run is left alone (the stall is still
        reported). None when the attempt had already ended.
        """
        with self.engine.begin() as conn:
            # Lock order, as everywhere: the run row first, then its attempt rows (a worker's
            # start and finish take them in that order; the reverse deadlocked).
            info = conn.execute(
                sa.select(runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger, runs_t.c.fence, runs_t.c.status)
                .where(runs_t.c.id == run_id)
                .with_for_update()
            ).first()
            if info is None:
                return None
            closed = conn.execute(
                sa.update(attempts_t)
                .where(
                    attempts_t.c.run_id == run_id,
                    attempts_t.c.number == attempt,
                    attempts_t.c.status == AttemptStatus.RUNNING,
                )
                .values(
                    status=AttemptStatus.STALLED,
                    reason=reason,
                    finished_at=now,
                    error_message=f"stalled: {reason}",
                )
            ).rowcount
            if not closed:
                return None
            if info.fence != fence or info.status != RunStatus.RUNNING:
                # The execution path's redelivery already started the next attempt.
                return Stall(None, info.agent, info.queue, info.trigger, info.fence)
            exhausted = run_status == RunStatus.DEAD
            row = conn.execute(
                sa.update(runs_t)
                .where(runs_t.c.id == run_id, runs_t.c.fence == fence, runs_t.c.status == RunStatus.RUNNING)
                .values(
                    fence=runs_t.c.fence + 1,  # the stalled worker can no longer commit anything
                    status=run_status,
                    terminal_reason=Reason.ATTEMPTS_EXHAUSTED if exhausted else None,
                    error=f"attempt {attempt} stalled: {reason}",
                    lease_expires_at=None,
                    waiting_for=None,
                    not_before=None,
                    finished_at=now if run_status.terminal else None,
                )
                .returning(runs_t.c.status, runs_t.c.agent, runs_t.c.queue, runs_t.c.trigger, runs_t.c.fence)
            ).one()
            return Stall(RunStatus(row.status), row.agent, row.queue, row.trigger, row.fence)

    def queued_before(self, before: datetime, limit: int) -> list[tuple[str, str, datetime]]:
        """(run id, queue, queued_at) of runs `queued` since before `before` (run_stuck)."""
        with self.engine.connect() as conn:
            return [
                (r.id, r.queue, r.queued_at)
                for r in conn.execute(
                    sa.select(runs_t.c.id, runs_t.c.queue, runs_t.c.queued_at)
                    .where(runs_t.c.status == RunStatus.QUEUED, runs_t.c.queued_at < before)
                    .order_by(runs_t.c.queued_at)
                    .limit(limit)
                )
            ]

    def missed_ranges(
        self, names: Iterable[str], since: datetime
    ) -> dict[str, list[tuple[datetime, datetime]]]:
        """Ledger gaps (first, last slot) of these triggers ending at or after `since`: slots
        the scheduler's catch-up policy skipped on purpose."""
        wanted = list(names)
        if not wanted:
            return {}
        out: dict[str, list[tuple[datetime, datetime]]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(
                sa.select(missed_t.c.trigger, missed_t.c.first_slot, missed_t.c.last_slot).where(
                    in_values(conn, missed_t.c.trigger, wanted), missed_t.c.last_slot >= since
                )
            ):
                out.setdefault(r.trigger, []).append((r.first_slot, r.last_slot))
        return out

    def stalled_since(self, since: datetime) -> list[RunningAttempt]:
        """Attempts ended `stalled` after `since`, by the watchdog or by a redelivery."""
        query = (
            sa.select(*_ATTEMPT_COLUMNS, attempts_t.c.reason)
            .join(runs_t, runs_t.c.id == attempts_t.c.run_id)
            .where(attempts_t.c.status == AttemptStatus.STALLED, attempts_t.c.finished_at > since)
        )
        with self.engine.connect() as conn:
            return [_attempt(r) for r in conn.execute(query)]

    def dead_since(self, since: datetime) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(
                        runs_t.c.id,
                        runs_t.c.agent,
                        runs_t.c.trigger,
                        runs_t.c.attempt,
                        runs_t.c.error,
                        runs_t.c.terminal_reason,
                    ).where(runs_t.c.status == RunStatus.DEAD, runs_t.c.finished_at > since)
                )
            )

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(run_ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            return {
                r.id: r.status
                for r in conn.execute(
                    sa.select(runs_t.c.id, runs_t.c.status).where(in_values(conn, runs_t.c.id, ids))
                )
            }

    def run_states(self, run_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """(status, attempt) of these runs (a run pruned by retention is absent)."""
        ids = list(run_ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            return {
                r.id: (r.status, r.attempt)
                for r in conn.execute(
                    sa.select(runs_t.c.id, runs_t.c.status, runs_t.c.attempt).where(
                        in_values(conn, runs_t.c.id, ids)
                    )
                )
            }

    def by_keys(self, keys: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
        """(status, started_at) of the runs with these idempotency keys."""
        wanted = list(keys)
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            return {
                r.idempotency_key: (r.status, r.started_at)
                for r in conn.execute(
                    sa.select(runs_t.c.idempotency_key, runs_t.c.status, runs_t.c.started_at).where(
                        in_values(conn, runs_t.c.idempotency_key, wanted)
                    )
                )
            }

    def failing_sources(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {
                r.name: r.state
                for r in conn.execute(
                    sa.select(state_t.c.name, state_t.c.state).where(state_t.c.source_failing.is_(True))
                )
            }

    def trigger_states(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(names)
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            return {
                r.name: r.state
                for r in conn.execute(
                    sa.select(state_t.c.name, state_t.c.state).where(in_values(conn, state_t.c.name, wanted))
                )
            }
