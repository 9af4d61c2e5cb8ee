"""`@agent(...)`: declaring an agent and the options the runtime honours."""

from __future__ import annotations

import hashlib
import inspect
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Never

from agents._budget import Budget, SpendCap
from agents._errors import AgentDefinitionError, NonRetryable
from agents.location import SourceLocation, caller_location
from agents.options import as_timedelta, check_name, unknown_option_message

AgentFunc = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * factor**n))."""

    base: timedelta = timedelta(seconds=10)
    factor: float = 2.0
    cap: timedelta = timedelta(minutes=10)

    def delay(self, retry_number: int, rng: random.Random | None = None) -> timedelta:
        """Delay before retry `retry_number` (0 for the first retry)."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * self.factor**retry_number)
        return timedelta(seconds=(rng or random).uniform(0.0, ceiling))


Seconds = timedelta | int | float  # a duration option: a timedelta or a number of seconds


@dataclass(frozen=True, slots=True, eq=False)
class AgentSpec:
    """A registered agent: the function plus the policy the worker applies around it.

    Calling the spec calls the function, so users can unit-test agents directly.
    """

    name: str
    func: AgentFunc
    location: SourceLocation
    timeout: timedelta
    heartbeat_timeout: timedelta
    progress_timeout: timedelta | None
    max_attempts: int
    retry_backoff: Backoff
    retry_on: tuple[type[BaseException], ...]
    max_deliveries: int
    queue: str
    concurrency: int | None
    version: str
    cancel_grace: timedelta
    budget: Budget | None = None
    spend_cap: SpendCap | None = None
    is_async: bool = field(default=False)

    @property
    def task_name(self) -> str:
        """The Celery task name, as Flower shows it."""
        return f"agent.{self.name}"

    def retryable(self, exc: BaseException) -> bool:
        """Whether `exc` should lead to another attempt."""
        return not isinstance(exc, NonRetryable) and isinstance(exc, self.retry_on)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def _source_hash(func: AgentFunc) -> str:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = getattr(func, "__qualname__", repr(func))
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _positive_int(value: object, field_name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field_name} must be a positive integer, got {value!r}")
    return value


def _build(name: str, func: AgentFunc, location: SourceLocation, o: dict[str, Any]) -> AgentSpec:
    backoff = o["retry_backoff"]
    if not isinstance(backoff, Backoff):
        backoff = Backoff(base=as_timedelta(backoff, "retry_backoff", allow_zero=True))
    retry_on = o["retry_on"]
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not (
        isinstance(retry_on, tuple)
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
    ):
        raise ValueError(f"retry_on must be an exception class or a tuple of them, got {retry_on!r}")
    progress = o["progress_timeout"]
    queue = o["queue"]
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    version = o["version"]
    if version is not None and not isinstance(version, str):
        raise ValueError(f"version must be a string, got {version!r}")
    return AgentSpec(
        name=name,
        func=func,
        location=location,
        timeout=as_timedelta(o["timeout"], "timeout", allow_zero=False),
        heartbeat_timeout=as_timedelta(o["heartbeat_timeout"], "heartbeat_timeout", allow_zero=False),
        progress_timeout=None
        if progress is None
        else as_timedelta(progress, "progress_timeout", allow_zero=False),
        max_attempts=_positive_int(o["max_attempts"], "max_attempts") or 1,
        retry_backoff=backoff,
        retry_on=retry_on,
        max_deliveries=_positive_int(o["max_deliveries"], "max_deliveries") or 1,
        queue=queue,
        concurrency=_positive_int(o["concurrency"], "concurrency", optional=True),
        version=version or _source_hash(func),
        cancel_grace=as_timedelta(o["cancel_grace"], "cancel_grace"),
        budget=Budget.coerce(o["budget"]),
        spend_cap=SpendCap.coerce(o["spend_cap"]),
        is_async=inspect.iscoroutinefunction(func),
    )


_lock = threading.Lock()
_declared: list[AgentSpec] = []


def declared_agents(module: str | None = None) -> list[AgentSpec]:
    """Agents declared so far (optionally only those declared in `module`)."""
    with _lock:
        return [a for a in _declared if module is None or a.location.module == module]


def forget_module(module: str) -> None:
    """Drop declarations of `module` before it is imported afresh (reload, tests)."""
    with _lock:
        _declared[:] = [a for a in _declared if a.location.module != module]


def agent(
    name: str | None = None,
    /,
    *,
    timeout: Seconds = timedelta(minutes=30),
    heartbeat_timeout: Seconds = timedelta(seconds=60),
    progress_timeout: Seconds | None = None,
    max_attempts: int = 3,
    retry_backoff: Backoff | Seconds = Backoff(),
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    max_deliveries: int = 5,
    queue: str = "agents",
    concurrency: int | None = None,
    version: str | None = None,
    cancel_grace: Seconds = timedelta(seconds=30),
    budget: Budget | dict[str, Any] | None = None,
    spend_cap: SpendCap | dict[str, Any] | None = None,
    **unknown: Never,  # mypy rejects an unknown option; at run time it gets "did you mean"
) -> Callable[[AgentFunc], AgentSpec]:
    """Declare an agent: `@agent("daily-digest", timeout=timedelta(minutes=30))`.

    Options are checked here, at import of the trigger module, so a typo
    fails `nightowl triggers validate` instead of a run at 3 AM. The types say what each
    option takes; the checks in `_build` still run, for callers mypy does not see.
    """
    location = caller_location()
    problem = unknown_option_message(f"{location}: @agent({name!r})", unknown, DEFAULTS)
    if problem:
        raise AgentDefinitionError(problem)
    options: dict[str, Any] = {
        "timeout": timeout,
        "heartbeat_timeout": heartbeat_timeout,
        "progress_timeout": progress_timeout,
        "max_attempts": max_attempts,
        "retry_backoff": retry_backoff,
        "retry_on": retry_on,
        "max_deliveries": max_deliveries,
        "queue": queue,
        "concurrency": concurrency,
        "version": version,
        "cancel_grace": cancel_grace,
        "budget": budget,
        "spend_cap": spend_cap,
    }

    def decorate(func: AgentFunc) -> AgentSpec:
        agent_name = name if name is not None else func.__name__.replace("_", "-").lower()
        why = check_name(agent_name)
        if why:
            raise AgentDefinitionError(f"{location}: @agent name: {why}")
        if not callable(func):
            raise AgentDefinitionError(f"{location}: @agent({agent_name!r}) must decorate a function")
        try:
            spec = _build(agent_name, func, location, options)
        except ValueError as exc:
            raise AgentDefinitionError(f"{location}: @agent({agent_name!r}): {exc}") from None
        with _lock:
            _declared.append(spec)
        return spec

    return decorate


# The options and their defaults, from the one place they are written: agent()'s signature.
DEFAULTS: dict[str, Any] = {
    p.name: p.default
    for p in inspect.signature(agent).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}
