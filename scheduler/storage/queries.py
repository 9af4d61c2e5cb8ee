"""Read-only queries over runs and attempts: what the CLI lists and shows, and the run a
worker loads to judge a delivery it could not start. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.core.vocabulary import RunStatus
from scheduler.storage._sql import StoreGroup, attempts_t, runs_t
from scheduler.storage.models import Attempt, Run


@dataclass(frozen=True, slots=True)
class EndedRun:
    """A run that reached a terminal state, as an alert about it names it."""

    id: str
    agent: str
    trigger: str | None
    attempt: int
    terminal_reason: str | None
    usage: dict[str, Any] | None
    finished_at: datetime | None


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
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Newest first (`runs list`, and the runs a bulk action acts on), optionally of one
        status, trigger, agent or agent version (the version a run started with), created
        at or after `since`."""
        stmt = sa.select(Run).order_by(runs_t.c.created_at.desc(), runs_t.c.id).limit(limit)
        if since is not None:
            stmt = stmt.where(runs_t.c.created_at >= since)
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

    def runs_by_keys(self, keys: list[str]) -> dict[str, Run]:
        """The runs with these idempotency keys (a backfill's slots), by key."""
        out: dict[str, Run] = {}
        with Session(self.engine, expire_on_commit=False) as session:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                out.update(
                    (r.idempotency_key, r)
                    for r in session.scalars(sa.select(Run).where(runs_t.c.idempotency_key.in_(chunk)))
                )
        return out

    def statuses_of(self, run_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """run id -> (status, waiting_for), for a backfill waiting for its active runs; a run
        that is gone (pruned, deleted) is not in the answer."""
        if not run_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(runs_t.c.id, runs_t.c.status, runs_t.c.waiting_for).where(runs_t.c.id.in_(run_ids))
            )
            return {r.id: (r.status, r.waiting_for) for r in rows}

    def active_runs_of(self, agents: list[str] | None, statuses: tuple[str, ...]) -> list[str]:
        """Ids of the runs of `agents` (None: every agent) in `statuses` (a pause's
        `--cancel-running`)."""
        stmt = sa.select(runs_t.c.id).where(runs_t.c.status.in_(statuses))
        if agents is not None:
            stmt = stmt.where(runs_t.c.agent.in_(agents))
        with self.engine.connect() as conn:
            return list(conn.scalars(stmt))

    def attempts_of(self, run_id: str) -> list[Attempt]:
        """A run's attempts in order (`runs show`)."""
        stmt = sa.select(Attempt).where(attempts_t.c.run_id == run_id).order_by(attempts_t.c.number)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    def budget_exceeded_since(self, since: datetime) -> list[EndedRun]:
        """Runs that ended `budget_exceeded` after `since` (the watchdog's
        run_budget_exceeded, found as it finds newly dead runs)."""
        stmt = sa.select(
            runs_t.c.id,
            runs_t.c.agent,
            runs_t.c.trigger,
            runs_t.c.attempt,
            runs_t.c.terminal_reason,
            runs_t.c.usage,
            runs_t.c.finished_at,
        ).where(runs_t.c.status == RunStatus.BUDGET_EXCEEDED, runs_t.c.finished_at > since)
        with self.engine.connect() as conn:
            return [
                EndedRun(
                    r.id,
                    r.agent,
                    r.trigger,
                    r.attempt,
                    r.terminal_reason,
                    r.usage if isinstance(r.usage, dict) else None,
                    r.finished_at,
                )
                for r in conn.execute(stmt)
            ]

    def runs_created_per_agent(self, since: datetime) -> dict[str, int]:
        """How many runs each agent got created at or after `since` (`agents list`)."""
        stmt = (
            sa.select(runs_t.c.agent, sa.func.count())
            .where(runs_t.c.created_at >= since)
            .group_by(runs_t.c.agent)
        )
        with self.engine.connect() as conn:
            return {agent: int(n) for agent, n in conn.execute(stmt)}
