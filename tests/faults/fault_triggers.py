"""The fault harness's trigger module: all four trigger kinds, one agent, three sinks.

Every process of a scenario (schedulers, workers, watchdog, relay) imports this module
with the same environment, which the harness sets (see `harness.Cluster.env`):

- NIGHTOWL_FAULT_TAG          names this scenario's tables, stream and keys;
- NIGHTOWL_FAULT_DATA_URL     the never-killed database: the watched `rows_<tag>` table
                              and the SQL upsert sink `fx_<tag>`;
- NIGHTOWL_FAULT_SINK_REDIS   the never-killed Redis: the stream sink, the watched
                              backlog list and the agent's execution counters;
- NIGHTOWL_FAULT_PREFIX       the key prefix of this scenario on that Redis;
- NIGHTOWL_FAULT_METRIC_URL   the test's Prometheus-compatible HTTP server;
- NIGHTOWL_FAULT_HOOK_URL     optional: a webhook sink to the test's receiver;
- NIGHTOWL_FAULT_CATCHUP_WINDOW  seconds of catch-up for the per-second crons (default 1 h);
- NIGHTOWL_FAULT_MINUTELY     how many minute-level crons with catchup="latest" (default 0).

The agent counts its own executions (INCR on the never-killed Redis, keyed by run id),
fails the first attempt of one run in ten on purpose (counted too), and writes one entry per
sink through the outbox, so effects can be counted from the sinks.
The test process never imports this module (it would register the sinks there too).
"""

from __future__ import annotations

import os
import time
import zlib
from datetime import timedelta
from typing import Any

import redis

from agents import AgentContext, agent
from scheduler.outbox import RedisStreamSink, SqlUpsertSink, WebhookSink, register_sink
from triggers import cron, db_change, metric, prometheus, queue_depth, redis_list

TAG = os.environ.get("NIGHTOWL_FAULT_TAG", "")
PREFIX = os.environ.get("NIGHTOWL_FAULT_PREFIX", "")
SINK_REDIS = os.environ.get("NIGHTOWL_FAULT_SINK_REDIS", "redis://127.0.0.1:6379/0")
HOOK_KEYS = 8  # webhook entries share these keys, so per-key order can be checked

_counter = redis.Redis.from_url(SINK_REDIS) if TAG else None


def _duration(run_id: str) -> float:
    """0.1-0.4 s of work, fixed per run (so a retry takes as long as the first try)."""
    return 0.1 * (1 + zlib.crc32(run_id.encode()) % 4)


@agent(
    "fault-work", heartbeat_timeout=timedelta(seconds=3), max_attempts=5, retry_backoff=timedelta(seconds=1)
)
def fault_work(ctx: AgentContext, event: Any) -> dict[str, Any]:
    assert _counter is not None
    _counter.incr(f"{PREFIX}exec:{ctx.run_id}")
    if ctx.attempt == 1 and zlib.crc32(ctx.run_id.encode()) % 10 == 0:
        # one run in ten fails fast on its first attempt: retries (`waiting`, then the
        # sweeper) run under every fault too, and a fast failure races the publisher's
        # bookkeeping (issue 12, item 1)
        _counter.incr(f"{PREFIX}failed-on-purpose:{ctx.run_id}")
        raise RuntimeError("failing the first attempt on purpose")
    deadline = time.monotonic() + _duration(ctx.run_id)
    step = 0
    while time.monotonic() < deadline:
        ctx.heartbeat("working", step=step)
        step += 1
        time.sleep(0.05)
    value = {"run_id": ctx.run_id, "attempt": ctx.attempt, "trigger": ctx.trigger}
    ctx.outbox.put("effects", ctx.idempotency_key, value)
    ctx.outbox.put("events", ctx.idempotency_key, value)
    if os.environ.get("NIGHTOWL_FAULT_HOOK_URL"):
        shard = zlib.crc32(ctx.idempotency_key.encode()) % HOOK_KEYS
        ctx.outbox.put("hook", f"k{shard}", value)
    return {"ok": True, "attempt": ctx.attempt}


if TAG:
    data_url = os.environ["NIGHTOWL_FAULT_DATA_URL"]
    register_sink("effects", SqlUpsertSink(f"fx_{TAG}", db_url=data_url, key_column="effect_key"))
    register_sink("events", RedisStreamSink(stream=f"{PREFIX}events", redis_url=SINK_REDIS))
    if os.environ.get("NIGHTOWL_FAULT_HOOK_URL"):
        register_sink("hook", WebhookSink(url=os.environ["NIGHTOWL_FAULT_HOOK_URL"], timeout=20.0))

    window = timedelta(seconds=float(os.environ.get("NIGHTOWL_FAULT_CATCHUP_WINDOW", "3600")))
    cron(
        "* * * * * *",
        agent=fault_work,
        name="sec-allow",
        catchup="all",
        catchup_window=window,
        overlap="allow",
    )
    cron("* * * * * *", agent=fault_work, name="sec-skip", catchup="all", catchup_window=window)
    for i in range(int(os.environ.get("NIGHTOWL_FAULT_MINUTELY", "0"))):
        cron("* * * * *", agent=fault_work, name=f"min-{i}")
    db_change(
        f"rows_{TAG}",
        agent=fault_work,
        name="rows",
        db_url=data_url,
        cursor="id",
        key="id",
        every=timedelta(seconds=0.5),
        batch_size=500,
    )
    queue_depth(
        redis_list(f"{PREFIX}backlog", redis_url=SINK_REDIS),
        agent=fault_work,
        name="backlog",
        above=20,
        clear_below=5,
        every=timedelta(seconds=0.5),
        cooldown=0,
        on_resolve=True,
    )
    metric(
        prometheus("fault_errors", url=os.environ["NIGHTOWL_FAULT_METRIC_URL"], timeout=2),
        agent=fault_work,
        name="errors",
        above=0.5,
        clear_below=0.2,
        every=timedelta(seconds=0.5),
        cooldown=0,
        on_resolve=True,
    )
