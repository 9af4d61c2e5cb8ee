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
from benchmarks._harness import Result, ratio, say, stats
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


def measure(entries: int, batch: int) -> tuple[float, float]:
    """(relay entries/s, direct writes/s) for `entries` committed rows to each of 4 sinks."""
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
        with engine.begin() as conn:  # committed rows, as successful runs would leave them
            for i in range(entries):
                writes = [OutboxWrite(s, f"user:{i}", {"n": i, "channel": "email"}) for s in SINKS]
                insert_writes(conn, f"run-{i}", writes, now)
        relay = Relay(OutboxStore(engine), SystemClock(), batch=batch)
        relay.step()  # warm: sinks create their tables, scripts load
        started = time.perf_counter()
        report = relay.drain()
        relay_s = time.perf_counter() - started
        total = len(SINKS) * entries
        status = OutboxStore(engine).status(datetime.now(UTC))
        assert sum(s["delivered"] for s in status.values()) == total, status
        relay.close()
        direct_s = direct(entries, url, prefix, client)
        engine.dispose()
        return report.delivered / relay_s, total / direct_s
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        drop_database(url)


def run(quick: bool) -> Result:
    """relay_throughput: outbox entries delivered per second to the cache, stream, SQL upsert
    and SQL append sinks, against the same writes done directly in a loop."""
    entries, repeat = (500, 1) if quick else (5_000, 3)
    rows = []
    for r in range(repeat):
        say(f"relay_throughput: {entries} entries x 4 sinks, round {r + 1}/{repeat}")
        relay_rate, direct_rate = measure(entries, 500)
        rows.append({"relay": relay_rate, "direct": direct_rate})
    got = stats(rows, {"relay": "entries/s", "direct": "writes/s"})
    rr = ratio(got["relay"].median, got["direct"].median)
    return Result(
        name="relay_throughput",
        figures={"relay": got["relay"], "entries": entries * len(SINKS)},
        baseline={"direct_writes": got["direct"]},
        ratio=rr,
        target="relay / direct >= 0.5",
        met=None if quick else rr >= 0.5,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    relay_rate, direct_rate = measure(args.entries, args.batch)
    print(f"relay: {relay_rate:,.0f} entries/s (batch {args.batch}); direct writes: {direct_rate:,.0f}/s")
    print(f"relay / direct = {relay_rate / direct_rate:.2f}")


if __name__ == "__main__":
    main()
