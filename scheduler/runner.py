"""Wiring for the long-running scheduler process: APScheduler wakes, our steps do the work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.alerts import AlertManager, channels_from
from scheduler.app import create_app
from scheduler.clock import Clock, SystemClock
from scheduler.metrics import LOOP_LAST_SUCCESS
from scheduler.outbox.relay import Relay
from scheduler.publish import Publisher
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.steplog import StepFailures
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.engine import make_engine
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import Store
from scheduler.watchdog import Watchdog
from triggers import Registry

log = logging.getLogger("nightowl.scheduler")


def build_alerts(settings: Settings, store: Store, clock: Clock) -> AlertManager:
    channels = channels_from(settings.alert_urls, settings.alert_webhook_url,
                             settings.alert_webhook_secret)
    return AlertManager(AlertStore(store.engine), clock, channels,
                        repeat=timedelta(seconds=settings.alert_repeat))


def build_watchdog(settings: Settings, registry: Registry, clock: Clock | None = None) -> Watchdog:
    app = create_app(settings, registry)
    clock = clock or SystemClock()
    store = Store(make_engine(settings.require_database_url()))

    def revoke(task_id: str) -> None:
        # SIGKILL: an agent stuck in a loop may ignore SIGTERM; the pool replaces the process.
        app.control.revoke(task_id, terminate=True, signal="SIGKILL")

    return Watchdog(
        registry=registry, store=store, alerts=build_alerts(settings, store, clock),
        redis_client=redis.Redis.from_url(settings.require_redis_url()), clock=clock,
        publisher=Publisher(app), key_prefix=settings.redis_prefix,
        leader_ttl=settings.leader_ttl, revoke=revoke, stuck_after=settings.stuck_after)


def build_relay(settings: Settings, *, batch: int = 200, clock: Clock | None = None) -> Relay:
    """A relay over the configured database; sinks come from the loaded trigger modules."""
    store = OutboxStore(make_engine(settings.require_database_url()))
    return Relay(store, clock or SystemClock(), batch=batch,
                 claim_ttl=timedelta(seconds=settings.claim_ttl),
                 retention=settings.retention, defaults=settings.source_defaults())


def build_service(settings: Settings, registry: Registry, clock: Clock | None = None) -> SchedulerService:
    app = create_app(settings, registry)
    clock = clock or SystemClock()
    store = Store(make_engine(settings.require_database_url()))
    return SchedulerService(
        registry=registry,
        store=store,
        publisher=Publisher(app),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        alerts=build_alerts(settings, store, clock),
        retention=settings.retention,
        key_prefix=settings.redis_prefix,
        leader_ttl=settings.leader_ttl,
        pending_grace=settings.pending_grace,
        requeue_after=settings.visibility_timeout,
        requeue_lost_after=settings.requeue_lost_after,
        poll_wait=min(settings.tick_interval, 0.25),
        source_defaults=settings.source_defaults(),
    )


class _IntervalLoop:
    """Runs steps on APScheduler interval jobs until `stop()`.

    misfire_grace_time=None, coalesce and max_instances=1: a slow step delays
    the next wake-up instead of stacking or silently dropping it; each step
    decides what is due from the clock, so nothing is lost either way.
    """

    def __init__(self, jobs: list[tuple[str, Callable[[], object], float]],
                 on_stop: Callable[[], None], logger: logging.Logger = log) -> None:
        self.stopped = threading.Event()
        self._on_stop = on_stop
        self.failures = StepFailures(logger)
        self._first = jobs[0]
        self._aps = BackgroundScheduler(timezone="UTC", job_defaults={
            "misfire_grace_time": None, "coalesce": True, "max_instances": 1,
        })
        for name, step, seconds in jobs:
            self._aps.add_job(self._guarded, "interval", args=[name, step], seconds=seconds, id=name)

    def _guarded(self, name: str, step: Callable[[], object]) -> None:
        """One step; during an outage one line, then one a minute, not a traceback per wake-up."""
        try:
            step()
        except Exception as exc:
            self.failures.failed(name, exc)
        else:
            self.failures.succeeded(name)
            LOOP_LAST_SUCCESS.labels(name).set_to_current_time()

    def start(self) -> None:
        self._guarded(self._first[0], self._first[1])
        self._aps.start()

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._aps.shutdown(wait=True)
        self._on_stop()


class WatchdogLoop(_IntervalLoop):
    """`check` every `watchdog_interval`."""

    def __init__(self, watchdog: Watchdog, settings: Settings) -> None:
        self.watchdog = watchdog
        super().__init__([("watchdog check", watchdog.check, settings.watchdog_interval)],
                         watchdog.close, logging.getLogger("nightowl.watchdog"))


class ServiceLoop(_IntervalLoop):
    """`tick` every `tick_interval` and `sweep` every `sweep_interval`."""

    def __init__(self, service: SchedulerService, settings: Settings) -> None:
        self.service = service
        super().__init__([("tick", self._tick, settings.tick_interval),
                          ("sweep", service.sweep, settings.sweep_interval)], service.close)

    def _tick(self) -> None:
        report = self.service.tick()
        for trigger, run_id in report.fired:
            log.info("fired %s -> run %s", trigger, run_id)
