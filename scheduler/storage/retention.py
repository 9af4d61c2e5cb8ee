"""Retention: old history is deleted in the background, in small batches.

Only finished runs are pruned (with their attempts, steps and log lines, by the foreign key's
ON DELETE CASCADE); a run still waiting or running is never touched, however
old. Each call deletes at most `batch` rows per table so a large backlog is
worked off over many sweeps without long locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scheduler.core.vocabulary import TERMINAL_STATUSES
from scheduler.storage.dialect import in_values
from scheduler.storage.models import Alert, Attempt, DeadLetter, MissedSlot, Run, RunLog, Step

runs_t = cast(sa.Table, Run.__table__)
attempts_t = cast(sa.Table, Attempt.__table__)
steps_t = cast(sa.Table, Step.__table__)
logs_t = cast(sa.Table, RunLog.__table__)
alerts_t = cast(sa.Table, Alert.__table__)
dead_t = cast(sa.Table, DeadLetter.__table__)
missed_t = cast(sa.Table, MissedSlot.__table__)


@dataclass
class Pruned:
    runs: int = 0
    alerts: int = 0
    dead_letters: int = 0
    missed_slots: int = 0

    @property
    def total(self) -> int:
        return self.runs + self.alerts + self.dead_letters + self.missed_slots


def prune(engine: Engine, before: datetime, batch: int = 1000) -> Pruned:
    """Delete one batch of each kind of history older than `before`."""
    out = Pruned()
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.select(runs_t.c.id)
                .where(runs_t.c.status.in_(TERMINAL_STATUSES), runs_t.c.finished_at < before)
                .limit(batch)
            ).scalars()
        )
        if ids:
            # SQLite enforces the cascade only with foreign_keys=ON; delete the children explicitly.
            conn.execute(sa.delete(attempts_t).where(in_values(conn, attempts_t.c.run_id, ids)))
            conn.execute(sa.delete(steps_t).where(in_values(conn, steps_t.c.run_id, ids)))
            conn.execute(sa.delete(logs_t).where(in_values(conn, logs_t.c.run_id, ids)))
            out.runs = conn.execute(sa.delete(runs_t).where(in_values(conn, runs_t.c.id, ids))).rowcount
        for table, column, field in (
            (alerts_t, alerts_t.c.created_at, "alerts"),
            (dead_t, dead_t.c.created_at, "dead_letters"),
            (missed_t, missed_t.c.recorded_at, "missed_slots"),
        ):
            key = next(iter(table.primary_key.columns))
            victims = sa.select(key).where(column < before).limit(batch).scalar_subquery()
            setattr(out, field, conn.execute(sa.delete(table).where(key.in_(victims))).rowcount)
    return out
