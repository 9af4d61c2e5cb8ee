"""Dead letters: messages that could not become an attempt (scheduler/worker/deadletters.py
records them; `nightowl deadletters list` reads them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from scheduler.storage._sql import StoreGroup, dead_t
from scheduler.storage.models import DeadLetter


class DeadLetterStore(StoreGroup):
    """The dead_letters table: one row per message that Celery would have discarded."""

    def add_dead_letter(
        self,
        *,
        reason: str,
        task_name: str | None,
        task_id: str | None,
        payload: str | None,
        details: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(dead_t).values(
                    reason=reason,
                    task_name=task_name,
                    task_id=task_id,
                    payload=payload,
                    details=details,
                    created_at=now,
                )
            )

    def list_dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """Newest first."""
        stmt = sa.select(DeadLetter).order_by(dead_t.c.created_at.desc(), dead_t.c.id.desc())
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt.limit(limit)))
