"""The demo trigger module `make demo` loads: four LLM agents, one per trigger kind, all
firing within a minute, offline (a ScriptedLLM each; NIGHTOWL_LLM_BASE_URL points them at a
real OpenAI-compatible endpoint instead).

- cron: `morning-digest` (examples/digest.py) summarises the newest orders every 10 s, in two
  durable steps; `demo-writer`, every 3 s, feeds the others a new order and two inbox mails;
- db_change: `order-triage` (examples/order_triage.py) classifies each new order with a
  validated LLM answer and writes the decision through the outbox to a SQL table, a Redis
  cache, a Redis stream, an audit table and a vector store (`nightowl outbox status`);
- queue_depth: past 5 inbox mails, `backlog-responder` (examples/backlog.py) drafts replies;
  the alert resolves once the inbox is drained (`on_resolve=True`);
- metric: a sawtooth demo gauge (0..30 every 30 s); above 20, `incident-investigator`
  (examples/incident.py) works through four steps. The log store times out on each
  incident's first search, so the console shows the retry replaying steps 1-2;
- the breaker: 20 s into the demo the triage model's provider fails with 503s for 25 s. Its
  circuit breaker opens, triage runs wait (`waiting/provider_unavailable`, counted as no
  attempt), the `provider_unavailable` alert fires; a probe call closes the breaker once the
  provider is back (within `NIGHTOWL_BREAKER_OPEN_FOR`, 30 s by default), the alert
  resolves and the waiting runs finish;
- the watchdog: `daydreamer` stalls on purpose every 20 s; its `run_stalled` and `run_dead`
  alerts show on the console and in `nightowl alerts list`.

The writer is itself an agent: it runs on the worker, where `nightowl dev` has set
NIGHTOWL_DATABASE_URL and NIGHTOWL_REDIS_URL. The tables, the inbox list, the gauge, the log
store and the outage are examples/world.py.
"""

from __future__ import annotations

import time
from datetime import timedelta

from agents import AgentContext, CronTick, agent
from examples import world
from examples.backlog import backlog_responder
from examples.digest import morning_digest
from examples.incident import incident_investigator
from examples.order_triage import order_triage
from scheduler.outbox import (
    RedisCacheSink,
    RedisStreamSink,
    SqlAppendSink,
    SqlUpsertSink,
    VectorSink,
    register_sink,
)
from triggers import cron, db_change, metric, queue_depth, redis_list


@agent("demo-writer")
def demo_writer(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """The demo's outside world moving: a new order and two inbox mails per run."""
    second = event.scheduled_for.second
    order = world.add_order(f"customer-{second:02d}", round(12.5 + (second * 37) % 400, 2))
    depth = world.push_inbox(f"mail-{order}-a", f"mail-{order}-b")
    return {"order": order, "inbox": depth}


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


register_sink("decisions", SqlUpsertSink("demo_triage"))
register_sink("cache", RedisCacheSink(prefix="nightowl-demo:cache:", ttl=timedelta(hours=1)))
register_sink("events", RedisStreamSink(stream="nightowl-demo:events"))
register_sink("audit", SqlAppendSink("demo_audit"))
register_sink("memory", VectorSink(table="demo_memory", dim=3))

# In production: cron("0 7 * * *", ..., tz="Europe/Berlin"). The demo cannot wait for 7:00.
cron("*/10 * * * * *", agent=morning_digest, name="digest")
cron("*/3 * * * * *", agent=demo_writer, name="demo-writer", overlap="allow")
db_change(
    "demo_orders",
    agent=order_triage,
    name="new-orders",
    cursor="id",
    key="id",
    every=timedelta(seconds=2),
    start="beginning",
)
queue_depth(
    redis_list(world.INBOX),
    agent=backlog_responder,
    name="inbox-backlog",
    above=5,
    clear_below=3,
    every=timedelta(seconds=2),
    cooldown=timedelta(seconds=10),
    on_resolve=True,
)
metric(
    world.demo_gauge,
    agent=incident_investigator,
    name="demo-gauge",
    above=20,
    clear_below=10,
    every=timedelta(seconds=2),
    for_=timedelta(seconds=2),
    cooldown=timedelta(seconds=20),
)
cron("*/20 * * * * *", agent=daydreamer, name="daydream")
