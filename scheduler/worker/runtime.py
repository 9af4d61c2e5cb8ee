"""The per-process runtime a worker's tasks use, built lazily after fork."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from scheduler.core import metrics
from scheduler.core.breaker import RedisBreaker
from scheduler.core.clock import SystemClock
from scheduler.core.leases import identity
from scheduler.core.pauses import PauseCache
from scheduler.core.settings import Settings
from scheduler.core.spend import SpendCounter
from scheduler.outbox import registered_sinks
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store
from scheduler.worker.executor import Executor
from triggers import load


@dataclass
class Runtime:
    settings: Settings
    store: Store
    redis: redis.Redis
    executor: Executor

    def close(self) -> None:
        self.store.engine.dispose()
        self.redis.close()


def build_runtime(settings: Settings) -> Runtime:
    registry = load(settings.triggers)
    store = Store(make_engine(settings.require_database_url()))
    client = redis.Redis.from_url(settings.require_redis_url())
    # The providers' circuit breaker and the spend caps are the fleet's: state in Redis.
    breaker = RedisBreaker(client, settings.redis_prefix, settings.breaker_policy())
    executor = Executor(
        store=store,
        redis_client=client,
        registry=registry,
        clock=SystemClock(),
        worker_id=identity("worker"),
        key_prefix=settings.redis_prefix,
        heartbeat_interval=settings.heartbeat_interval,
        sinks=registered_sinks(),  # the trigger modules registered them on import
        outbox_max_value_bytes=settings.outbox_max_value_bytes,
        step_max_bytes=settings.step_max_bytes,
        gate=breaker.gate,
        spend=SpendCounter(client, settings.redis_prefix),
        usage_sink=metrics.record_usage,
        pauses=PauseCache(store.pauses).get,
    )
    return Runtime(settings, store, client, executor)


_lock = threading.Lock()
_runtime: Runtime | None = None


def current_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(Settings())
        return _runtime


def reset_runtime() -> None:
    """Forget the runtime (after fork: the child builds its own connections)."""
    global _runtime
    with _lock:
        _runtime = None
