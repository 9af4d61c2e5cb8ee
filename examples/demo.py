"""The demo trigger module `make demo` loads: all four trigger kinds firing within a minute.

- cron: `summarise` every 5 s, and a small writer every 3 s that feeds the others;
- db_change: a run per new row the writer inserts into `demo_orders`; `triage` writes each
  order through the outbox to a Redis cache, a Redis stream, an audit table and a vector
  store (`nightowl outbox status` shows them delivered);
- queue_depth: the writer pushes to a Redis list; past 5 items `drain-inbox` empties it,
  and the alert resolves (`on_resolve=True`);
- metric: a sawtooth demo gauge (0..30 every 30 s); above 20 wakes `investigate`;
- the watchdog: `daydreamer` stalls on purpose every 20 s; its `run_stalled` and `run_dead`
  alerts show on the console and in `nightowl alerts list`.

The writer is itself an agent: it runs on the worker, where `nightowl dev` has set
NIGHTOWL_DATABASE_URL and NIGHTOWL_REDIS_URL.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from functools import cache

import redis
import sqlalchemy as sa

from agents import AgentContext, CronTick, MetricAlert, QueueDepth, RowChange, agent
from scheduler.outbox import (
    RedisCacheSink,
    RedisStreamSink,
    SqlAppendSink,
    VectorSink,
    register_sink,
)
from scheduler.storage.engine import make_engine
from triggers import cron, db_change, metric, queue_depth, redis_list

INBOX = "nightowl-demo:inbox"


@cache
def _engine() -> sa.Engine:
    # nightowl's engine: on SQLite it opens the file with the same SQLite library as the rest
    # of the process (two copies of SQLite in one process corrupt a shared file).
    engine = make_engine(os.environ["NIGHTOWL_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS demo_orders (id INTEGER PRIMARY KEY, "
                "customer TEXT NOT NULL, total NUMERIC NOT NULL)"
            )
        )
    return engine


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["NIGHTOWL_REDIS_URL"])


@agent("summarise", timeout=timedelta(minutes=1), heartbeat_timeout=timedelta(seconds=15))
def summarise(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """Stands in for an LLM call: reports what it would summarise for its slot."""
    ctx.heartbeat("collected items", count=3)
    ctx.usage(tokens=120, tool_calls=1)
    return {"slot": event.scheduled_for.isoformat(), "items": 3, "attempt": ctx.attempt}


@agent("demo-writer")
def demo_writer(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """The demo's outside world: a new order row and two inbox items per run."""
    with _engine().begin() as conn:
        order = conn.execute(
            sa.text("INSERT INTO demo_orders (customer, total) VALUES (:c, :t) RETURNING id"),
            {"c": f"customer-{event.scheduled_for:%S}", "t": 42.5},
        ).scalar()
    depth = _redis().lpush(INBOX, f"mail-{order}-a", f"mail-{order}-b")
    return {"order": order, "inbox": depth}


@agent("triage")
def triage(ctx: AgentContext, event: RowChange) -> dict[str, object]:
    """Wakes once per new order (db_change) and remembers it in four stores at once,
    through the outbox: all of them or none, each exactly once (`nightowl outbox status`)."""
    row = event.row
    assert isinstance(row, dict)
    key = f"order:{event.key}"
    fact = {"order": event.key, "customer": row["customer"], "priority": "normal"}
    ctx.outbox.put("cache", key, fact)
    ctx.outbox.put("events", key, {"type": "order_triaged", **fact})
    ctx.outbox.put("audit", key, {"decision": "normal", **fact})
    ctx.outbox.put("memory", key, {"vector": [float(event.key), 1.0, 0.0], **fact})
    return {"order": event.key, "customer": row["customer"]}


@agent("drain-inbox")
def drain_inbox(ctx: AgentContext, event: QueueDepth) -> dict[str, object]:
    """Wakes when the inbox backs up (queue_depth), and once more when it has drained."""
    if event.state == "resolved":
        return {"state": "resolved", "depth": event.depth}
    drained = len(_redis().rpop(INBOX, 1000) or [])
    return {"state": "firing", "depth": event.depth, "drained": drained}


@agent("investigate")
def investigate(ctx: AgentContext, event: MetricAlert) -> dict[str, object]:
    """Wakes when the demo gauge is out of bounds (metric)."""
    return {"gauge": event.value, "threshold": event.threshold, "state": event.state}


@agent("daydreamer", progress_timeout=timedelta(seconds=3), max_attempts=1)
def daydreamer(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """Stalls on purpose: promises progress every 3 s, then goes quiet. The watchdog
    stalls it (`no_progress`), terminates it, and with max_attempts=1 the run is dead:
    watch for the ALERT lines and `nightowl alerts list`."""
    ctx.heartbeat("thinking")
    for _ in range(200):
        if ctx.cancelled:
            return {"gave_up": True}
        time.sleep(0.05)
    return {"woke_up": True}


def demo_gauge() -> float:
    """A sawtooth standing in for a real metric: 0..30 over every 30 seconds."""
    return time.time() % 30


register_sink("cache", RedisCacheSink(prefix="nightowl-demo:cache:", ttl=timedelta(hours=1)))
register_sink("events", RedisStreamSink(stream="nightowl-demo:events"))
register_sink("audit", SqlAppendSink("demo_audit"))
register_sink("memory", VectorSink(table="demo_memory", dim=3))

cron("*/5 * * * * *", agent=summarise, name="every-5s")
cron("*/3 * * * * *", agent=demo_writer, name="demo-writer", overlap="allow")
db_change(
    "demo_orders",
    agent=triage,
    name="new-orders",
    cursor="id",
    key="id",
    every=timedelta(seconds=2),
    start="beginning",
)
queue_depth(
    redis_list(INBOX),
    agent=drain_inbox,
    name="inbox-backlog",
    above=5,
    clear_below=3,
    every=timedelta(seconds=2),
    cooldown=timedelta(seconds=10),
    on_resolve=True,
)
cron("*/20 * * * * *", agent=daydreamer, name="daydream")
metric(
    demo_gauge,
    agent=investigate,
    name="demo-gauge",
    above=20,
    clear_below=10,
    every=timedelta(seconds=2),
    for_=timedelta(seconds=2),
    cooldown=timedelta(seconds=20),
)
