"""Wiring for `nightowl scheduler`: the service over the configured stores, woken by the loop."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis

from scheduler.alerts import build_alerts
from scheduler.core.celery import broker_app
from scheduler.core.clock import Clock, SystemClock
from scheduler.core.loop import IntervalLoop, Step
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.dispatch.service import SchedulerService
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store
from triggers import Registry

log = logging.getLogger("nightowl.scheduler")


def build_service(settings: Settings, registry: Registry, clock: Clock | None = None) -> SchedulerService:
    clock = clock or SystemClock()
    store = Store(make_engine(settings.require_database_url()))
    return SchedulerService(
        registry=registry,
        store=store,
        publisher=Publisher(broker_app(settings, registry)),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        alerts=build_alerts(settings, store.engine, clock),
        retention=settings.retention,
        key_prefix=settings.redis_prefix,
        leader_ttl=settings.leader_ttl,
        pending_grace=settings.pending_grace,
        requeue_after=settings.visibility_timeout,
        requeue_lost_after=settings.requeue_lost_after,
        poll_wait=min(settings.tick_interval, timedelta(seconds=0.25)),
        source_defaults=settings.source_defaults(),
    )


class ServiceLoop(IntervalLoop):
    """`tick` every `tick_interval` and `sweep` every `sweep_interval`."""

    def __init__(self, service: SchedulerService, settings: Settings) -> None:
        self.service = service
        super().__init__(
            [
                Step("tick", self._tick, settings.tick_interval, next_at=service.next_due),
                Step("sweep", service.sweep, settings.sweep_interval),
            ],
            service.close,
            log,
        )

    def _tick(self) -> None:
        report = self.service.tick()
        if report.fired:
            log_fired(report.fired)


SHOWN_PER_TICK = 5


def log_fired(fired: list[tuple[str, str]]) -> None:
    """One INFO line per tick, the runs it fired (the first few by name), and one DEBUG line
    per run: 10,000 triggers due at once are one line, not 10,000 (writing them cost the
    burst a large share of its time)."""
    shown = ", ".join(f"{t} -> run {r}" for t, r in fired[:SHOWN_PER_TICK])
    more = len(fired) - SHOWN_PER_TICK
    if more > 0:
        log.info("fired %s and %d more (%d runs this tick)", shown, more, len(fired))
    else:
        log.info("fired %s", shown)
    if log.isEnabledFor(logging.DEBUG):
        for trigger, run_id in fired:
            log.debug("fired %s -> run %s", trigger, run_id)
