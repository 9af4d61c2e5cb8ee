"""Running one delivery of `agent.<name>(run_id)`: the steps of DESIGN.md, in order.

1. load the run; terminal -> drop (the stored result stands);
2. take the Redis lease `run:<id>`; held elsewhere -> drop and note when it expires;
3. take a new fence from the database and open the attempt (blocked by a
   running run with the same overlap key -> skip or wait, by policy);
4. a watch thread beside the agent: lease, heartbeat, cancel requests, deadline;
5. one fenced transaction with the outcome; a stale fence writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis
import sqlalchemy as sa

from agents import (
    MAX_STEP_BYTES,
    AgentContext,
    AgentSpec,
    OpenGate,
    OutboxBuffer,
    ProviderGate,
    StepCursor,
    StepRecord,
    Usage,
    cancellable,
    event_from_json,
    stored_result,
)
from agents.outbox import MAX_OUTBOX_VALUE_BYTES, OutboxWrite
from scheduler.core import keys
from scheduler.core.clock import Clock
from scheduler.core.heartbeats import HeartbeatIndex, Member
from scheduler.core.leases import Lease, LeaseScripts
from scheduler.core.pauses import Pauses, PendingOnPause
from scheduler.core.scrub import scrub_text
from scheduler.core.steplog import StepFailures
from scheduler.core.tracebacks import format_failure
from scheduler.core.values import Beat, StartedAttempt
from scheduler.core.verdict import (
    EXHAUSTED,
    FENCED_OUT,
    POISON,
    TIMEOUT,
    AttemptOutcome,
    Cancel,
    attempt_verdict,
    cancelled,
)
from scheduler.core.vocabulary import Delivery, Reason, RunOverlap, RunStatus, WaitingFor
from scheduler.storage.models import Run
from scheduler.storage.store import (
    ConcurrencyBlockedError,
    OverlapBlockedError,
    is_transient,
)
from scheduler.worker.journal import SpendMeter, StoreJournal, UsageFeed, UsageSink
from scheduler.worker.logcapture import CapturingAdapter, LogCapture
from scheduler.worker.logcapture import flush as flush_logs
from triggers import Registry

log = logging.getLogger("nightowl.worker")
# One line per outage for the watch threads of this process, not a traceback per beat.
_WATCH_FAILURES = StepFailures(log)

# A run parked behind a running one is woken when that one ends; this is the fallback poll.
PARK_POLL = timedelta(seconds=30)


class _LastFailure(threading.local):
    """The agent's own (error class, scrubbed message) of this thread's latest delivery, for
    the Celery task to raise in Flower in place of a generic wrapper."""

    error: tuple[str | None, str] | None = None


LAST_FAILURE = _LastFailure()
# A run held by its agent's pause is released by the resume; this is the fallback look.
PAUSED_RECHECK = timedelta(seconds=60)


class ExecutorStore(Protocol):
    """What a delivery uses of storage, and nothing more: the attempt's own writes
    (AttemptStore), the holds on a run it could not start (RunStore's defer, park, skip) and
    the run it loads to judge such a delivery (Queries). A `Store` has them all."""

    def begin_attempt(
        self,
        run_id: str,
        worker: str,
        task_id: str | None,
        now: datetime,
        lease_ttl: timedelta = ...,
        *,
        agent: str,
        concurrency: int | None = None,
        agent_version: str | None = None,
    ) -> StartedAttempt | None: ...

    def beat(
        self,
        started: StartedAttempt,
        now: datetime,
        lease_ttl: timedelta,
        last_heartbeat: dict[str, Any] | None,
        *,
        progress_at: datetime | None = None,
        usage: dict[str, Any] | None = None,
        attempt_usage: dict[str, Any] | None = None,
    ) -> Beat: ...

    def finish(
        self,
        started: StartedAttempt,
        outcome: AttemptOutcome,
        *,
        now: datetime,
        result: Any = None,
        error: str | None = None,
        error_class: str | None = None,
        usage: dict[str, Any] | None = None,
        last_heartbeat: dict[str, Any] | None = None,
        outbox: Sequence[OutboxWrite] = (),
        attempt_usage: dict[str, Any] | None = None,
        traceback: str | None = None,
        progress_at: datetime | None = None,
    ) -> RunStatus | None: ...

    def steps_of(self, run_id: str) -> list[StepRecord]: ...

    def record_step(
        self,
        started: StartedAttempt,
        step: StepRecord,
        *,
        run_usage: dict[str, Any],
        attempt_usage: dict[str, Any],
    ) -> bool: ...

    def end_cancelled(self, run_id: str, now: datetime) -> str | None: ...

    def defer(self, run_id: str, not_before: datetime) -> None: ...

    def park(self, run_id: str, until: datetime, waiting_for: WaitingFor) -> None: ...

    def park_blocked(
        self,
        run_id: str,
        now: datetime,
        poll: timedelta,
        waiting_for: WaitingFor,
        held: str | None,
        *,
        cap: int = 1,
    ) -> bool: ...

    def skip(self, run_id: str, reason: Reason, now: datetime) -> bool: ...

    def park_paused(self, run_id: str, agent: str, until: datetime) -> bool: ...

    def skip_paused(self, run_id: str, agent: str, now: datetime) -> bool: ...

    def get_run(self, run_id: str) -> Run | None: ...


class DeliveryNotStarted(Exception):
    """The database or Redis failed before the attempt started: the delivery must go back to
    the broker (not be acked into oblivion); the task layer requeues it after a pause."""


def in_prefork_child() -> bool:
    """True inside a Celery prefork pool process: the only pool where we may kill the task."""
    from billiard.process import current_process

    return str(current_process().name).startswith("ForkPoolWorker")


class _Watch:
    """Beside the agent, every `interval` seconds: renew the lease, record the heartbeat,
    turn a cancel request or the passed deadline into `ctx.cancelled`, and after
    `grace` end the attempt hard.
    """

    def __init__(
        self,
        *,
        lease: Lease,
        ttl: timedelta,
        interval: timedelta,
        clock: Clock,
        deadline: datetime,
        grace: timedelta,
        cancel_event: threading.Event,
        beat: Callable[[], None],
        poll_cancel: Callable[[], Cancel | None],
        on_hard: Callable[[Cancel], None],
    ) -> None:
        self._lease = lease
        self._ttl = ttl
        self._interval = interval.total_seconds()
        self._clock = clock
        self._deadline = deadline
        self._grace = grace.total_seconds()
        self._cancel = cancel_event
        self._beat = beat
        self._poll_cancel = poll_cancel
        self._on_hard = on_hard
        self._stop = threading.Event()
        self._cancelled_at: float | None = None
        self.reason: Cancel | None = None
        self.hard = False
        self._thread = threading.Thread(target=self._run, name="nightowl-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._step()
            except Exception as exc:  # a blip must not kill the watch; the next step retries
                _WATCH_FAILURES.failed("heartbeat", exc)
            else:
                _WATCH_FAILURES.succeeded("heartbeat")

    def _step(self) -> None:
        self._lease.renew(self._ttl)
        self._beat()
        if self._cancelled_at is None:
            reason = self._poll_cancel()
            if reason is None and self._clock.now() >= self._deadline:
                reason = TIMEOUT
            if reason is not None:
                self.reason = reason
                self._cancelled_at = self._clock.monotonic()
                self._cancel.set()
        elif not self.hard and self._clock.monotonic() - self._cancelled_at >= self._grace:
            self.hard = True
            assert self.reason is not None
            self._on_hard(self.reason)


class Executor:
    """Executes deliveries for one worker process."""

    def __init__(
        self,
        *,
        store: ExecutorStore,
        redis_client: redis.Redis,
        registry: Registry,
        clock: Clock,
        worker_id: str,
        key_prefix: str,
        heartbeat_interval: timedelta,
        sinks: frozenset[str] = frozenset(),
        outbox_max_value_bytes: int = MAX_OUTBOX_VALUE_BYTES,
        step_max_bytes: int = MAX_STEP_BYTES,
        gate: Callable[[str], ProviderGate] | None = None,
        spend: SpendMeter | None = None,
        usage_sink: UsageSink | None = None,
        pauses: Callable[[], Pauses] | None = None,
    ) -> None:
        self.store = store
        self.redis = redis_client
        self.registry = registry
        self.clock = clock
        self.worker_id = worker_id
        self.prefix = key_prefix
        self.heartbeat_interval = heartbeat_interval
        self.sinks = sinks
        self.outbox_max_value_bytes = outbox_max_value_bytes
        self.step_max_bytes = step_max_bytes
        # The providers' breaker, per agent (the fleet's in Redis; none: always closed).
        self.gate: Callable[[str], ProviderGate] = gate or (lambda agent: OpenGate())
        self.spend = spend
        self.usage_sink = usage_sink
        self.pauses = pauses  # the fleet's pauses, as this process last read them
        self._scripts = LeaseScripts(redis_client)
        self.heartbeats = HeartbeatIndex(redis_client, key_prefix)

    def execute(self, agent_name: str, run_id: str, task_id: str | None = None) -> Delivery:
        """One delivery. The common path costs a lease, one start and one finish transaction."""
        LAST_FAILURE.error = None
        spec = self.registry.agents[agent_name]  # tasks exist only for registered agents
        # The owner is this delivery, not this process: in a threads pool two deliveries of
        # one run in the same process must not both see the lease as "mine".
        owner = f"{self.worker_id}/{uuid.uuid4().hex[:8]}"
        lease = Lease(
            self.redis, keys.run_lease(self.prefix, run_id), owner, spec.heartbeat_timeout, self._scripts
        )
        member: Member | None = None
        started: StartedAttempt | None = None
        try:
            try:
                if not lease.acquire():
                    until = self.clock.now() + lease.remaining()
                    self.store.defer(run_id, until)
                    log.info("run %s is leased by %s; delivery dropped", run_id, lease.holder())
                    return Delivery.LEASE_HELD
                held = self._held_by_pause(spec, run_id)
                if held is not None:
                    return held
                if self._over_spend_cap(spec, run_id):
                    return Delivery.PARKED
                started = self.store.begin_attempt(
                    run_id,
                    self.worker_id,
                    task_id,
                    self.clock.now(),
                    spec.heartbeat_timeout,
                    agent=spec.name,
                    concurrency=spec.concurrency,
                    agent_version=spec.version,
                )
                if started is None:
                    return self._not_started(agent_name, run_id, task_id)
            except OverlapBlockedError as blocked:
                return self._blocked(blocked)
            except ConcurrencyBlockedError as capped:
                self.store.park_blocked(
                    run_id, self.clock.now(), PARK_POLL, WaitingFor.CONCURRENCY, spec.name, cap=capped.cap
                )
                log.info("run %s waits: agent %s is at its concurrency cap", run_id, spec.name)
                return Delivery.PARKED
            except (sa.exc.DBAPIError, redis.RedisError) as exc:
                if isinstance(exc, sa.exc.DBAPIError) and not is_transient(exc):
                    raise
                # Nothing of this delivery ran: hand it back instead of acking it away.
                raise DeliveryNotStarted(
                    f"run {run_id}: {type(exc).__name__} before its attempt started"
                ) from exc
            member = Member(run_id, started.attempt, started.fence)
            return self._run_started(spec, started, member, lease)
        finally:
            self._release(lease, member)

    def _held_by_pause(self, spec: AgentSpec, run_id: str) -> Delivery | None:
        """A paused agent's run waits for the resume (or ends `skipped/paused`), before
        any attempt is taken; None: the agent is not paused, run it."""
        pause = self.pauses().agent(spec.name) if self.pauses is not None else None
        if pause is None:
            return None
        now = self.clock.now()
        if pause.pending is PendingOnPause.SKIP:
            if not self.store.skip_paused(run_id, spec.name, now):
                return None  # resumed since, started or ended: the usual path judges it
            log.info("run %s skipped: agent %s is paused (%s)", run_id, spec.name, pause.describe())
            return Delivery.SKIPPED
        if not self.store.park_paused(run_id, spec.name, now + PAUSED_RECHECK):
            return None  # resumed since this process read the pauses, or not startable
        log.info("run %s waits: agent %s is paused (%s)", run_id, spec.name, pause.describe())
        return Delivery.PAUSED

    def _over_spend_cap(self, spec: AgentSpec, run_id: str) -> bool:
        """Park the run until the window turns when its agent has spent its SpendCap across
        the fleet; no attempt is taken. A Redis error lets the run start (the counter is a
        guard rail, and the lease just taken shows Redis is back)."""
        if spec.spend_cap is None or self.spend is None:
            return False
        now = self.clock.now()
        try:
            reached = self.spend.reached(spec.name, spec.spend_cap, now)
        except redis.RedisError:
            log.warning("spend cap of agent %s not checked (Redis error); run %s starts", spec.name, run_id)
            return False
        if reached is None:
            return False
        limit, window_end = reached
        self.store.park(run_id, window_end, WaitingFor.SPEND_CAP)
        log.info(
            "run %s waits until %s: agent %s reached its spend cap (%s)",
            run_id,
            window_end.isoformat(),
            spec.name,
            limit,
        )
        return True

    def _release(self, lease: Lease, member: Member | None) -> None:
        """Drop the watchdog's deadlines and the run lease in one round trip.

        After the fenced finish: until then the deadlines must stay (a watchdog that sees
        one expire confirms against the database, which by now shows the run finished).
        Best effort: a lease left behind expires on its own within heartbeat_timeout.
        """
        pipe = self.redis.pipeline(transaction=False)
        if member is not None:
            self.heartbeats.clear(member, pipe)
        lease.release(pipe)
        try:
            pipe.execute()
        except redis.RedisError:
            log.warning("could not release run %s (its lease expires by itself)", lease.key, exc_info=True)

    def _not_started(self, agent_name: str, run_id: str, task_id: str | None) -> Delivery:
        """Why a delivery could not start its run: a duplicate, or a message that is wrong."""
        run = self.store.get_run(run_id)
        if run is None:
            log.error("delivery for unknown run %s (task %s) dropped", run_id, task_id)
            return Delivery.UNKNOWN_RUN
        if RunStatus(run.status).terminal:
            log.info("run %s already %s; duplicate delivery dropped", run_id, run.status)
            return Delivery.DUPLICATE
        if run.agent != agent_name:
            log.error("run %s belongs to agent %s, not %s; delivery dropped", run_id, run.agent, agent_name)
            return Delivery.UNKNOWN_RUN
        if run.cancel_requested is not None:
            reason = self.store.end_cancelled(run_id, self.clock.now())
            if reason is not None:
                log.info("run %s cancelled (%s) before this delivery started it", run_id, reason)
                return Delivery.CANCELLED
        if run.status == RunStatus.WAITING and run.not_before and run.not_before > self.clock.now():
            log.info(
                "run %s waits until %s (%s); early delivery dropped",
                run_id,
                run.not_before.isoformat(),
                run.waiting_for,
            )
            return Delivery.EARLY
        return Delivery.DUPLICATE

    def _blocked(self, blocked: OverlapBlockedError) -> Delivery:
        now = self.clock.now()
        if blocked.overlap == RunOverlap.SKIP:
            self.store.skip(blocked.run_id, Reason.OVERLAP, now)
            log.info("run %s skipped: another run of its trigger is running", blocked.run_id)
            return Delivery.SKIPPED
        self.store.park_blocked(blocked.run_id, now, PARK_POLL, WaitingFor.OVERLAP, blocked.key)
        log.info("run %s waits for the running run with the same overlap key", blocked.run_id)
        return Delivery.PARKED

    def _run_started(  # noqa: C901 (nested closures share one attempt's state with its watch thread)
        self,
        spec: AgentSpec,
        started: StartedAttempt,
        member: Member,
        lease: Lease,
    ) -> Delivery:
        run_id = started.run_id
        logger = logging.LoggerAdapter(
            log,
            {"run_id": run_id, "agent": spec.name, "trigger": started.trigger, "attempt": started.attempt},
        )
        refused = self._past_limits(spec, started, logger)
        if refused is not None:
            return refused
        latest: dict[str, Any] = {}
        progress: dict[str, datetime] = {"at": self.clock.now()}
        cancel_event = threading.Event()
        deadline = self.clock.now() + spec.timeout
        self._index_beat(member, spec, progress["at"])

        def on_progress(note: str | None, details: dict[str, Any]) -> None:
            # Coalesced: only the latest progress is kept; the watch thread writes it.
            latest.update(note=note, details=details)
            progress["at"] = self.clock.now()

        usage_lock = threading.Lock()  # a step's record and a beat write usage one at a time
        capture = LogCapture(started.attempt, self.clock.now)
        ctx = self._context(
            spec,
            started,
            CapturingAdapter(logger, capture),
            deadline=deadline,
            on_progress=on_progress,
            cancel_event=cancel_event,
            usage_lock=usage_lock,
        )
        feed = UsageFeed(spec.name, spec.spend_cap, self.spend, self.usage_sink, self.clock.now)

        last_beat = [Beat(True)]

        def poll_cancel() -> Cancel | None:
            if ctx.over_budget is not None:
                return Cancel.budget(ctx.over_budget)
            if not last_beat[0].current:
                return FENCED_OUT  # a newer attempt holds the run (a stall, a takeover)
            requested = last_beat[0].cancel_requested
            return Cancel.requested(requested) if requested is not None else None

        def beat() -> None:
            with usage_lock:
                last_beat[0] = self.store.beat(
                    started,
                    self.clock.now(),
                    spec.heartbeat_timeout,
                    dict(latest) if latest else None,
                    progress_at=progress["at"],
                    usage=ctx.usage_record(),
                    attempt_usage=ctx.usage_totals.as_dict(),
                )
            feed.push(ctx.usage_totals)
            flush_logs(self.store, run_id, capture)
            if last_beat[0].current:
                self._index_beat(member, spec, progress["at"])
            else:
                logger.warning(
                    "run %s attempt %d is fenced out (a newer attempt holds the run): stopping it",
                    run_id,
                    started.attempt,
                )

        def on_hard(reason: Cancel) -> None:
            if reason != FENCED_OUT:  # a fenced-out attempt has nothing it may write
                self._finish(
                    started,
                    cancelled(reason, hard=True),
                    error=f"still running {spec.cancel_grace} after {reason}",
                    last_heartbeat=dict(latest) or None,
                    usage=ctx.usage_record(),
                    attempt_usage=ctx.usage_totals.as_dict(),
                )
            if in_prefork_child():
                logger.error("run %s: terminating the pool process after %s", run_id, reason)
                os.kill(os.getpid(), signal.SIGKILL)
            logger.error(
                "run %s: agent ignores cancellation; this pool cannot terminate it (use --pool prefork)",
                run_id,
            )

        watch = _Watch(
            lease=lease,
            ttl=spec.heartbeat_timeout,
            clock=self.clock,
            deadline=deadline,
            interval=min(self.heartbeat_interval, spec.heartbeat_timeout / 3),
            grace=spec.cancel_grace,
            cancel_event=cancel_event,
            beat=beat,
            poll_cancel=poll_cancel,
            on_hard=on_hard,
        )
        with watch:
            try:
                # Earlier attempts may have spent the run's budget: then the agent is not called.
                over = ctx.over_budget is not None
                result = None if over else self._call(spec, ctx, started.event, cancel_event)
                error: BaseException | None = None
            except (Exception, asyncio.CancelledError) as exc:
                result, error = None, exc
        feed.push(ctx.usage_totals)
        flush_logs(self.store, run_id, capture, final=True)
        if watch.hard and watch.reason is not None:
            return cancelled(watch.reason, hard=True).delivery  # on_hard wrote it
        return self._conclude(
            spec,
            started,
            ctx,
            cancel=watch.reason,
            result=result,
            error=error,
            last_heartbeat=dict(latest) or None,
            progress_at=progress["at"] if latest else None,
        )

    def _conclude(
        self,
        spec: AgentSpec,
        started: StartedAttempt,
        ctx: AgentContext,
        *,
        cancel: Cancel | None,
        result: Any,
        error: BaseException | None,
        last_heartbeat: dict[str, Any] | None,
        progress_at: datetime | None = None,
    ) -> Delivery:
        """The verdict on an attempt whose agent returned or raised, written fenced."""
        logger = ctx.log.plain if isinstance(ctx.log, CapturingAdapter) else ctx.log
        run_id = started.run_id
        verdict = attempt_verdict(
            spec, started.counted_attempt, cancel, ctx.over_budget, error, deferrals=started.deferrals
        )
        written = self._finish(
            started,
            verdict,
            result=result,
            error=None if error is None else f"{type(error).__name__}: {error}",
            error_class=None if error is None else type(error).__qualname__,
            traceback=None if error is None else format_failure(error),
            progress_at=progress_at,
            usage=ctx.usage_record(),
            attempt_usage=ctx.usage_totals.as_dict(),
            last_heartbeat=last_heartbeat,
            outbox=ctx.outbox.writes,
        )
        if written is None:
            logger.warning(
                "run %s attempt %d fenced_out: a newer attempt holds the run", run_id, started.attempt
            )
            return Delivery.FENCED_OUT
        if written == RunStatus.CANCELLED and verdict.status == RunStatus.WAITING:
            logger.info("run %s cancelled: the cancel request outranks the retry", run_id)
            return Delivery.CANCELLED
        logger.log(
            logging.INFO if error is None or verdict.deferral else logging.WARNING,
            "run %s %s%s",
            run_id,
            verdict.delivery,
            "" if error is None else f": {error}",
        )
        return verdict.delivery

    def _past_limits(
        self, spec: AgentSpec, started: StartedAttempt, logger: logging.LoggerAdapter[logging.Logger]
    ) -> Delivery | None:
        """End a run that may not have this attempt: its last allowed attempt was lost with
        its worker, or it was delivered max_deliveries times (deferrals count for neither)."""
        if started.took_over and started.counted_attempt > spec.max_attempts:
            self._finish(
                started,
                EXHAUSTED,
                error=f"attempt {started.attempt - 1} was lost with its worker and "
                f"max_attempts={spec.max_attempts} is reached",
            )
            logger.error("run %s dead: attempts exhausted (its last worker was lost)", started.run_id)
            return EXHAUSTED.delivery
        if started.deliveries > spec.max_deliveries:
            self._finish(
                started,
                POISON,
                error=f"delivered {started.deliveries - 1} times without finishing "
                f"(max_deliveries={spec.max_deliveries})",
            )
            logger.error("run %s poisoned after %d deliveries", started.run_id, started.deliveries - 1)
            return POISON.delivery
        return None

    def _context(
        self,
        spec: AgentSpec,
        started: StartedAttempt,
        logger: logging.LoggerAdapter[logging.Logger],
        *,
        deadline: datetime,
        on_progress: Callable[[str | None, dict[str, Any]], None],
        cancel_event: threading.Event,
        usage_lock: threading.Lock,
    ) -> AgentContext:
        """The agent's view of this attempt: its run, its journal of steps (replayed from
        earlier attempts), the run's usage so far, the providers' breaker."""
        if started.agent_version and started.agent_version != spec.version:
            logger.warning(
                "run %s started with agent version %s; attempt %d runs version %s",
                started.run_id,
                started.agent_version,
                started.attempt,
                spec.version,
            )
        attempt_usage = Usage()
        return AgentContext(
            run_id=started.run_id,
            idempotency_key=started.idempotency_key,
            attempt=started.attempt,
            logical_time=started.logical_time,
            trigger=started.trigger,
            agent=spec.name,
            fence=started.fence,
            deadline=deadline,
            log=logger,
            outbox=OutboxBuffer(self.sinks, self.outbox_max_value_bytes),
            previous_heartbeat=started.previous_heartbeat,
            replay_of=started.replay_of,
            _heartbeat_sink=on_progress,
            _cancel=cancel_event,
            _budget=spec.budget,
            _usage=attempt_usage,
            _usage_base=Usage.from_dict(started.usage),
            _steps=StepCursor(
                StoreJournal(self.store, started, lambda: attempt_usage, usage_lock),
                attempt=started.attempt,
                max_bytes=self.step_max_bytes,
            ),
            _gate=self.gate(spec.name),
        )

    def _index_beat(self, member: Member, spec: AgentSpec, progress_at: datetime) -> None:
        """Move this attempt's deadlines in the watchdog's sorted sets (best effort: the
        database heartbeat is the truth and the watchdog falls back to it)."""
        now = self.clock.now().timestamp()
        progress = (
            progress_at.timestamp() + spec.progress_timeout.total_seconds()
            if spec.progress_timeout is not None
            else None
        )
        try:
            self.heartbeats.beat(member, now + spec.heartbeat_timeout.total_seconds(), progress)
        except redis.RedisError:
            log.warning("could not record heartbeat deadlines of run %s", member.run_id, exc_info=True)

    def _call(
        self, spec: AgentSpec, ctx: AgentContext, event_json: Any, cancel_event: threading.Event
    ) -> Any:
        event = event_from_json(event_json)
        if spec.is_async:
            result = asyncio.run(cancellable(spec.func(ctx, event), cancel_event))
        else:
            result = spec.func(ctx, event)
        return stored_result(result, spec.name, spec.location)

    def _finish(
        self,
        started: StartedAttempt,
        verdict: AttemptOutcome,
        *,
        result: Any = None,
        error: str | None = None,
        error_class: str | None = None,
        traceback: str | None = None,
        progress_at: datetime | None = None,
        usage: dict[str, Any] | None = None,
        last_heartbeat: dict[str, Any] | None = None,
        outbox: Sequence[OutboxWrite] = (),
        attempt_usage: dict[str, Any] | None = None,
    ) -> RunStatus | None:
        if error is not None:
            LAST_FAILURE.error = (error_class, scrub_text(error))
            # An agent's exception text may quote a URL with its secret, or hold a NUL
            # character (PostgreSQL's text refuses it): stored scrubbed and clean.
            error = scrub_text(error).replace("\x00", "\\x00")
        if usage is None:  # an attempt that never ran its agent leaves the run's usage as it was
            usage = started.usage
        return self.store.finish(
            started,
            verdict,
            now=self.clock.now(),
            result=result,
            error=error,
            error_class=error_class,
            traceback=traceback,
            progress_at=progress_at,
            usage=usage,
            last_heartbeat=last_heartbeat,
            outbox=outbox,
            attempt_usage=attempt_usage,
        )
