"""The pauses table: who paused which trigger or agent, why, and how its missed work goes.

A resume deletes the row and, for an agent, lets its `waiting/paused` runs go in the same
transaction (or ends them `skipped/paused` with `skip_pending`), so nothing a pause held is
stranded. A worker parks a run only while the pause row still exists (`park_paused`), so a
worker whose cached view is a second old cannot park a run after the resume released the
others.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from scheduler.core.pauses import ALL, MissedOnPause, PauseRecord, Pauses, PauseScope, PendingOnPause
from scheduler.core.vocabulary import Reason, RunStatus, WaitingFor
from scheduler.storage._sql import StoreGroup, pauses_t, runs_t


def _record(row: sa.Row[tuple[object, ...]]) -> PauseRecord:
    m = row._mapping
    return PauseRecord(
        scope=PauseScope(m["scope"]),
        name=m["name"],
        paused_at=m["paused_at"],
        reason=m["reason"],
        paused_by=m["paused_by"],
        missed=MissedOnPause(m["missed"]),
        pending=PendingOnPause(m["pending"]),
    )


def _agent_paused(agent: str) -> sa.Exists:
    return (
        sa.select(pauses_t.c.name)
        .where(pauses_t.c.scope == PauseScope.AGENT.value, pauses_t.c.name.in_((agent, ALL)))
        .exists()
    )


class PauseStore(StoreGroup):
    """Pausing and resuming triggers and agents, and the worker's park of a paused run."""

    def pauses(self) -> Pauses:
        """Every pause now (one small SELECT: the scheduler runs it each tick)."""
        with self.engine.connect() as conn:
            return Pauses.of(_record(r) for r in conn.execute(sa.select(pauses_t)))

    def pause(self, record: PauseRecord) -> PauseRecord:
        """Pause `record.name` (or every one with `name='*'`). Pausing what is paused
        keeps its original time and takes the new reason and policies."""
        values = {
            "reason": record.reason,
            "paused_by": record.paused_by,
            "missed": record.missed.value,
            "pending": record.pending.value,
        }
        key = (pauses_t.c.scope == record.scope.value, pauses_t.c.name == record.name)
        for _ in range(3):  # two operators pausing at once: the loser updates the winner's row
            try:
                with self.engine.begin() as conn:
                    if not conn.execute(sa.update(pauses_t).where(*key).values(**values)).rowcount:
                        conn.execute(
                            sa.insert(pauses_t).values(
                                scope=record.scope.value,
                                name=record.name,
                                paused_at=record.paused_at,
                                **values,
                            )
                        )
                    return _record(conn.execute(sa.select(pauses_t).where(*key)).one())
            except IntegrityError:
                continue
        raise RuntimeError(f"pausing {record.scope.value} {record.name!r} kept conflicting; try again")

    def resume(
        self, scope: PauseScope, name: str, now: datetime, *, skip_pending: bool = False
    ) -> tuple[PauseRecord | None, int]:
        """Delete the pause; for agents, release (or skip) the runs it held that no other
        pause still holds. Returns the pause that was deleted (None: it was not paused) and
        how many runs were released or skipped."""
        key = (pauses_t.c.scope == scope.value, pauses_t.c.name == name)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(pauses_t).where(*key)).first()
            if row is None and not skip_pending:
                return None, 0
            conn.execute(sa.delete(pauses_t).where(*key))
            moved = self._release(conn, name, now, skip_pending) if scope is PauseScope.AGENT else 0
            return (_record(row) if row is not None else None), moved

    def _release(self, conn: Connection, name: str, now: datetime, skip_pending: bool) -> int:
        still = {
            n
            for (n,) in conn.execute(
                sa.select(pauses_t.c.name).where(pauses_t.c.scope == PauseScope.AGENT.value)
            )
        }
        if ALL in still and not skip_pending:
            return 0  # every agent is still paused: its runs keep waiting
        held = [
            runs_t.c.status == RunStatus.WAITING,
            runs_t.c.waiting_for == WaitingFor.PAUSED,
        ]
        if name != ALL:
            held.append(runs_t.c.agent == name)
        if still and not skip_pending:
            held.append(runs_t.c.agent.not_in(sorted(still)))
        values: dict[str, object] = (
            {"status": RunStatus.SKIPPED, "terminal_reason": Reason.PAUSED, "finished_at": now}
            if skip_pending
            else {"not_before": now}
        )
        return int(conn.execute(sa.update(runs_t).where(*held).values(**values)).rowcount)

    def skip_paused(self, run_id: str, agent: str, now: datetime) -> bool:
        """End a run that has not started `skipped/paused` while its agent's pause row
        exists (a worker's view may be a second old: a resumed agent's run is not skipped)."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(runs_t)
                    .where(
                        runs_t.c.id == run_id,
                        runs_t.c.status.in_((RunStatus.PENDING, RunStatus.QUEUED, RunStatus.WAITING)),
                        _agent_paused(agent),
                    )
                    .values(status=RunStatus.SKIPPED, terminal_reason=Reason.PAUSED, finished_at=now)
                ).rowcount
                == 1
            )

    def park_paused(self, run_id: str, agent: str, until: datetime) -> bool:
        """Hold a run that has not started while its agent's pause row exists; False when
        the pause is gone (resumed since the worker's view was read): run it."""
        paused = _agent_paused(agent)
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(runs_t)
                    .where(
                        runs_t.c.id == run_id,
                        runs_t.c.status.in_((RunStatus.PENDING, RunStatus.QUEUED, RunStatus.WAITING)),
                        paused,
                    )
                    .values(status=RunStatus.WAITING, not_before=until, waiting_for=WaitingFor.PAUSED)
                ).rowcount
                == 1
            )
