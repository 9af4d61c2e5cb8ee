"""The agent's `ctx.log` lines, per attempt (`nightowl runs logs`): written in batches with
the attempt's heartbeats and at its end, so `--follow` sees a running agent's lines within a
heartbeat, and a killed worker loses at most one heartbeat's worth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from scheduler.storage._sql import StoreGroup, logs_t


@dataclass(frozen=True, slots=True)
class LogLine:
    attempt: int
    seq: int
    at: datetime
    level: str
    message: str


class RunLogStore(StoreGroup):
    def record_logs(self, run_id: str, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(logs_t),
                [
                    {
                        "run_id": run_id,
                        "attempt": line.attempt,
                        "seq": line.seq,
                        "at": line.at,
                        "level": line.level,
                        "message": line.message,
                    }
                    for line in lines
                ],
            )

    def logs_of(
        self, run_id: str, *, attempt: int | None = None, after: tuple[int, int] | None = None
    ) -> list[LogLine]:
        """The lines in (attempt, seq) order; `after=(attempt, seq)` for following a running
        attempt. The cursor is the lines' own order, not the row id: on PostgreSQL ids come
        from a sequence and two batches can commit in the other order, so a follower paging
        by id could skip the batch that committed second."""
        stmt = sa.select(logs_t).where(logs_t.c.run_id == run_id).order_by(logs_t.c.attempt, logs_t.c.seq)
        if attempt is not None:
            stmt = stmt.where(logs_t.c.attempt == attempt)
        if after is not None:
            stmt = stmt.where(
                sa.or_(
                    logs_t.c.attempt > after[0],
                    sa.and_(logs_t.c.attempt == after[0], logs_t.c.seq > after[1]),
                )
            )
        with self.engine.connect() as conn:
            return [LogLine(r.attempt, r.seq, r.at, r.level, r.message) for r in conn.execute(stmt)]
