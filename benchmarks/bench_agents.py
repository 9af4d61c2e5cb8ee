"""The nightowl side of the throughput benchmark: a no-op agent counting in Redis."""

from __future__ import annotations

import os

import redis

from agents import AgentContext, agent

_PREFIX = os.environ.get("NIGHTOWL_REDIS_PREFIX", "")
_counter = redis.Redis.from_url(os.environ.get("NIGHTOWL_REDIS_URL", "redis://127.0.0.1:6379/0"))


@agent("noop")
def noop(ctx: AgentContext, event: object) -> None:
    _counter.incr(f"{_PREFIX}done")
