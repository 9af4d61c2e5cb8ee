"""A run's durable steps: the record a later attempt replays instead of calling again.

A step is written in one transaction with the run's usage so far, and only while the
writer's fence still holds the run: the fenced UPDATE of the run comes first (on
PostgreSQL it locks the row, so a takeover that takes a new fence waits for it or makes it
match nothing), then the step row. A stale attempt's step is refused like its final commit,
so an attempt that was declared stalled and replaced cannot plant an answer the new attempt
would replay.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from agents import StepRecord
from scheduler.core.values import StartedAttempt
from scheduler.core.vocabulary import AttemptStatus, RunStatus
from scheduler.storage._sql import StoreGroup, attempts_t, runs_t, steps_t


class StepStore(StoreGroup):
    """Read a run's steps; record one, fenced."""

    def steps_of(self, run_id: str) -> list[StepRecord]:
        """Every recorded step of `run_id`, in call order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(steps_t).where(steps_t.c.run_id == run_id).order_by(steps_t.c.seq)
            ).all()
        return [
            StepRecord(
                seq=row.seq,
                name=row.name,
                result=row.result,
                attempt=row.attempt,
                occurrence=row.occurrence,
                usage=dict(row.usage or {}),
                started_at=row.started_at,
                finished_at=row.finished_at,
            )
            for row in rows
        ]

    def record_step(
        self,
        started: StartedAttempt,
        step: StepRecord,
        *,
        run_usage: dict[str, Any],
        attempt_usage: dict[str, Any],
    ) -> bool:
        """Write `step` and the usage so far if `started` still holds the run; False (and
        nothing written) when a newer attempt does.

        A retry of a write whose commit landed before its connection broke finds its own row
        (same run, name, occurrence and attempt) and counts as written."""
        try:
            with self.engine.begin() as conn:
                return _write_step(conn, started, step, run_usage, attempt_usage)
        except IntegrityError:
            if self._step_landed(started, step):
                return True
            raise

    def _step_landed(self, started: StartedAttempt, step: StepRecord) -> bool:
        with self.engine.connect() as conn:
            attempt = conn.execute(
                sa.select(steps_t.c.attempt).where(
                    steps_t.c.run_id == started.run_id,
                    steps_t.c.name == step.name,
                    steps_t.c.occurrence == step.occurrence,
                )
            ).scalar()
        return attempt == started.attempt


def _write_step(
    conn: Connection,
    started: StartedAttempt,
    step: StepRecord,
    run_usage: dict[str, Any],
    attempt_usage: dict[str, Any],
) -> bool:
    """The fenced UPDATE of the run first (it locks the row), then the step, then the
    attempt's usage; False when the fence no longer holds."""
    held = conn.execute(
        sa.update(runs_t)
        .where(
            runs_t.c.id == started.run_id,
            runs_t.c.fence == started.fence,
            runs_t.c.status == RunStatus.RUNNING,
        )
        .values(usage=run_usage)
        .returning(runs_t.c.id)
    ).first()
    if held is None:
        return False
    conn.execute(
        sa.insert(steps_t).values(
            run_id=started.run_id,
            seq=step.seq,
            name=step.name,
            occurrence=step.occurrence,
            attempt=step.attempt,
            result=step.result,
            usage=step.usage,
            started_at=step.started_at,
            finished_at=step.finished_at,
        )
    )
    conn.execute(
        sa.update(attempts_t)
        .where(
            attempts_t.c.run_id == started.run_id,
            attempts_t.c.number == started.attempt,
            attempts_t.c.status == AttemptStatus.RUNNING,
        )
        .values(usage=attempt_usage)
    )
    return True
