"""The demo's outside world: an orders table, an inbox list, a gauge, a log store, an LLM
outage. The example agents read it; `examples/demo.py` (the `make demo` trigger module) feeds it.

It lives on nightowl's own database and Redis, which `nightowl dev` sets for its worker (and
writes to `.nightowl/env`, so `nightowl agents run` in the demo folder finds them too).
Nothing connects at import: the example agents' tests replace these functions and never touch
a service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import redis
import sqlalchemy as sa

from agents.llm import Failure
from scheduler.core.settings import Settings
from scheduler.storage.engine import make_engine

INBOX = "nightowl-demo:inbox"
GAUGE_PERIOD_S = 30.0  # the demo gauge climbs 0..30 over every 30 seconds

# The triage model's provider goes down OUTAGE_AFTER_S into the demo, for OUTAGE_FOR_S, and
# again every OUTAGE_EVERY_S: long enough for its circuit breaker to open, defer the runs that
# need it, probe it and close again (NIGHTOWL_BREAKER_* at their defaults).
OUTAGE_AFTER_S = 20.0
OUTAGE_FOR_S = 25.0
OUTAGE_EVERY_S = 300.0


orders_table = sa.Table(
    "demo_orders",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),  # autoincrement on SQLite and PostgreSQL
    sa.Column("customer", sa.String(64), nullable=False),
    sa.Column("total", sa.Float, nullable=False),
)


@cache
def engine() -> sa.Engine:
    """nightowl's engine, with the demo's table created. On SQLite it opens the file with the
    same SQLite library as the rest of the process (two copies of SQLite in one process
    corrupt a shared file)."""
    db = make_engine(Settings().require_database_url())
    orders_table.create(db, checkfirst=True)
    return db


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(Settings().require_redis_url())


# -- orders ---------------------------------------------------------------------------------


def add_order(customer: str, total: float) -> int:
    with engine().begin() as conn:
        added = conn.execute(
            sa.insert(orders_table).values(customer=customer, total=total).returning(orders_table.c.id)
        )
        return int(added.scalar_one())


def newest_orders(limit: int) -> list[dict[str, Any]]:
    """The newest `limit` orders, newest first, as JSON (a step's result is recorded)."""
    query = sa.select(orders_table).order_by(orders_table.c.id.desc()).limit(limit)
    with engine().connect() as conn:
        rows = conn.execute(query).all()
    return [{"id": r.id, "customer": r.customer, "total": r.total} for r in rows]


# -- the inbox ------------------------------------------------------------------------------


def push_inbox(*messages: str) -> int:
    return int(redis_client().lpush(INBOX, *messages))


def take_inbox(limit: int) -> list[str]:
    """Pop up to `limit` messages, oldest first."""
    taken = redis_client().rpop(INBOX, limit) or []
    return [m.decode() if isinstance(m, bytes) else str(m) for m in taken]


# -- the gauge and the log store ------------------------------------------------------------


def demo_gauge() -> float:
    """A sawtooth standing in for a real metric: 0..30 over every 30 seconds.

    The scheduler reads it from its first tick, so it also sets the demo's table up: the
    `new-orders` trigger then finds its table at its first poll, before the writer's first run
    (a missing table would be `trigger_source_failing`)."""
    engine()
    return time.time() % GAUGE_PERIOD_S


def metric_history(name: str, points: int = 8, every_s: float = 2.0) -> list[float]:
    """The metric's last `points` readings, oldest first (only the demo gauge has any)."""
    if name != "demo-gauge":
        return []
    now = time.time()
    return [round((now - every_s * i) % GAUGE_PERIOD_S, 2) for i in reversed(range(points))]


def search_logs(query: str, since: datetime) -> list[str]:
    """Stands in for a log store (Loki, Elasticsearch), and a flaky one: the first search for
    a given query and window times out (once per incident, fleet-wide: a Redis SET NX), so
    each investigation's first attempt fails after two steps and its retry replays them."""
    first_ask = redis_client().set(f"nightowl-demo:logs:{query}:{since.isoformat()}", 1, nx=True, ex=3600)
    if first_ask:
        raise TimeoutError("the log store did not answer within 10 s")
    minute = f"{since:%H:%M}"
    return [
        f"{minute} WARN  batch-export: queue lag rising ({query})",
        f"{minute} ERROR batch-export: worker pool exhausted, 32/32 busy",
        f"{minute} INFO  autoscaler: scale-up requested for batch-export",
    ]


# -- the LLM outage -------------------------------------------------------------------------


def llm_outage() -> bool:
    """Whether the demo's triage model is down now. The clock starts at the first question
    (the first caller across the fleet stores it in Redis), so every process agrees."""
    client = redis_client()
    client.set("nightowl-demo:started", time.time(), nx=True, ex=24 * 3600)
    started = float(client.get("nightowl-demo:started") or time.time())
    into_cycle = (time.time() - started) % OUTAGE_EVERY_S
    return OUTAGE_AFTER_S <= into_cycle < OUTAGE_AFTER_S + OUTAGE_FOR_S


def with_outage(answer: Callable[[list[dict[str, Any]]], Any]) -> Callable[[list[dict[str, Any]]], Any]:
    """A ScriptedLLM answer that is a 503 while `llm_outage()`, else `answer`'s."""

    def answer_or_outage(messages: list[dict[str, Any]]) -> Any:
        if llm_outage():
            return Failure.server_error(503)
        return answer(messages)

    return answer_or_outage
