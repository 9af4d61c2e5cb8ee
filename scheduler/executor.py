"""Running one delivery of `agent.<name>(run_id)`: the steps of DESIGN.md, in order.

1. load the run; terminal -> drop (the stored result stands);
2. take the Redis lease `run:<id>`; held elsewhere -> drop and note when it expires;
3. take a new fence from the database and open the attempt;
4. heartbeat beside the agent, call it;
5. one fenced transaction with the outcome; a stale fence writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import redis

from agents import AgentContext, AgentSpec, NonRetryable, OutboxBuffer, event_from_json
from scheduler.clock import Clock
from scheduler.leases import Lease
from scheduler.storage.models import TERMINAL_STATUSES, Run
from scheduler.storage.store import StartedAttempt, Store
from triggers import Registry

log = logging.getLogger("nightowl.worker")

Outcome = Literal[
    "succeeded", "retry", "failed", "dead", "duplicate", "lease_held", "fenced_out",
    "unknown_run", "unknown_agent", "poison",
]


class NotSerialisableError(Exception):
    """The agent returned something JSON cannot carry."""


@dataclass(frozen=True, slots=True)
class _Verdict:
    status: str
    reason: str | None
    attempt_status: str
    outcome: Outcome
    not_before_in: timedelta | None = None


class _Heartbeat:
    """Beats every `interval` seconds from a thread: extends the lease, records liveness.

    Writes are conditional on our fence (in the store), so a late beat from a
    finished or fenced-out attempt changes nothing.
    """

    def __init__(self, lease: Lease, ttl_ms: int, interval: float,
                 beat: Callable[[], None]) -> None:
        self._lease = lease
        self._ttl_ms = ttl_ms
        self._interval = interval
        self._beat = beat
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nightowl-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._lease.renew(self._ttl_ms):
                    self.lost.set()
                self._beat()
            except Exception:  # a blip must not kill the beat; the next one retries
                log.warning("heartbeat failed", exc_info=True)


class Executor:
    """Executes deliveries for one worker process."""

    def __init__(
        self,
        *,
        store: Store,
        redis_client: redis.Redis,
        registry: Registry,
        clock: Clock,
        worker_id: str,
        key_prefix: str,
        heartbeat_interval: float,
        sinks: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.redis = redis_client
        self.registry = registry
        self.clock = clock
        self.worker_id = worker_id
        self.prefix = key_prefix
        self.heartbeat_interval = heartbeat_interval
        self.sinks = sinks

    def execute(self, agent_name: str, run_id: str, task_id: str | None = None) -> Outcome:
        run = self.store.get_run(run_id)
        if run is None:
            log.error("delivery for unknown run %s (task %s) dropped", run_id, task_id)
            return "unknown_run"
        if run.status in TERMINAL_STATUSES:
            log.info("run %s already %s; duplicate delivery dropped", run_id, run.status)
            return "duplicate"
        spec = self.registry.agents.get(run.agent)
        if spec is None:
            self.store.fail_without_attempt(
                run_id, "unknown_agent",
                f"agent {run.agent!r} is not in the loaded trigger modules", self.clock.now())
            return "unknown_agent"
        ttl_ms = int(spec.heartbeat_timeout.total_seconds() * 1000)
        lease = Lease(self.redis, f"{self.prefix}run:{run_id}", self.worker_id, ttl_ms / 1000)
        if not lease.acquire():
            until = self.clock.now() + timedelta(milliseconds=lease.remaining_ms())
            self.store.defer(run_id, until)
            log.info("run %s is leased by %s; delivery dropped", run_id, lease.holder())
            return "lease_held"
        try:
            return self._run_leased(spec, run, task_id, lease, ttl_ms)
        finally:
            lease.release()

    def _run_leased(self, spec: AgentSpec, run: Run, task_id: str | None, lease: Lease,
                    ttl_ms: int) -> Outcome:
        run_id, trigger = run.id, run.trigger
        started = self.store.begin_attempt(run_id, self.worker_id, task_id, self.clock.now(),
                                           spec.heartbeat_timeout)
        if started is None:
            return "duplicate"
        if started.deliveries > spec.max_deliveries:
            self._finish(started, _Verdict("failed", "poison", "failed", "poison"),
                         error=f"delivered {started.deliveries - 1} times without finishing "
                               f"(max_deliveries={spec.max_deliveries})")
            return "poison"
        logger = logging.LoggerAdapter(log, {"run_id": run_id, "agent": spec.name,
                                             "trigger": trigger, "attempt": started.attempt})
        latest: dict[str, Any] = {}
        ctx = AgentContext(
            run_id=run_id, idempotency_key=run.idempotency_key, attempt=started.attempt,
            logical_time=run.logical_time, trigger=trigger, agent=spec.name, fence=started.fence,
            deadline=self.clock.now() + spec.timeout, log=logger,
            outbox=OutboxBuffer(self.sinks), previous_heartbeat=run.last_heartbeat,
            _heartbeat_sink=lambda note, details: latest.update(note=note, details=details),
        )
        interval = min(self.heartbeat_interval, spec.heartbeat_timeout.total_seconds() / 3)
        def beat() -> None:
            self.store.beat(started, self.clock.now(), spec.heartbeat_timeout,
                            dict(latest) if latest else None)

        with _Heartbeat(lease, ttl_ms, interval, beat):
            try:
                result = self._call(spec, ctx, run.event)
            except Exception as exc:
                verdict = self._failure_verdict(spec, exc, started)
                self._finish(started, verdict, error=f"{type(exc).__name__}: {exc}",
                             error_class=type(exc).__qualname__, usage=ctx.usage_totals.as_dict(),
                             last_heartbeat=latest or None)
                logger.warning("run %s attempt %d %s: %s", run_id, started.attempt,
                               verdict.outcome, exc)
                return verdict.outcome
        ok = self._finish(started, _Verdict("succeeded", None, "succeeded", "succeeded"),
                          result=result, usage=ctx.usage_totals.as_dict(),
                          last_heartbeat=latest or None)
        if not ok:
            logger.warning("run %s attempt %d fenced_out: a newer attempt holds the run",
                           run_id, started.attempt)
            return "fenced_out"
        logger.info("run %s succeeded", run_id)
        return "succeeded"

    def _call(self, spec: AgentSpec, ctx: AgentContext, event_json: Any) -> Any:
        event = event_from_json(event_json)
        result = asyncio.run(spec.func(ctx, event)) if spec.is_async else spec.func(ctx, event)
        try:
            return json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            raise NotSerialisableError(
                f"agent {spec.name!r} ({spec.location}) returned a {type(result).__name__}"
                f" that is not JSON-serialisable: {exc}. Return dicts, lists, str, numbers, bool"
                " or None"
            ) from None

    def _failure_verdict(self, spec: AgentSpec, exc: Exception, started: StartedAttempt) -> _Verdict:
        if isinstance(exc, NotSerialisableError):
            return _Verdict("failed", "not_serialisable", "failed", "failed")
        if isinstance(exc, NonRetryable):
            return _Verdict("failed", "non_retryable", "failed", "failed")
        if not spec.retryable(exc):
            return _Verdict("failed", "error", "failed", "failed")
        if started.attempt >= spec.max_attempts:
            return _Verdict("dead", "attempts_exhausted", "failed", "dead")
        delay = spec.retry_backoff.delay(started.attempt - 1)
        return _Verdict("waiting", None, "failed", "retry", not_before_in=delay)

    def _finish(self, started: StartedAttempt, verdict: _Verdict, *, result: Any = None,
                error: str | None = None, error_class: str | None = None,
                usage: dict[str, Any] | None = None,
                last_heartbeat: dict[str, Any] | None = None) -> bool:
        now = self.clock.now()
        return self.store.finish(
            started, status=verdict.status, reason=verdict.reason,
            attempt_status=verdict.attempt_status, now=now, result=result, error=error,
            error_class=error_class, usage=usage, last_heartbeat=last_heartbeat,
            not_before=now + verdict.not_before_in if verdict.not_before_in else None,
        )
