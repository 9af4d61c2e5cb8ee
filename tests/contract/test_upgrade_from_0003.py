"""Upgrading a database filled at revision 0003 (the schema before issue 12) loses nothing.

A database at 0003 on SQLite and on PostgreSQL gets runs in every state, their attempts,
outbox rows (pending, delivered, dead), sequence counters, alerts, trigger states, missed
slots and dead letters; beside it, the sinks' stores as the previous version left them: a
Redis cache in the two-string format (`<prefix><key>` and `<prefix><key>:seq`) and an audit
table with `recorded_at`. Then `upgrade` brings the schema to head (every migration after
0003, whoever added it) and the relay delivers through today's sinks. Every row and every
column that existed before is still there with the same value, the new columns have their
defaults, the application reads the old rows, and the sinks' old data is converted in place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.outbox import RedisCacheSink, SqlAppendSink, register_sink
from scheduler.relay.service import Relay
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import current, head_revision, upgrade
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import Store
from tests.helpers import PG_ADMIN_URL, REDIS_URL, T0

pytestmark = pytest.mark.usefixtures("fresh_sinks")

# Columns a later migration rewrites on purpose: {(table, column)}. A migration that changes
# stored values must say so here (and the test should then check the new values itself).
REWRITTEN: set[tuple[str, str]] = set()

RUN_OK, RUN_QUEUED, RUN_WAITING, RUN_RUNNING = (str(uuid.UUID(int=n)) for n in range(1, 5))


@pytest.fixture(params=["sqlite", "postgresql"])
def url_0003(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own, migrated to 0003 only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        name = f"nightowl_upgrade_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine, "0003")
    assert current(engine) == "0003"
    engine.dispose()
    yield url
    if request.param == "postgresql":
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def at(engine: sa.Engine, minutes: float) -> datetime:
    """T0 + minutes, as each backend's 0003 columns store it (SQLite: naive UTC)."""
    value = T0 + timedelta(minutes=minutes)
    return value.replace(tzinfo=None) if engine.dialect.name == "sqlite" else value


def fill(engine: sa.Engine) -> None:
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables

    def run(run_id: str, key: str, status: str, **extra: Any) -> dict[str, Any]:
        row = {
            "id": run_id,
            "idempotency_key": key,
            "trigger": "digest",
            "agent": "digest",
            "queue": "agents",
            "status": status,
            "terminal_reason": None,
            "attempt": 1,
            "deliveries": 1,
            "fence": 1,
            "not_before": None,
            "logical_time": at(engine, 0),
            "event": {
                "trigger": "digest",
                "scheduled_for": "2026-03-01T12:00:00Z",
                "note": "caf\u00e9 \u2615",
            },
            "result": None,
            "error": None,
            "usage": None,
            "agent_version": "v1",
            "overlap_key": "digest",
            "overlap": "skip",
            "waiting_for": None,
            "last_heartbeat": None,
            "lease_expires_at": None,
            "created_at": at(engine, 0),
            "queued_at": at(engine, 0.1),
            "started_at": None,
            "finished_at": None,
        }
        row.update(extra)
        return row

    with engine.begin() as conn:
        conn.execute(
            sa.insert(t["runs"]),
            [
                run(
                    RUN_OK,
                    "cron:digest:2026-03-01T12:00:00Z",
                    "succeeded",
                    result={"summary": "ok", "n": 12},
                    usage={"tokens": 340, "cost_usd": 0.01},
                    started_at=at(engine, 0.2),
                    finished_at=at(engine, 1),
                    overlap_key=None,
                    last_heartbeat={"note": "fetched", "details": {"count": 12}},
                ),
                run(
                    RUN_QUEUED,
                    "cron:digest:2026-03-01T12:01:00Z",
                    "queued",
                    attempt=0,
                    deliveries=0,
                    fence=0,
                    overlap_key=None,
                ),
                run(
                    RUN_WAITING,
                    "manual:digest:retry-me",
                    "waiting",
                    not_before=at(engine, 5),
                    error="RuntimeError: upstream 503",
                    overlap_key=None,
                    attempt=1,
                ),
                run(
                    RUN_RUNNING,
                    "db:orders:42:7",
                    "running",
                    fence=3,
                    attempt=2,
                    deliveries=2,
                    lease_expires_at=at(engine, 2),
                    started_at=at(engine, 1),
                ),
            ],
        )
        attempt = {
            "reason": None,
            "error_class": None,
            "error_message": None,
            "worker": "w1",
            "celery_task_id": "task-1",
            "finished_at": None,
            "heartbeat_at": None,
            "progress_at": None,
        }
        conn.execute(
            sa.insert(t["attempts"]),
            [
                {
                    **attempt,
                    "run_id": RUN_OK,
                    "number": 1,
                    "fence": 1,
                    "status": "succeeded",
                    "started_at": at(engine, 0.2),
                    "finished_at": at(engine, 1),
                },
                {
                    **attempt,
                    "run_id": RUN_WAITING,
                    "number": 1,
                    "fence": 1,
                    "status": "failed",
                    "reason": "error",
                    "error_class": "RuntimeError",
                    "error_message": "upstream 503",
                    "started_at": at(engine, 0.2),
                    "finished_at": at(engine, 0.5),
                },
                {
                    **attempt,
                    "run_id": RUN_RUNNING,
                    "number": 1,
                    "fence": 2,
                    "status": "stalled",
                    "reason": "worker_lost",
                    "started_at": at(engine, 0.3),
                    "finished_at": at(engine, 1),
                },
                {
                    **attempt,
                    "run_id": RUN_RUNNING,
                    "number": 2,
                    "fence": 3,
                    "status": "running",
                    "started_at": at(engine, 1),
                    "heartbeat_at": at(engine, 1.5),
                    "progress_at": at(engine, 1.4),
                },
            ],
        )
        row = {
            "run_id": RUN_OK,
            "status": "pending",
            "attempts": 0,
            "claimed_by": None,
            "claim_expires": None,
            "next_attempt_at": None,
            "last_error": None,
            "created_at": at(engine, 1),
            "delivered_at": None,
            "dead_at": None,
        }
        conn.execute(
            sa.insert(t["outbox"]),
            [
                {
                    **row,
                    "id": f"{RUN_OK}:0",
                    "sink": "cache",
                    "key": "user:1",
                    "seq": 3,
                    "value": {"channel": "email", "v": 3},
                },
                {
                    **row,
                    "id": f"{RUN_OK}:1",
                    "sink": "audit",
                    "key": "user:1",
                    "seq": 2,
                    "value": {"event": "preference_set"},
                },
                {
                    **row,
                    "id": f"{RUN_OK}:2",
                    "sink": "audit",
                    "key": "user:9",
                    "seq": 1,
                    "value": {"event": "old"},
                    "status": "delivered",
                    "attempts": 1,
                    "delivered_at": at(engine, 1.2),
                },
                {
                    **row,
                    "id": f"{RUN_OK}:3",
                    "sink": "hook",
                    "key": "user:1",
                    "seq": 1,
                    "value": [1, 2, 3],
                    "status": "dead",
                    "attempts": 8,
                    "last_error": "HTTP 500 from https://crm.example.com",
                    "dead_at": at(engine, 3),
                },
            ],
        )
        conn.execute(
            sa.insert(t["outbox_keys"]),
            [
                {"sink": "cache", "key": "user:1", "last_seq": 3},
                {"sink": "audit", "key": "user:1", "last_seq": 2},
                {"sink": "audit", "key": "user:9", "last_seq": 1},
                {"sink": "hook", "key": "user:1", "last_seq": 1},
            ],
        )
        alert = {
            "severity": "warning",
            "run_id": None,
            "trigger": None,
            "agent": None,
            "attempt": None,
            "details": None,
            "channels": ["log"],
            "sent_at": None,
            "reminded_at": None,
        }
        conn.execute(
            sa.insert(t["alerts"]),
            [
                {
                    **alert,
                    "kind": "run_stalled",
                    "state": "firing",
                    "dedupe_key": f"stall:{RUN_RUNNING}:1",
                    "episode": 1,
                    "run_id": RUN_RUNNING,
                    "agent": "digest",
                    "attempt": 1,
                    "message": "digest stalled (worker_lost)",
                    "created_at": at(engine, 1),
                    "sent_at": at(engine, 1),
                },
                {
                    **alert,
                    "kind": "metric",
                    "state": "firing",
                    "episode": 2,
                    "trigger": "error-rate",
                    "dedupe_key": "metric:error-rate:2026-03-01T11:00:00Z:firing",
                    "message": "error-rate above 0.05",
                    "details": {"value": 0.07},
                    "created_at": at(engine, -60),
                    "sent_at": at(engine, -60),
                    "reminded_at": at(engine, -30),
                },
            ],
        )
        state = {"revision": 4, "source_failing": False, "paused": False, "updated_at": at(engine, 1)}
        conn.execute(
            sa.insert(t["trigger_state"]),
            [
                {
                    **state,
                    "name": "digest",
                    "kind": "cron",
                    "next_evaluation": at(engine, 2),
                    "state": {"last_slot": "2026-03-01T12:01:00Z", "expr": "* * * * *"},
                },
                {
                    **state,
                    "name": "error-rate",
                    "kind": "metric",
                    "next_evaluation": at(engine, 1.5),
                    "source_failing": True,
                    "paused": True,
                    "state": {"phase": "firing", "since": "2026-03-01T11:00:00Z", "episode": 2},
                },
            ],
        )
        conn.execute(
            sa.insert(t["missed_slots"]),
            [
                {
                    "trigger": "digest",
                    "first_slot": at(engine, -30),
                    "last_slot": at(engine, -10),
                    "count": 21,
                    "reason": "catchup",
                    "recorded_at": at(engine, 0),
                }
            ],
        )
        conn.execute(
            sa.insert(t["dead_letters"]),
            [
                {
                    "reason": "decode_error",
                    "task_name": None,
                    "task_id": None,
                    "payload": "\u0080garbage",
                    "details": {"error": "bad"},
                    "created_at": at(engine, 0),
                }
            ],
        )


def snapshot(engine: sa.Engine) -> dict[str, dict[Any, dict[str, Any]]]:
    """Every row of every nightowl table, by primary key."""
    meta = sa.MetaData()
    meta.reflect(engine)
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name, table in meta.tables.items():
            if name == "alembic_version" or name.startswith("audit_"):  # not ours: the sink's
                continue
            if not table.primary_key.columns:
                continue
            pk = list(table.primary_key.columns)
            out[name] = {
                tuple(r._mapping[c.name] for c in pk): dict(r._mapping)
                for r in conn.execute(sa.select(table))
            }
    return out


def old_sinks(url: str, engine: sa.Engine, client: redis.Redis, prefix: str, audit: str) -> None:
    """The sinks' stores as the previous version wrote them."""
    for key, value, seq in (
        ("user:1", {"channel": "sms", "v": 2}, 2),
        ("user:2", {"channel": "email", "v": 7}, 7),
    ):
        client.set(f"{prefix}cache:{key}", json.dumps(value), px=3_600_000)
        client.set(f"{prefix}cache:{key}:seq", seq, px=3_600_000)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {audit} (entry_id VARCHAR(64) PRIMARY KEY, run_id VARCHAR(36) NOT "
                "NULL, key VARCHAR(512) NOT NULL, seq BIGINT NOT NULL, value JSON NOT NULL, "
                "recorded_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {audit} (entry_id, run_id, key, seq, value) VALUES "
                f"('{RUN_OK}:2', '{RUN_OK}', 'user:9', 1, :v)"
            ),
            {"v": json.dumps({"event": "old"})},
        )


def test_a_database_filled_at_0003_upgrades_to_head_and_through_the_sinks_losing_nothing(
    url_0003: str,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    engine = make_engine(url_0003)
    audit = f"audit_{uuid.uuid4().hex[:8]}"
    try:
        fill(engine)
        old_sinks(url_0003, engine, redis_client, prefix, audit)
        before = snapshot(engine)
        assert sum(len(rows) for rows in before.values()) >= 20
        # When the schema is brought to head
        upgrade(engine)
        assert current(engine) == head_revision()
        after = snapshot(engine)
        # Then every row and every column that existed is there with the same value
        for table, rows in before.items():
            assert table in after, f"table {table} is gone"
            assert set(after[table]) == set(rows), f"{table}: rows lost or added"
            for pk, row in rows.items():
                for column, value in row.items():
                    if (table, column) in REWRITTEN:
                        continue
                    assert column in after[table][pk], f"{table}.{column} is gone"
                    assert after[table][pk][column] == value, f"{table}.{column} of {pk} changed"
        assert after["runs"][(RUN_QUEUED,)].get("cancel_requested") is None  # 0004, default
        # And the application reads the old rows
        store = Store(engine)
        ok = store.get_run(RUN_OK)
        assert ok is not None and ok.status == "succeeded"
        assert ok.result == {"summary": "ok", "n": 12}
        assert ok.finished_at == T0 + timedelta(minutes=1)
        running = store.get_run(RUN_RUNNING)
        assert running is not None and running.fence == 3 and running.status == "running"
        outbox = OutboxStore(engine)
        assert {r.id: r.status for r in outbox.rows()} == {
            f"{RUN_OK}:0": "pending",
            f"{RUN_OK}:1": "pending",
            f"{RUN_OK}:2": "delivered",
            f"{RUN_OK}:3": "dead",
        }
        # When the relay delivers the pending rows through today's sinks
        cache = RedisCacheSink(prefix=f"{prefix}cache:", redis_url=REDIS_URL)
        register_sink("cache", cache)
        register_sink("audit", SqlAppendSink(audit, db_url=url_0003))
        clock = FakeClock(datetime.now(UTC))
        relay = Relay(outbox, clock)
        report = relay.drain()
        relay.close()
        assert report.delivered == 2 and report.dead == []
        # Then the written cache key was converted to its hash with the newer value
        assert redis_client.type(f"{prefix}cache:user:1") == b"hash"
        assert cache.get("user:1") == {"channel": "email", "v": 3}
        assert not redis_client.exists(f"{prefix}cache:user:1:seq")
        # and the one-off upgrade converts the key no entry touched, keeping its value and TTL
        assert cache.upgrade_keys() == 1
        assert redis_client.hgetall(f"{prefix}cache:user:2") == {
            b"value": json.dumps({"channel": "email", "v": 7}).encode(),
            b"seq": b"7",
        }
        assert 0 < redis_client.pttl(f"{prefix}cache:user:2") <= 3_600_000
        # and the audit table kept its old row under created_at, next to the new one
        with engine.connect() as conn:
            audited = conn.execute(
                sa.text(f"SELECT entry_id, key, seq, created_at FROM {audit} ORDER BY entry_id")
            ).all()
        assert [(r.entry_id, r.key, r.seq) for r in audited] == [
            (f"{RUN_OK}:1", "user:1", 2),
            (f"{RUN_OK}:2", "user:9", 1),
        ]
        assert all(r.created_at is not None for r in audited)
        # and the dead row stayed dead with its error; nothing else changed state
        final = {r.id: r for r in outbox.rows()}
        assert final[f"{RUN_OK}:3"].status == "dead"
        assert final[f"{RUN_OK}:3"].last_error == "HTTP 500 from https://crm.example.com"
        assert {i: r.status for i, r in final.items()} == {
            f"{RUN_OK}:0": "delivered",
            f"{RUN_OK}:1": "delivered",
            f"{RUN_OK}:2": "delivered",
            f"{RUN_OK}:3": "dead",
        }
    finally:
        engine.dispose()
