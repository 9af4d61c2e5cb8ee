"""Relay throughput to the Redis and SQL sinks on PostgreSQL, against direct writes in a loop.

Measured in one run, same Redis and PostgreSQL:
- relay: N committed outbox entries for each of four sinks (Redis cache, Redis stream,
  SQL upsert, SQL append), delivered by one `Relay` (claim, deliver, settle);
- baseline: the same 4 x N writes done directly in a loop, one write (one round trip,
  one transaction for SQL) at a time, as an agent writing to each store itself would.

Run: `.venv/bin/python benchmarks/relay_throughput.py [--entries 5000] [--batch 500]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.outbox import OutboxWrite
from benchmarks._db import create_database, drop_database
from scheduler.core.clock import SystemClock
from scheduler.outbox import RedisCacheSink, RedisStreamSink, SqlAppendSink, SqlUpsertSink, register_sink
from scheduler.relay.service import Relay
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.outbox_store import OutboxStore, insert_writes

REDIS = "redis://127.0.0.1:6379/0"
SINKS = ("cache", "events", "prefs", "audit")


def direct(n: int, url: str, prefix: str, client: redis.Redis) -> float:
    """The same writes without an outbox: each one on its own, in a loop."""
    engine = make_engine(url)
    meta = sa.MetaData()
    prefs = sa.Table(
        "direct_prefs",
        meta,
        sa.Column("user_key", sa.String, primary_key=True),
        sa.Column("value", sa.JSON),
        sa.Column("seq", sa.BigInteger),
    )
    audit = sa.Table(
        "direct_audit", meta, sa.Column("entry_id", sa.String, primary_key=True), sa.Column("value", sa.JSON)
    )
    meta.create_all(engine)
    from sqlalchemy.dialects.postgresql import insert

    started = time.perf_counter()
    for i in range(n):
        value = {"n": i, "channel": "email"}
        client.set(f"{prefix}direct:cache:user:{i}", json.dumps(value))
        client.xadd(f"{prefix}direct:events", {"key": f"user:{i}", "value": json.dumps(value)})
        with engine.begin() as conn:
            stmt = insert(prefs).values(user_key=f"user:{i}", value=value, seq=1)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["user_key"], set_={"value": stmt.excluded.value})
            )
        with engine.begin() as conn:
            conn.execute(insert(audit).values(entry_id=f"direct:{i}", value=value).on_conflict_do_nothing())
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    prefix = f"bench-relay-{uuid.uuid4().hex[:6]}:"
    url = create_database("relay")
    client = redis.Redis.from_url(REDIS)
    try:
        engine = make_engine(url)
        upgrade(engine)
        register_sink("cache", RedisCacheSink(prefix=f"{prefix}cache:", redis_url=REDIS))
        register_sink("events", RedisStreamSink(stream=f"{prefix}events", redis_url=REDIS))
        register_sink("prefs", SqlUpsertSink("bench_prefs", db_url=url, key_column="user_key"))
        register_sink("audit", SqlAppendSink("bench_audit", db_url=url))
        now = datetime.now(UTC)
        per_run = 1
        with engine.begin() as conn:  # committed rows, as successful runs would leave them
            for i in range(0, args.entries, per_run):
                writes = [OutboxWrite(s, f"user:{i}", {"n": i, "channel": "email"}) for s in SINKS]
                insert_writes(conn, f"run-{i}", writes, now)
        relay = Relay(OutboxStore(engine), SystemClock(), batch=args.batch)
        relay.step()  # warm: sinks create their tables, scripts load
        started = time.perf_counter()
        report = relay.drain()
        relay_s = time.perf_counter() - started
        total = len(SINKS) * args.entries
        status = OutboxStore(engine).status(datetime.now(UTC))
        assert sum(s["delivered"] for s in status.values()) == total, status
        relay.close()
        direct_s = direct(args.entries, url, prefix, client)
        relay_rate = (report.delivered) / relay_s
        direct_rate = total / direct_s
        print(
            f"relay: {total:,} entries to 4 sinks in {relay_s:.2f} s = {relay_rate:,.0f} entries/s "
            f"(batch {args.batch})"
        )
        print(f"direct writes in a loop: {total:,} writes in {direct_s:.2f} s = {direct_rate:,.0f} writes/s")
        print(f"relay / direct = {relay_rate / direct_rate:.2f}")
        engine.dispose()
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        drop_database(url)


if __name__ == "__main__":
    main()
