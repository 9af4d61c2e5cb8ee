"""`AgentContext`: what an agent sees of its run.

The worker runtime (or `agents.testing.AgentEnvironment`) injects the heartbeat sink, the
outbox buffer, the logger, the step journal and the provider gate, so this package never
imports the scheduler.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, overload

from agents._budget import Budget, BudgetExceeded
from agents._steps import MemoryJournal, StepCursor, StepError, StepRecord
from agents.breaker import OpenGate, ProviderGate
from agents.outbox import (
    OutboxBuffer,
)
from agents.values import check_json, finite_details

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class Usage:
    """Accumulated resource use (of an attempt, a step or a whole run)."""

    tokens: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0

    def add(self, tokens: int = 0, cost_usd: float = 0.0, tool_calls: int = 0) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd
        self.tool_calls += tool_calls

    def plus(self, other: Usage) -> Usage:
        return Usage(
            self.tokens + other.tokens, self.cost_usd + other.cost_usd, self.tool_calls + other.tool_calls
        )

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "cost_usd": self.cost_usd, "tool_calls": self.tool_calls}

    @classmethod
    def from_dict(cls, value: Any) -> Usage:
        """Usage as stored (a dict with any of the three counters; anything else is zero)."""
        if not isinstance(value, dict):
            return cls()

        def number(key: str, kind: type) -> Any:
            v = value.get(key, 0)
            return kind(v) if isinstance(v, int | float) and not isinstance(v, bool) else kind(0)

        return cls(number("tokens", int), number("cost_usd", float), number("tool_calls", int))


# The usage of the step running in this thread or task: `ctx.usage` inside a step adds to it.
_current_step: contextvars.ContextVar[Usage | None] = contextvars.ContextVar("nightowl_step", default=None)


HeartbeatSink = Callable[[str | None, dict[str, Any]], None]


def _drop_heartbeat(note: str | None, details: dict[str, Any]) -> None:
    """Default sink for contexts built without a runtime."""


@dataclass(kw_only=True)
class AgentContext:
    """The run an agent is executing, and the verbs it may use.

    `logical_time` is the time the trigger meant (the cron slot), never the
    wall clock at execution, so a retried 09:00 digest still covers 09:00.
    """

    run_id: str
    idempotency_key: str
    attempt: int
    logical_time: datetime | None
    trigger: str | None
    agent: str
    fence: int
    deadline: datetime | None
    log: logging.LoggerAdapter[logging.Logger]
    outbox: OutboxBuffer
    previous_heartbeat: dict[str, Any] | None = None
    replay_of: str | None = None
    _heartbeat_sink: HeartbeatSink = field(default=_drop_heartbeat, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _usage: Usage = field(default_factory=Usage, repr=False)
    # What earlier attempts of this run spent: budgets are for the run, not the attempt.
    _usage_base: Usage = field(default_factory=Usage, repr=False)
    _budget: Budget | None = field(default=None, repr=False)
    _over_budget: str | None = field(default=None, repr=False)
    _warned_details: bool = field(default=False, repr=False)
    _steps: StepCursor | None = field(default=None, repr=False)
    _gate: ProviderGate = field(default_factory=OpenGate, repr=False)
    _usage_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self._steps is None:
            self._steps = StepCursor(MemoryJournal(), attempt=self.attempt)
        self._check_budget()  # earlier attempts may already have spent it all

    def heartbeat(self, note: str | None = None, **details: Any) -> None:
        """Report progress. Cheap and non-blocking: the latest value wins.

        Details that cannot be stored (NaN, infinities, NUL characters, non-JSON types)
        are dropped, with one warning per attempt: a bad number must not fail the beat.
        """
        kept, dropped = finite_details(details)
        if note is not None and "\x00" in note:
            note, dropped = note.replace("\x00", ""), [*dropped, "note contains a NUL character"]
        if dropped and not self._warned_details:
            self._warned_details = True
            self.log.warning(
                "heartbeat details dropped (not storable as JSON): %s; further "
                "drops in this attempt are not logged",
                "; ".join(dropped),
            )
        self._heartbeat_sink(note, kept)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled, timed out or went over its budget: stop at the
        next safe point."""
        return self._cancel.is_set()

    @property
    def over_budget(self) -> str | None:
        """The budget limit the run went past (`tokens`, `cost_usd`, `tool_calls`,
        `max_steps`), or None."""
        return self._over_budget

    @property
    def breaker(self) -> ProviderGate:
        """The providers' circuit breaker (shared by the fleet in a worker): a client of
        your own may `check(provider)` before a call and report `succeeded`/`failed`."""
        return self._gate

    def usage(self, tokens: int = 0, cost_usd: float = 0.0, tool_calls: int = 0) -> None:
        """Add to the run's token, cost and tool-call counters (inside a step, to the step's
        too); past the agent's budget, `cancelled` becomes True at once."""
        check_json([tokens, cost_usd, tool_calls], "usage")
        for name, value in (("tokens", tokens), ("cost_usd", cost_usd), ("tool_calls", tool_calls)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"ctx.usage({name}=) must be a number >= 0, got {value!r}")
        with self._usage_lock:
            self._usage.add(int(tokens), float(cost_usd), int(tool_calls))
            step = _current_step.get()
            if step is not None:
                step.add(int(tokens), float(cost_usd), int(tool_calls))
        self._check_budget()

    @property
    def usage_totals(self) -> Usage:
        """What this attempt reported through `usage()` (replayed steps add nothing)."""
        return self._usage

    @property
    def run_usage(self) -> Usage:
        """What the whole run has spent: earlier attempts plus this one."""
        with self._usage_lock:
            return self._usage_base.plus(self._usage)

    def usage_record(self) -> dict[str, Any]:
        """The run's usage as it is stored: tokens, cost_usd, tool_calls and steps."""
        return {**self.run_usage.as_dict(), "steps": self.steps_taken}

    @property
    def steps_taken(self) -> int:
        """How many steps this run has begun (replayed or run) in this attempt."""
        assert self._steps is not None
        return self._steps.count

    def _check_budget(self) -> None:
        if self._budget is None or self._over_budget is not None:
            return
        total = self.run_usage
        assert self._steps is not None
        over = self._budget.exceeded(total.tokens, total.cost_usd, total.tool_calls, self._steps.count)
        if over is not None:
            self._over_budget = over
            self._cancel.set()
            self.log.warning(
                "run over its budget (%s): %s, %d steps", over, total.as_dict(), self._steps.count
            )

    # -- durable steps ----------------------------------------------------

    @overload
    def step(
        self, name: str, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]: ...

    @overload
    def step(self, name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` once per run: its result is recorded when it returns, and a
        later attempt of this run (a retry, a redelivery, a worker killed mid-run) gets the
        recorded result back instead of calling `fn` again.

        Steps are matched by call order and checked by name. An async `fn` makes this
        return an awaitable: `await ctx.step("ask", client.ask, prompt)`. Put in a step what
        is slow, billed or non-deterministic (an LLM call, a search, a tool call, reading the
        clock); keep the agent's own decisions outside, so they replay from the same inputs.
        A step interrupted before its record commits runs again (at least once).
        """
        if _current_step.get() is not None:
            raise StepError(
                f"ctx.step({name!r}) inside another step: steps cannot nest; call them in sequence"
            )
        if self._over_budget is not None:
            raise BudgetExceeded(self._over_budget, self.run_usage.as_dict())
        assert self._steps is not None
        occurrence, record = self._steps.begin(name)
        self._check_budget()  # max_steps counts this one
        if self._over_budget is not None:
            if record is None:
                self._steps.failed(name, occurrence)
            raise BudgetExceeded(self._over_budget, self.run_usage.as_dict())
        is_async = inspect.iscoroutinefunction(fn)
        if record is not None:
            self.log.debug("step %r replayed (recorded by attempt %d)", name, record.attempt)
            return _resolved(record.result) if is_async else record.result
        if is_async:
            return self._run_async(name, occurrence, fn, args, kwargs)
        usage = Usage()
        started = datetime.now(UTC)
        token = _current_step.set(usage)
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                raise StepError(
                    f"step {name!r} returned an awaitable from a sync function: pass the async "
                    "function itself to ctx.step and await the call"
                )
        except BaseException:
            self._steps.failed(name, occurrence)
            raise
        finally:
            _current_step.reset(token)
        return self._commit(name, occurrence, result, usage, started)

    async def _run_async(
        self,
        name: str,
        occurrence: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        assert self._steps is not None
        usage = Usage()
        started = datetime.now(UTC)
        token = _current_step.set(usage)
        try:
            result = await fn(*args, **kwargs)
        except BaseException:
            self._steps.failed(name, occurrence)
            raise
        finally:
            _current_step.reset(token)
        return self._commit(name, occurrence, result, usage, started)

    def _commit(self, name: str, occurrence: int, result: Any, usage: Usage, started: datetime) -> Any:
        assert self._steps is not None
        try:
            kept = self._steps.check(name, result)
        except BaseException:
            self._steps.failed(name, occurrence)
            raise
        self._steps.commit(
            name, occurrence, kept, usage.as_dict(), started_at=started, run_usage=self.usage_record
        )
        return kept

    def recorded_steps(self) -> list[StepRecord]:
        """The steps this run had recorded when this attempt began."""
        assert self._steps is not None
        return sorted(self._steps.journal.recorded(), key=lambda r: r.seq)


async def _resolved(value: T) -> T:
    return value
