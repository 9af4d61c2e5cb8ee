"""The Celery app every nightowl process shares: broker, JSON only, acks_late, prefetch 1.

The settings that decide message loss and duplication are set together here
(acks_late + reject_on_worker_lost + prefetch 1 + JSON only). Publishers (the
scheduler, the watchdog, `fire`) use `broker_app`; the worker adds its tasks on
top of it (`scheduler.worker.app.create_app`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from scheduler.core.settings import Settings
from triggers import Registry

# Records undecodable messages as dead letters before acking them (a Celery setting that
# only takes a dotted path, so naming the worker's class here imports nothing).
DEAD_LETTER_CONSUMER = "scheduler.worker.deadletters:DeadLetterConsumer"


def configure(app: Celery, settings: Settings) -> None:
    """Apply nightowl's non-negotiable Celery settings."""
    broker = settings.require_broker_url()
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout.total_seconds()}
    if settings.redis_prefix:
        transport["global_keyprefix"] = settings.redis_prefix
    app.conf.update(
        broker_url=broker,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task that raises (AttemptFailed) is acked: its retry is already in the database;
        # requeueing the message would only replay a delivery the fence drops.
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=broker.startswith(("redis://", "rediss://", "unix://")),
        broker_transport_options=transport,
        task_default_queue="agents",
        task_create_missing_queues=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        # Graceful drain: SIGTERM (remapped to a cold shutdown by `nightowl worker`) first
        # waits this long for running agents, then hands unfinished messages back.
        worker_soft_shutdown_timeout=settings.shutdown_grace.total_seconds(),
        worker_enable_soft_shutdown_on_idle=False,  # idle: nothing to wait for
        enable_utc=True,
        timezone="UTC",
        worker_consumer=DEAD_LETTER_CONSUMER,
    )


def broker_app(settings: Settings, registry: Registry | None = None) -> Celery:
    """A configured app without tasks: enough to publish `agent.<name>` by name and to
    broadcast control commands. `conf.nightowl_queues` lists the registry's queues."""
    app = Celery("nightowl", set_as_current=False)
    configure(app, settings)
    agents = registry.agents.values() if registry is not None else ()
    app.conf.nightowl_queues = sorted({a.queue for a in agents} or {"agents"})
    return app
