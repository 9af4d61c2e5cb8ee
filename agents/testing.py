"""Test an agent without a broker or a database: `AgentEnvironment` (Temporal's
`ActivityEnvironment` idea) runs one attempt with a real `AgentContext` and captures what
the worker would have recorded.

    from agents.testing import AgentEnvironment, cron_tick

    def test_digest_covers_its_slot() -> None:
        env = AgentEnvironment()
        out = env.run(daily_digest, cron_tick(trigger="digest-9am"))
        assert out.status == "succeeded"
        assert out.outbox[0].key == "digest:2025-01-06"

`run` never raises the agent's exception: it is `Captured.error`, and `raise_error()`
re-raises it. Simulate what a real run meets with the constructor: a later attempt
(`attempt`, `previous_heartbeat`, the `steps` an earlier attempt recorded and what it spent,
`usage_before`), a cancel at a chosen point (`cancel_at_heartbeat`, `cancel_at_step`), a
timeout, a budget, an open circuit breaker. The event goes through its stored JSON form on
the way in, as it does between the scheduler and the worker, so the agent sees the types a
worker would give it.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents._budget import Budget
from agents._context import AgentContext, Usage
from agents._errors import ProviderUnavailable
from agents._events import (
    CronTick,
    Event,
    ManualFire,
    MetricAlert,
    QueueDepth,
    RowChange,
    event_from_json,
    event_to_json,
)
from agents._run import cancellable, stored_result
from agents._spec import AgentSpec
from agents._steps import MAX_STEP_BYTES, MemoryJournal, StepRecord, as_records
from agents._testing_capture import (
    CANCELLED,
    TIMED_OUT,
    CancellingCursor,
    Captured,
    Probe,
    capturing_logger,
)
from agents._testing_events import (
    DEFAULT_TIME,
    EVENT_KINDS,
    cron_tick,
    event_for,
    logical_time_of,
    manual_fire,
    metric_alert,
    queue_depth,
    row_change,
)
from agents.breaker import LocalBreaker, ProviderGate
from agents.location import SourceLocation
from agents.outbox import OutboxBuffer
from agents.values import event_problem, json_problem

__all__ = [
    "DEFAULT_TIME",
    "EVENT_KINDS",
    "AgentEnvironment",
    "Captured",
    "cron_tick",
    "event_for",
    "logical_time_of",
    "manual_fire",
    "metric_alert",
    "queue_depth",
    "row_change",
]

_EVENT_TYPES = (CronTick, RowChange, QueueDepth, MetricAlert, ManualFire)
_DEFAULT_GRACE_S = 30.0  # @agent's cancel_grace default, for a plain callable
_WAIT_POLL_S = 0.005  # how often the environment looks at a running agent with a timeout


@dataclass(frozen=True, slots=True)
class _Target:
    """What the environment needs of the agent, from an `AgentSpec` or a plain callable."""

    name: str
    func: Callable[..., Any]
    location: SourceLocation | str
    is_async: bool
    budget: Budget | None
    cancel_grace_s: float

    @classmethod
    def of(cls, agent: AgentSpec | Callable[..., Any]) -> _Target:
        if isinstance(agent, AgentSpec):
            return cls(
                agent.name,
                agent.func,
                agent.location,
                agent.is_async,
                agent.budget,
                agent.cancel_grace.total_seconds(),
            )
        if not callable(agent):
            raise TypeError(f"run() needs an @agent or a callable (ctx, event), got {agent!r}")
        name = getattr(agent, "__name__", type(agent).__name__).replace("_", "-").lower()
        return cls(
            name,
            agent,
            _location_of(agent),
            _is_async(agent),
            None,
            _DEFAULT_GRACE_S,
        )


def _is_async(func: Callable[..., Any]) -> bool:
    """An `async def`, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def _location_of(func: Callable[..., Any]) -> SourceLocation | str:
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return repr(func)
    return SourceLocation(code.co_filename, code.co_firstlineno, getattr(func, "__module__", "") or "")


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"{name} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


def _count(value: int | None, name: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _seed(steps: Sequence[StepRecord | tuple[str, Any]]) -> list[StepRecord]:
    records = as_records(steps)
    for record in records:
        problem = json_problem(record.result, f"steps[{record.seq}] ({record.name!r}) result")
        if problem is not None:
            raise ValueError(f"a recorded step holds JSON only: {problem}")
    return records


def _spent(records: Sequence[StepRecord]) -> Usage:
    total = Usage()
    for record in records:
        total = total.plus(Usage.from_dict(record.usage))
    return total


class AgentEnvironment:
    """Runs an agent's attempt in-process with a real `AgentContext`; see the module doc.

    - `logical_time`: defaults to the event's own (a cron slot, a row's timestamp cursor),
      else `DEFAULT_TIME`. `attempt`, `run_id`, `idempotency_key` (default `test:<run_id>`)
      and `trigger` (default the event's trigger, else "test") are what `ctx` shows.
    - `previous_heartbeat`: what an earlier attempt last reported, `{"note", "details"}`
      (`Captured.last_heartbeat` of that attempt).
    - `steps`: the steps an earlier attempt completed, as `StepRecord`s or `(name, result)`
      pairs in call order: they replay instead of running. `usage_before` (a `Usage` or its
      dict) is what earlier attempts spent and counts towards the budget; it defaults to
      the seeded steps' own usage.
    - `sinks`: the outbox sink names that exist; None accepts any name (the environment
      cannot see which sinks your trigger modules register), a collection refuses others
      with `UnknownSinkError`, as the worker does.
    - `cancel_at_heartbeat=N`: `ctx.cancelled` becomes True right after the N-th heartbeat;
      `cancel_at_step=N`: when step N begins (so inside it). The attempt ends `cancelled`.
    - `timeout`: `ctx.cancelled` is set once the agent has run this long, and `ctx.deadline`
      says when. With a timeout the agent runs in a thread of its own, so the environment
      can stop waiting `cancel_grace` (default: the agent's own) after any cancel and report
      `timed_out` with a `TimeoutError` (the worker would terminate the process). Without
      one, it runs in the calling thread (an async agent in a fresh event loop, in a
      thread of its own when the caller is inside a running loop).
    - `budget`: defaults to the agent's own; `breaker` to a fresh `LocalBreaker`, kept by
      the environment (`env.breaker`) across its runs; `max_step_bytes` as the worker's
      `NIGHTOWL_STEP_MAX_BYTES`.

    Each `run` starts from the same configuration: nothing an attempt does carries over
    to the next run but the breaker's state.
    """

    def __init__(
        self,
        *,
        logical_time: datetime | None = None,
        attempt: int = 1,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        trigger: str | None = None,
        previous_heartbeat: dict[str, Any] | None = None,
        steps: Sequence[StepRecord | tuple[str, Any]] = (),
        usage_before: Usage | dict[str, Any] | None = None,
        sinks: Iterable[str] | None = None,
        cancel_at_heartbeat: int | None = None,
        cancel_at_step: int | None = None,
        timeout: float | timedelta | None = None,
        cancel_grace: float | timedelta | None = None,
        budget: Budget | dict[str, Any] | None = None,
        breaker: ProviderGate | None = None,
        max_step_bytes: int = MAX_STEP_BYTES,
    ) -> None:
        if logical_time is not None and logical_time.tzinfo is None:
            raise ValueError("logical_time must be timezone-aware (the worker's always is)")
        self.attempt = _count(attempt, "attempt") or 1
        self.logical_time = logical_time
        self.run_id = run_id or "test-run"
        self.idempotency_key = idempotency_key or f"test:{self.run_id}"
        self.trigger = trigger
        self.previous_heartbeat = previous_heartbeat
        self.steps = _seed(steps)
        if isinstance(usage_before, dict):
            usage_before = Usage.from_dict(usage_before)
        self.usage_before = _spent(self.steps) if usage_before is None else usage_before
        self.sinks = None if sinks is None else frozenset(sinks)
        self.cancel_at_heartbeat = _count(cancel_at_heartbeat, "cancel_at_heartbeat")
        self.cancel_at_step = _count(cancel_at_step, "cancel_at_step")
        self.timeout_s = _seconds(timeout, "timeout")
        self.cancel_grace_s = _seconds(cancel_grace, "cancel_grace")
        self.budget = Budget.coerce(budget)
        self.breaker: ProviderGate = breaker if breaker is not None else LocalBreaker()
        self.max_step_bytes = _count(max_step_bytes, "max_step_bytes") or MAX_STEP_BYTES

    def run(self, agent: AgentSpec | Callable[..., Any], event: Event | None = None) -> Captured:
        """Run one attempt of `agent` (an `@agent` or a plain `(ctx, event)` callable, sync
        or async) on `event` (default: a `ManualFire` of the trigger) and return what it
        did. Never raises what the agent raised; a bad argument raises at once."""
        target = _Target.of(agent)
        received = self._event(event)
        probe = Probe(self.cancel_at_heartbeat)
        journal = MemoryJournal([dataclasses.replace(r, result=copy.deepcopy(r.result)) for r in self.steps])
        cursor = CancellingCursor(
            journal,
            attempt=self.attempt,
            max_bytes=self.max_step_bytes,
            cancel_at=self.cancel_at_step,
            on_cancel=lambda: probe.cancel(CANCELLED),
        )
        lines: list[str] = []
        ctx = self._context(target, received, probe, cursor, lines)
        began = time.monotonic()
        result, error = self._attempt(target, ctx, received, probe)
        return Captured(
            agent=target.name,
            event=received,
            status=_status(probe.cause, ctx.over_budget, error),
            result=result,
            error=error,
            heartbeats=list(probe.heartbeats),
            outbox=ctx.outbox.writes,
            usage=Usage().plus(ctx.usage_totals),
            run_usage=ctx.run_usage,
            steps=list(journal.written),
            replayed=cursor.replayed,
            logs=list(lines),
            duration_s=time.monotonic() - began,
        )

    def _event(self, event: Event | None) -> Event:
        """The event as the worker hands it over: rebuilt from its stored JSON."""
        if event is None:
            event = manual_fire(trigger=self.trigger or "test")
        if not isinstance(event, _EVENT_TYPES):
            raise TypeError(
                f"event must be a CronTick, RowChange, QueueDepth, MetricAlert or ManualFire "
                f"(agents.testing builds each: cron_tick(), row_change(), ...), got {event!r}"
            )
        stored = event_to_json(event)
        problem = event_problem(event, stored)
        if problem is not None:
            raise ValueError(f"this event cannot be stored, so no run would receive it: {problem}")
        return event_from_json(stored)

    def _context(
        self, target: _Target, event: Event, probe: Probe, cursor: CancellingCursor, lines: list[str]
    ) -> AgentContext:
        trigger = self.trigger or getattr(event, "trigger", None) or "test"
        extra = {"run_id": self.run_id, "agent": target.name, "trigger": trigger, "attempt": self.attempt}
        return AgentContext(
            run_id=self.run_id,
            idempotency_key=self.idempotency_key,
            attempt=self.attempt,
            logical_time=self.logical_time or logical_time_of(event) or DEFAULT_TIME,
            trigger=trigger,
            agent=target.name,
            fence=self.attempt,
            deadline=self._deadline(),
            log=logging.LoggerAdapter(capturing_logger(lines), extra),
            outbox=OutboxBuffer(self.sinks),
            previous_heartbeat=copy.deepcopy(self.previous_heartbeat),
            _heartbeat_sink=probe.heartbeat,
            _cancel=probe.flag,
            _usage_base=Usage().plus(self.usage_before),
            _budget=self.budget if self.budget is not None else target.budget,
            _steps=cursor,
            _gate=self.breaker,
        )

    def _deadline(self) -> datetime | None:
        if self.timeout_s is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.timeout_s)

    def _attempt(
        self, target: _Target, ctx: AgentContext, event: Event, probe: Probe
    ) -> tuple[Any, BaseException | None]:
        """Call the agent, in this thread or (with a timeout, or inside a running event
        loop) in one of its own that the environment may stop waiting for."""

        def call() -> Any:
            if target.is_async:
                value = asyncio.run(cancellable(target.func(ctx, event), probe.flag))
            else:
                value = target.func(ctx, event)
            return stored_result(value, target.name, target.location)

        if self.timeout_s is None and not (target.is_async and _in_event_loop()):
            try:
                return call(), None
            except (Exception, asyncio.CancelledError) as exc:
                return None, exc
        grace = self.cancel_grace_s if self.cancel_grace_s is not None else target.cancel_grace_s
        return _in_thread(call, probe, self.timeout_s, grace)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(
    call: Callable[[], Any], probe: Probe, timeout_s: float | None, grace_s: float
) -> tuple[Any, BaseException | None]:
    """Run `call` in a daemon thread, the calling thread acting as the worker's watch: it
    cancels the run at `timeout_s`, and stops waiting `grace_s` after any cancel."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["result"] = call()
        except (Exception, asyncio.CancelledError) as exc:
            box["error"] = exc
        except BaseException as exc:  # SystemExit and the like: the caller's to see
            box["fatal"] = exc
        finally:
            done.set()

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(body,), name="nightowl-agent", daemon=True
    )
    began = time.monotonic()
    thread.start()
    while not done.wait(_WAIT_POLL_S):
        now = time.monotonic()
        if timeout_s is not None and now - began >= timeout_s:
            probe.cancel(TIMED_OUT)
        cancelled_at = probe.flag.set_at
        if cancelled_at is not None and now - cancelled_at >= grace_s:
            why = {TIMED_OUT: "its timeout", CANCELLED: "it was cancelled"}.get(probe.cause or "")
            return None, TimeoutError(
                f"the agent was still running {grace_s:g}s after {why or 'it went over its budget'}"
                " (cancel_grace); the worker would have terminated it"
            )
    if "fatal" in box:
        raise box["fatal"]
    return box.get("result"), box.get("error")


def _status(cause: str | None, over_budget: str | None, error: BaseException | None) -> str:
    """The attempt's outcome, ranked as the worker's verdict ranks it: the first cancel
    (a simulated cancel, the timeout, the budget) outranks what the agent did after it."""
    if cause is not None:
        return cause
    if over_budget is not None:
        return f"budget_exceeded/{over_budget}"
    if isinstance(error, ProviderUnavailable):
        return "waiting/provider_unavailable"
    return "succeeded" if error is None else "failed"
