"""Wiring for `nightowl watchdog`: the checks over the configured stores, woken by the loop."""

from __future__ import annotations

import logging

import redis

from scheduler.alerts import build_alerts
from scheduler.core.celery import broker_app
from scheduler.core.clock import Clock, SystemClock
from scheduler.core.loop import IntervalLoop, Step
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store
from scheduler.watchdog.service import Watchdog
from triggers import Registry


def build_watchdog(settings: Settings, registry: Registry, clock: Clock | None = None) -> Watchdog:
    app = broker_app(settings, registry)
    clock = clock or SystemClock()
    store = Store(make_engine(settings.require_database_url()))

    def revoke(task_id: str) -> None:
        # SIGKILL: an agent stuck in a loop may ignore SIGTERM; the pool replaces the process.
        app.control.revoke(task_id, terminate=True, signal="SIGKILL")

    return Watchdog(
        registry=registry,
        store=store,
        alerts=build_alerts(settings, store.engine, clock),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        publisher=Publisher(app),
        key_prefix=settings.redis_prefix,
        leader_ttl=settings.leader_ttl,
        revoke=revoke,
        stuck_after=settings.stuck_after,
        breaker_policy=settings.breaker_policy(),
    )


class WatchdogLoop(IntervalLoop):
    """`check` every `watchdog_interval`."""

    def __init__(self, watchdog: Watchdog, settings: Settings) -> None:
        self.watchdog = watchdog
        super().__init__(
            [Step("watchdog check", watchdog.check, settings.watchdog_interval)],
            watchdog.close,
            logging.getLogger("nightowl.watchdog"),
        )
