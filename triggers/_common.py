"""Checks every trigger constructor shares: name, agent reference, overlap, options."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, cast

from agents import AgentSpec, SourceLocation
from agents.options import check_choice, check_name, unknown_option_message
from triggers.abc import OVERLAP_POLICIES, Overlap, SourceDefinitionError, TriggerDefinitionError

T = TypeVar("T")
P = ParamSpec("P")

# Set while the loader imports a module: a trigger constructor's definition error is kept
# here and the import goes on, so `triggers validate` reports every bad trigger of a
# module at once instead of the first one per try.
_COLLECTED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "nightowl_collected", default=None
)


@contextmanager
def collecting(problems: list[str]) -> Iterator[None]:
    token = _COLLECTED.set(problems)
    try:
        yield
    finally:
        _COLLECTED.reset(token)


def collects(constructor: Callable[P, T]) -> Callable[P, T]:
    """A trigger constructor whose definition error, during a load, is recorded rather than
    raised (it then returns None: the trigger is not declared)."""

    @functools.wraps(constructor)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return constructor(*args, **kwargs)
        except TriggerDefinitionError as exc:
            sink = _COLLECTED.get()
            if sink is None:
                raise
            sink.append(str(exc))
            return cast(T, None)

    return wrapper


def fail(location: SourceLocation, call: str, field: str, problem: str, fix: str) -> TriggerDefinitionError:
    """The one error shape users see: where, which field, what is wrong, what to do."""
    return TriggerDefinitionError(f"{location}: {call}: field {field!r}: {problem}. Fix: {fix}")


def reject_unknown(location: SourceLocation, call: str, extra: dict[str, Any], valid: Iterable[str]) -> None:
    message = unknown_option_message(f"{location}: {call}", extra, valid)
    if message:
        raise TriggerDefinitionError(message)


def check_common(
    location: SourceLocation, call: str, name: object, agent: object, overlap: object
) -> tuple[str, AgentSpec | str, Overlap]:
    why = check_name(name)
    if why:
        raise fail(location, call, "name", why, "pick a name like 'digest-9am'")
    if isinstance(agent, str):
        agent_ref: AgentSpec | str = agent  # resolved by the loader once the module is imported
    elif isinstance(agent, AgentSpec):
        agent_ref = agent
    elif callable(agent):
        raise fail(
            location,
            call,
            "agent",
            f"{getattr(agent, '__name__', agent)!r} is not an agent",
            "decorate the function with @agent('name') from agents",
        )
    else:
        raise fail(location, call, "agent", f"got {agent!r}", "pass an @agent function or its name")
    try:
        policy = check_choice(overlap, "overlap", OVERLAP_POLICIES)
    except ValueError as exc:
        raise fail(location, call, "overlap", str(exc), "use one of the listed policies") from None
    return str(name), agent_ref, policy  # type: ignore[return-value]


def field_check(location: SourceLocation, call: str, field: str, fix: str, check: Callable[[], T]) -> T:
    """Run a validator and turn its ValueError into a located TriggerDefinitionError."""
    try:
        return check()
    except ValueError as exc:
        raise fail(location, call, field, str(exc), fix) from None


def source_check(call: str, field: str, fix: str, check: Callable[[], T]) -> T:
    """`field_check` for a source constructor (`prometheus(...)`): its ValueError becomes a
    SourceDefinitionError naming the user's file:line (still a ValueError)."""
    from agents.location import caller_location

    try:
        return check()
    except SourceDefinitionError:
        raise
    except ValueError as exc:
        raise SourceDefinitionError(str(fail(caller_location(), call, field, str(exc), fix))) from None
