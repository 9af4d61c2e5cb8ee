"""Read-only queries over runs and attempts: what the CLI lists and shows, and the run a
worker loads to judge a delivery it could not start. Nothing here writes."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.storage._sql import StoreGroup, attempts_t, runs_t
from scheduler.storage.models import Attempt, Run


class Queries(StoreGroup):
    """Runs and their attempts as ORM rows, detached from their session."""

    def get_run(self, run_id: str) -> Run | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Run, run_id)

    def list_runs(
        self,
        *,
        status: str | None = None,
        trigger: str | None = None,
        agent: str | None = None,
        version: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Newest first (`runs list`), optionally of one status, trigger, agent or agent
        version (the version a run started with)."""
        stmt = sa.select(Run).order_by(runs_t.c.created_at.desc(), runs_t.c.id).limit(limit)
        for column, value in (
            (runs_t.c.status, status),
            (runs_t.c.trigger, trigger),
            (runs_t.c.agent, agent),
            (runs_t.c.agent_version, version),
        ):
            if value:
                stmt = stmt.where(column == value)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    def attempts_of(self, run_id: str) -> list[Attempt]:
        """A run's attempts in order (`runs show`)."""
        stmt = sa.select(Attempt).where(attempts_t.c.run_id == run_id).order_by(attempts_t.c.number)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))
