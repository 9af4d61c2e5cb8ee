"""The Celery boundary: one thin task per agent, named `agent.<name>`, argument `[run_id]`.

Tasks only pass the run id to the runtime (`scheduler.worker.runtime`); everything
testable lives there. The Celery settings every process shares (acks_late,
reject_on_worker_lost, prefetch 1, JSON only) are in `scheduler.core.celery`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from celery import Celery, Task, signals

from scheduler.core import metrics
from scheduler.core.celery import broker_app
from scheduler.core.logs import install_scrubbing
from scheduler.core.scrub import register_registry, scrub_text
from scheduler.core.settings import Settings
from scheduler.core.vocabulary import FAILED_DELIVERIES, DeadLetterReason, Delivery, RunStatus
from scheduler.worker import deadletters
from triggers import Registry, load


def create_app(settings: Settings, registry: Registry) -> Celery:
    """The worker's app: the shared configuration plus one `agent.<name>` task per agent."""
    app = broker_app(settings, registry)
    for spec in registry.agents.values():
        _register_task(app, spec.name, spec.queue)
    return app


log = logging.getLogger("nightowl.worker")
MAX_RUN_ID_CHARS = 64
# After a database or Redis failure before an attempt started, a delivery goes back to the
# broker after this pause (doubling per failure in a row, up to the max), so a worker does
# not spin through the queue while the database restarts.
REQUEUE_PAUSE = (0.5, 5.0)


class _StartFailures:
    """Consecutive start failures of this process: the pause and a rate-limited log line."""

    def __init__(self) -> None:
        self.count = 0
        self._logged_at = 0.0

    def failed(self, reason: str) -> float:
        self.count += 1
        pause: float = min(REQUEUE_PAUSE[0] * 2.0 ** (self.count - 1), REQUEUE_PAUSE[1])
        now = time.monotonic()
        if self.count == 1 or now - self._logged_at >= 60:
            self._logged_at = now
            log.warning(
                "%s; the delivery goes back to the queue (%d in a row; logged once a minute while it lasts)",
                reason,
                self.count,
            )
        return pause

    def succeeded(self) -> None:
        if self.count:
            log.info("deliveries start again after %d failed start(s)", self.count)
        self.count = 0


_start_failures = _StartFailures()


_publishers: dict[int, Any] = {}


def _hand_back(app: Celery, agent_name: str, queue: str, run_id: str) -> None:
    """Put a delivery that could not start back on its queue (its run is still `queued`).

    Published anew rather than rejected: Celery logs every reject with a traceback. If the
    broker is what failed, the run stays `queued` without a message and the sweeper's
    lost-message check republishes it within NIGHTOWL_REQUEUE_LOST_AFTER.
    """
    from scheduler.core.publish import Publisher
    from scheduler.core.values import Dispatch

    publisher = _publishers.get(id(app))
    if publisher is None:
        publisher = _publishers[id(app)] = Publisher(app)
    try:
        publisher.publish([Dispatch(run_id, agent_name, queue, None, 0, RunStatus.QUEUED)])
    except Exception as exc:
        log.warning(
            "could not hand run %s back to the queue (%s); the sweeper's lost-message check republishes it",
            run_id,
            type(exc).__name__,
        )


class AttemptFailed(Exception):
    """The attempt ended without success (already recorded; the message is acked, not retried:
    retries are the database's, through the sweeper)."""


_FAILURE_CLASSES: dict[str, type[AttemptFailed]] = {}


def agent_failure(run_id: str, outcome: Delivery, error: tuple[str | None, str] | None) -> AttemptFailed:
    """What the task raises for a failed attempt: named like the agent's own exception
    (`RuntimeError('boom ...')` in Flower, not a wrapper's), still an AttemptFailed for
    Celery's `throws`; the message ends with where to read the rest."""
    where = f"run {run_id}: {outcome}; `nightowl runs show {run_id}` has the traceback and what happens next"
    if error is None:
        return AttemptFailed(scrub_text(where))
    error_class, message = error
    name = (error_class or "AttemptFailed").rsplit(".", 1)[-1]
    if not name.isidentifier():
        name = "AttemptFailed"
    cls = _FAILURE_CLASSES.get(name)
    if cls is None:
        cls = _FAILURE_CLASSES.setdefault(name, type(name, (AttemptFailed,), {"__module__": "agent"}))
    text = message.split(": ", 1)[1] if message.startswith(f"{name}: ") else message
    return cls(scrub_text(f"{text} ({where})"))


def _register_task(app: Celery, agent_name: str, queue: str) -> None:
    def run_agent(task: Task[Any, Any], *args: Any, **kwargs: Any) -> None:
        from scheduler.worker.runtime import current_runtime

        # A run id is a UUID: anything else (an oversized or foreign argument) is a dead
        # letter before it reaches Redis keys or SQL.
        if (
            kwargs
            or len(args) != 1
            or not isinstance(args[0], str)
            or not 0 < len(args[0]) <= MAX_RUN_ID_CHARS
        ):
            deadletters.record(
                DeadLetterReason.BAD_ARGUMENTS,
                task_name=task.name,
                task_id=task.request.id,
                payload=repr((args, kwargs))[: deadletters.MAX_PAYLOAD_CHARS],
                details={"expected": "[run_id]"},
            )
            return
        from scheduler.worker.executor import LAST_FAILURE, DeliveryNotStarted

        started = time.monotonic()
        try:
            outcome = current_runtime().executor.execute(agent_name, args[0], task_id=task.request.id)
        except DeliveryNotStarted as exc:
            time.sleep(_start_failures.failed(str(exc)))
            _hand_back(task.app, agent_name, queue, args[0])
            return
        _start_failures.succeeded()
        metrics.observe_delivery(agent_name, outcome, time.monotonic() - started)
        if outcome == Delivery.UNKNOWN_RUN:
            deadletters.record(
                DeadLetterReason.UNKNOWN_RUN,
                task_name=task.name,
                task_id=task.request.id,
                payload=repr(args),
                details={"run_id": args[0]},
            )
        if outcome in FAILED_DELIVERIES:
            # The run's state is already committed; raising only makes Celery's events (and
            # Flower) show FAILURE with a reason instead of a green SUCCESS for a failed attempt.
            # Celery's events carry this text to Flower: scrubbed like everything we print.
            raise agent_failure(args[0], outcome, LAST_FAILURE.error)

    # throws: an expected outcome, logged in one line without a traceback.
    app.task(
        name=f"agent.{agent_name}",
        bind=True,
        queue=queue,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        throws=(AttemptFailed,),
    )(run_agent)


_app_lock = threading.Lock()
_app: Celery | None = None


def get_app() -> Celery:
    """The process-wide app, built from the environment on first use.

    `celery -A scheduler.celery_app` and `from scheduler import celery_app`
    both land here; the registry is loaded from NIGHTOWL_TRIGGERS so workers
    know every agent.
    """
    global _app
    with _app_lock:
        if _app is None:
            install_scrubbing()  # `celery -A scheduler.celery_app worker|flower` log through it
            settings = Settings()
            registry = load(settings.triggers)
            register_registry(registry)
            _app = create_app(settings, registry)
        return _app


def set_app(app: Celery | None) -> None:
    """Install an app built elsewhere (the CLI builds it from its own options)."""
    global _app
    with _app_lock:
        _app = app


# Set by `nightowl worker`, which has checked the database and Redis before starting Celery.
STARTUP_CHECKED_ENV = "NIGHTOWL_STARTUP_CHECKED"


@signals.worker_init.connect
def _check_at_start(**_: Any) -> None:
    """`celery -A scheduler.celery_app worker` checks what `nightowl worker` checks: it waits
    up to NIGHTOWL_STARTUP_TIMEOUT for the database and Redis, then prints one line and exits
    1, instead of reporting `ready` on a database without the schema."""
    if os.environ.get(STARTUP_CHECKED_ENV):
        return
    from scheduler.core.errors import ConfigError
    from scheduler.core.startup import BROKER, DATABASE, REDIS, wait_until_ready

    settings = Settings()
    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as exc:
        print(f"error: celery worker cannot start: {exc}", file=sys.stderr)
        sys.exit(1)
    wait_until_ready("worker (celery)", settings, (DATABASE, REDIS, BROKER))


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Connections inherited over fork() must not be shared with the parent.
    from scheduler.worker.runtime import reset_runtime

    reset_runtime()


_presence: Any = None  # the running Presence of this worker's main process, if any


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    """Write this worker's presence (hostname, queues) every few seconds, for `status`."""
    global _presence
    import redis

    from scheduler.core.presence import Presence

    settings = Settings()
    url = settings.redis_url
    if url is None or sender is None:
        return
    queues = [q.name for q in getattr(sender.app.amqp.queues, "consume_from", {}).values()]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Short timeouts and no retries: the presence is advisory, and its last write (on
    # shutdown) must never hold a worker's shutdown up against a Redis that does not answer.
    _presence = Presence(
        lambda: redis.Redis.from_url(
            url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        ),
        settings.redis_prefix,
        str(sender.hostname),
        queues,
    )
    _presence.start()


@signals.worker_shutdown.connect
def _withdraw(**_: Any) -> None:
    if _presence is not None:
        _presence.stop()
