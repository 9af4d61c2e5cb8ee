"""Alert rows: the history, and the unique key that makes sending idempotent.

An episode is one firing of a `dedupe_key` until it resolves; the next firing
of the same key is episode + 1. Every replica that detects an episode inserts
the same (dedupe_key, episode, state) row; the insert that wins sends, the
others do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from scheduler.core.vocabulary import AlertState
from scheduler.storage.dialect import Dialect
from scheduler.storage.models import Alert as AlertRow

alerts_t = cast(sa.Table, AlertRow.__table__)


class ChannelOutcome(StrEnum):
    """`alerts.channels[<channel>]`: how sending through one channel ended (a failure is
    stored as `failed: <error>`), and the outcome label of the alerts-sent metric."""

    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OpenEpisode:
    id: int
    dedupe_key: str
    episode: int
    created_at: datetime
    reminded_at: datetime | None
    run_id: str | None
    trigger: str | None


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _latest(self, conn: sa.Connection, dedupe_key: str) -> list[sa.Row[Any]]:
        top = (
            sa.select(sa.func.max(alerts_t.c.episode))
            .where(alerts_t.c.dedupe_key == dedupe_key)
            .scalar_subquery()
        )
        return list(
            conn.execute(
                sa.select(
                    alerts_t.c.id,
                    alerts_t.c.episode,
                    alerts_t.c.state,
                    alerts_t.c.created_at,
                    alerts_t.c.reminded_at,
                    alerts_t.c.run_id,
                    alerts_t.c.trigger,
                ).where(alerts_t.c.dedupe_key == dedupe_key, alerts_t.c.episode == top)
            )
        )

    def episode(self, dedupe_key: str) -> tuple[OpenEpisode | None, int]:
        """One read: the still-firing episode of this key (if any), and the number the next
        episode would get."""
        with self.engine.connect() as conn:
            rows = self._latest(conn, dedupe_key)
        if not rows:
            return None, 0
        if any(r.state == AlertState.RESOLVED for r in rows):
            return None, rows[0].episode + 1
        r = next(r for r in rows if r.state == AlertState.FIRING)
        return (
            OpenEpisode(r.id, dedupe_key, r.episode, r.created_at, r.reminded_at, r.run_id, r.trigger),
            r.episode + 1,
        )

    def insert(self, values: dict[str, Any]) -> int | None:
        """Insert one alert event; None when another replica inserted it first."""
        with self.engine.begin() as conn:
            stmt = (
                Dialect.of(conn)
                .insert(alerts_t)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["dedupe_key", "episode", "state"])
                .returning(alerts_t.c.id)
            )
            return conn.execute(stmt).scalar()

    def claim_reminder(self, alert_id: int, now: datetime, repeat: timedelta) -> bool:
        """True for exactly one caller once `repeat` has passed since the last send."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    sa.update(alerts_t)
                    .where(
                        alerts_t.c.id == alert_id,
                        alerts_t.c.acked_at.is_(None),  # acknowledged: no more reminders
                        sa.func.coalesce(alerts_t.c.reminded_at, alerts_t.c.created_at) <= now - repeat,
                    )
                    .values(reminded_at=now)
                ).rowcount
                == 1
            )

    def ack(self, alert_id: int, by: str, reason: str | None, now: datetime) -> AlertRow:
        """Acknowledge the episode `alert_id` belongs to (its firing row is marked): it stays
        open until its cause ends, and sends no more reminders. Raises LookupError for an
        unknown id and ValueError for an episode that already resolved."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(AlertRow, alert_id)
            if row is None:
                raise LookupError(f"no alert with id {alert_id}; list them with `nightowl alerts list`")
            episode = list(
                session.scalars(
                    sa.select(AlertRow).where(
                        AlertRow.dedupe_key == row.dedupe_key, AlertRow.episode == row.episode
                    )
                )
            )
            if any(r.state == AlertState.RESOLVED for r in episode):
                raise ValueError(f"alert {alert_id} ({row.kind}) already resolved; nothing to acknowledge")
            firing = next(r for r in episode if r.state == AlertState.FIRING)
            if firing.acked_at is None:
                firing.acked_at, firing.acked_by, firing.ack_reason = now, by, reason
            return firing

    def open_alerts(self, limit: int = 500, kind: str | None = None) -> list[AlertRow]:
        """Firing rows whose episode has not resolved, newest first (`alerts list --open`)."""
        resolved = alerts_t.alias("resolved")
        ids = (
            sa.select(alerts_t.c.id)
            .outerjoin(
                resolved,
                sa.and_(
                    resolved.c.dedupe_key == alerts_t.c.dedupe_key,
                    resolved.c.episode == alerts_t.c.episode,
                    resolved.c.state == AlertState.RESOLVED,
                ),
            )
            .where(alerts_t.c.state == AlertState.FIRING, resolved.c.id.is_(None))
        )
        if kind is not None:
            ids = ids.where(alerts_t.c.kind == kind)
        query = sa.select(AlertRow).where(AlertRow.id.in_(ids)).order_by(AlertRow.id.desc()).limit(limit)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def record_channel(self, alert_id: int, channel: str, outcome: str, now: datetime) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(AlertRow, alert_id, with_for_update=True)
            if row is None:
                return
            row.channels = {**(row.channels or {}), channel: outcome}
            if outcome == ChannelOutcome.SENT and row.sent_at is None:
                row.sent_at = now

    def open_of_kind(self, kind: str) -> list[OpenEpisode]:
        """Every firing episode of `kind` without its resolved row (O(open alerts))."""
        resolved = alerts_t.alias("resolved")
        query = (
            sa.select(
                alerts_t.c.id,
                alerts_t.c.dedupe_key,
                alerts_t.c.episode,
                alerts_t.c.created_at,
                alerts_t.c.reminded_at,
                alerts_t.c.run_id,
                alerts_t.c.trigger,
            )
            .outerjoin(
                resolved,
                sa.and_(
                    resolved.c.dedupe_key == alerts_t.c.dedupe_key,
                    resolved.c.episode == alerts_t.c.episode,
                    resolved.c.state == AlertState.RESOLVED,
                ),
            )
            .where(alerts_t.c.kind == kind, alerts_t.c.state == AlertState.FIRING, resolved.c.id.is_(None))
        )
        with self.engine.connect() as conn:
            return [
                OpenEpisode(r.id, r.dedupe_key, r.episode, r.created_at, r.reminded_at, r.run_id, r.trigger)
                for r in conn.execute(query)
            ]

    def history(
        self, *, limit: int = 50, kind: str | None = None, state: str | None = None
    ) -> list[AlertRow]:
        query = sa.select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if kind:
            query = query.where(AlertRow.kind == kind)
        if state:
            query = query.where(AlertRow.state == state)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))
