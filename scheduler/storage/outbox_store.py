"""Outbox rows: written with a run's success, claimed and settled by relays.

Statuses: `pending` (a live claim makes it "claimed"), `delivered`, `dead`.

Every claim counts as an attempt, whether or not the relay lived to report an outcome:
a row whose claims keep expiring unsettled (its delivery kills the relay) goes `dead`
after `max_attempts` like one whose sink keeps failing. A stored value that is not
JSON (a row written by hand, or NaN stored before values were checked) goes `dead` at
once, with the reason, instead of failing every claim.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from agents.outbox import OutboxWrite
from scheduler.core.scrub import scrub_text
from scheduler.core.vocabulary import OutboxStatus
from scheduler.outbox.abc import Entry
from scheduler.storage.dialect import Dialect, in_values
from scheduler.storage.models import OutboxEntry, OutboxKey

outbox_t = cast(sa.Table, OutboxEntry.__table__)
keys_t = cast(sa.Table, OutboxKey.__table__)

# Not a status: a `pending` row under a live claim (counted apart by `OutboxStore.status`).
CLAIMED = "claimed"
# The counts `OutboxStore.status` gives per sink, in the order `nightowl outbox status` shows.
STATUS_COUNTS: tuple[str, ...] = (OutboxStatus.PENDING, CLAIMED, OutboxStatus.DELIVERED, OutboxStatus.DEAD)


def insert_writes(conn: Connection, run_id: str, writes: Sequence[OutboxWrite], now: datetime) -> int:
    """Inside the run's fenced success transaction: number and insert its writes.

    Keys are locked in sorted order (no deadlock between two runs touching the
    same keys) by bumping their counter rows; a concurrent run writing the same
    key waits for our commit, so sequence order is commit order.
    """
    if not writes:
        return 0
    per_key: dict[tuple[str, str], int] = defaultdict(int)
    for w in writes:
        per_key[(w.sink, w.key)] += 1
    last: dict[tuple[str, str], int] = {}
    insert = Dialect.of(conn).insert
    for (sink, key), n in sorted(per_key.items()):
        stmt = insert(keys_t).values(sink=sink, key=key, last_seq=n)
        stmt = stmt.on_conflict_do_update(
            index_elements=["sink", "key"], set_={"last_seq": keys_t.c.last_seq + n}
        )
        last[(sink, key)] = int(conn.execute(stmt.returning(keys_t.c.last_seq)).scalar_one())
    next_seq = {k: last[k] - per_key[k] + 1 for k in per_key}
    rows = []
    for i, w in enumerate(writes):
        seq = next_seq[(w.sink, w.key)]
        next_seq[(w.sink, w.key)] = seq + 1
        rows.append(
            {
                "id": f"{run_id}:{i}",
                "run_id": run_id,
                "sink": w.sink,
                "key": w.key,
                "seq": seq,
                "value": w.value,
                "status": OutboxStatus.PENDING,
                "attempts": 0,
                "created_at": now,
            }
        )
    conn.execute(sa.insert(outbox_t), rows)
    return len(rows)


def stored_error(text: str) -> str:
    """An error fit for `last_error`: scrubbed of secrets (a webhook URL's path, a URL's
    password), without NUL characters (PostgreSQL text refuses them), bounded."""
    return scrub_text(text).replace("\x00", "\\x00")[:2000]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_value(raw: str | None) -> Any:
    """A stored value, decoded strictly: NaN, Infinity or broken JSON raise ValueError."""
    if raw is None:
        raise ValueError("the value is NULL")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        shown = raw if len(raw) <= 80 else raw[:77] + "..."
        raise ValueError(f"not valid JSON ({exc}): {shown!r}") from None


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim gave this relay, and the rows it found undeliverable (now dead)."""

    entries: list[Entry]
    dead: list[str]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def backoff(attempts: int, base: float = 1.0, cap: float = 300.0) -> timedelta:
    """Exponential with full jitter: many failing rows do not retry in lockstep."""
    return timedelta(seconds=random.uniform(0, min(cap, base * 2 ** max(0, attempts - 1))))  # noqa: S311


class OutboxStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(
        self, relay: str, now: datetime, ttl: timedelta, limit: int, max_attempts: int | None = None
    ) -> Claimed:
        """Claim due rows: only the oldest undelivered entry of each (sink, key) is eligible.

        PostgreSQL: `FOR UPDATE SKIP LOCKED`, and the claim is set in the same
        transaction, so relays share the work and an expired claim is taken over.
        SQLite: the write transaction serialises claimers (one relay is expected).

        A row whose last claim expired unsettled (its relay died, maybe because of it) is
        a suspect: it is claimed alone, so its batch-mates are not charged for its crashes,
        and once it has used `max_attempts` claims it goes dead instead. A claimed row
        whose stored value does not decode goes dead too (nothing can deliver it).
        """
        older = outbox_t.alias("older")
        blocked = (
            sa.select(older.c.id)
            .where(
                older.c.sink == outbox_t.c.sink,
                older.c.key == outbox_t.c.key,
                older.c.seq < outbox_t.c.seq,
                older.c.status == OutboxStatus.PENDING,
            )
            .exists()
        )
        candidates = (
            sa.select(outbox_t.c.id, outbox_t.c.claim_expires, outbox_t.c.attempts)
            .where(
                outbox_t.c.status == OutboxStatus.PENDING,
                sa.or_(outbox_t.c.next_attempt_at.is_(None), outbox_t.c.next_attempt_at <= now),
                sa.or_(outbox_t.c.claim_expires.is_(None), outbox_t.c.claim_expires < now),
                ~blocked,
            )
            .order_by(outbox_t.c.created_at, outbox_t.c.id)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            found = conn.execute(Dialect.of(conn).skip_locked(candidates, outbox_t)).all()
            errors = {
                r.id: f"claimed {r.attempts} times and never settled: the relay "
                "delivering it died each time (a sink that crashes or kills the "
                "relay process on this entry?); see the relay's log, then "
                "`nightowl outbox retry --dead`"
                for r in found
                if r.claim_expires is not None and max_attempts is not None and r.attempts >= max_attempts
            }
            rest = [r for r in found if r.id not in errors]
            suspects = [r.id for r in rest if r.claim_expires is not None]
            ids = suspects[:1] or [r.id for r in rest]
            rows = (
                list(
                    conn.execute(
                        sa.update(outbox_t)
                        .where(in_values(conn, outbox_t.c.id, ids))
                        .values(claimed_by=relay, claim_expires=now + ttl, attempts=outbox_t.c.attempts + 1)
                        .returning(
                            outbox_t.c.id,
                            outbox_t.c.run_id,
                            outbox_t.c.sink,
                            outbox_t.c.key,
                            outbox_t.c.seq,
                            sa.cast(outbox_t.c.value, sa.Text).label("raw"),
                            outbox_t.c.attempts,
                        )
                    )
                )
                if ids
                else []
            )
            entries: list[Entry] = []
            for r in rows:
                try:
                    value = decode_value(r.raw)
                except ValueError as exc:
                    errors[r.id] = (
                        f"the stored value cannot be delivered: {exc}; fix the "
                        "row's value and run `nightowl outbox retry --dead`"
                    )
                    continue
                entries.append(Entry(r.id, r.run_id, r.sink, r.key, r.seq, value, r.attempts))
            for entry_id, error in errors.items():
                conn.execute(
                    sa.update(outbox_t)
                    .where(outbox_t.c.id == entry_id)
                    .values(
                        status=OutboxStatus.DEAD,
                        dead_at=now,
                        claimed_by=None,
                        claim_expires=None,
                        next_attempt_at=None,
                        last_error=stored_error(error),
                    )
                )
        return Claimed(sorted(entries, key=lambda e: (e.sink, e.key, e.seq)), list(errors))

    def extend(self, relay: str, ids: Sequence[str], expires: datetime) -> set[str]:
        """Push our claim on `ids` to `expires`; the ids we still hold (a row another relay
        took over, or that was settled, is not ours any more)."""
        if not ids:
            return set()
        with self.engine.begin() as conn:
            return set(
                conn.execute(
                    sa.update(outbox_t)
                    .where(
                        in_values(conn, outbox_t.c.id, ids),
                        outbox_t.c.claimed_by == relay,
                        outbox_t.c.status == OutboxStatus.PENDING,
                    )
                    .values(claim_expires=expires)
                    .returning(outbox_t.c.id)
                ).scalars()
            )

    def delivered(self, relay: str, ids: Sequence[str], now: datetime) -> int:
        if not ids:
            return 0
        with self.engine.begin() as conn:
            return conn.execute(
                sa.update(outbox_t)
                .where(
                    in_values(conn, outbox_t.c.id, ids),
                    outbox_t.c.claimed_by == relay,
                    outbox_t.c.status == OutboxStatus.PENDING,
                )
                .values(
                    status=OutboxStatus.DELIVERED,
                    delivered_at=now,
                    claimed_by=None,
                    claim_expires=None,
                    last_error=None,
                )
            ).rowcount

    def failed(
        self, relay: str, failures: Sequence[tuple[Entry, str]], now: datetime, max_attempts: int
    ) -> list[str]:
        """Schedule retries with backoff; rows past `max_attempts` go dead. The dead ids."""
        dead: list[str] = []
        with self.engine.begin() as conn:
            for entry, error in failures:
                exhausted = entry.attempts >= max_attempts
                conn.execute(
                    sa.update(outbox_t)
                    .where(
                        outbox_t.c.id == entry.id,
                        outbox_t.c.claimed_by == relay,
                        outbox_t.c.status == OutboxStatus.PENDING,
                    )
                    .values(
                        status=OutboxStatus.DEAD if exhausted else OutboxStatus.PENDING,
                        dead_at=now if exhausted else None,
                        next_attempt_at=None if exhausted else now + backoff(entry.attempts),
                        claimed_by=None,
                        claim_expires=None,
                        last_error=stored_error(error),
                    )
                )
                if exhausted:
                    dead.append(entry.id)
        return dead

    def status(self, now: datetime) -> dict[str, dict[str, Any]]:
        """Per sink: pending, claimed, delivered, dead, and the oldest pending row's age."""
        claimed = sa.and_(outbox_t.c.status == OutboxStatus.PENDING, outbox_t.c.claim_expires > now)
        query = sa.select(
            outbox_t.c.sink,
            *(
                sa.func.count().filter(outbox_t.c.status == status).label(status)
                for status in (OutboxStatus.PENDING, OutboxStatus.DELIVERED, OutboxStatus.DEAD)
            ),
            sa.func.count().filter(claimed).label(CLAIMED),
            sa.func.min(outbox_t.c.created_at)
            .filter(outbox_t.c.status == OutboxStatus.PENDING)
            .label("oldest"),
        ).group_by(outbox_t.c.sink)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                oldest = r.oldest
                if isinstance(oldest, str):  # SQLite aggregates lose the column type
                    oldest = datetime.fromisoformat(oldest)
                if oldest is not None and oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=now.tzinfo)
                out[r.sink] = {
                    **{count: r._mapping[count] for count in STATUS_COUNTS},
                    "oldest_pending_age_s": round((now - oldest).total_seconds(), 3)
                    if oldest is not None
                    else None,
                }
        return out

    def count_dead(self, sink: str | None) -> int:
        with self.engine.connect() as conn:
            stmt = (
                sa.select(sa.func.count()).select_from(outbox_t).where(outbox_t.c.status == OutboxStatus.DEAD)
            )
            if sink:
                stmt = stmt.where(outbox_t.c.sink == sink)
            return int(conn.execute(stmt).scalar_one())

    def retry_dead(self, sink: str | None, now: datetime, limit: int | None = None) -> int:
        """Requeue dead rows (attempts reset); at most `limit` per call, so a large backlog is
        requeued in short transactions that do not hold the relays up."""
        with self.engine.begin() as conn:
            dead = sa.select(outbox_t.c.id).where(outbox_t.c.status == OutboxStatus.DEAD)
            if sink:
                dead = dead.where(outbox_t.c.sink == sink)
            if limit is not None:
                dead = dead.limit(limit)
            stmt = sa.update(outbox_t).where(outbox_t.c.id.in_(dead.scalar_subquery()))
            return conn.execute(
                stmt.values(
                    status=OutboxStatus.PENDING,
                    attempts=0,
                    dead_at=None,
                    next_attempt_at=now,
                    last_error=None,
                )
            ).rowcount

    def dead_since(self, since: datetime) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(
                        outbox_t.c.id,
                        outbox_t.c.run_id,
                        outbox_t.c.sink,
                        outbox_t.c.key,
                        outbox_t.c.attempts,
                        outbox_t.c.last_error,
                    ).where(outbox_t.c.status == OutboxStatus.DEAD, outbox_t.c.dead_at > since)
                )
            )

    def prune(self, before: datetime, limit: int = 1000) -> int:
        """Delete delivered rows older than `before`, one batch (the audit sink is the record)."""
        with self.engine.begin() as conn:
            ids = (
                sa.select(outbox_t.c.id)
                .where(outbox_t.c.status == OutboxStatus.DELIVERED, outbox_t.c.delivered_at < before)
                .limit(limit)
            )
            return conn.execute(sa.delete(outbox_t).where(outbox_t.c.id.in_(ids.scalar_subquery()))).rowcount

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(outbox_t).order_by(outbox_t.c.created_at, outbox_t.c.id)))
