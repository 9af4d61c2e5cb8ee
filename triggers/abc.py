"""The trigger contract: what a trigger kind implements and what it returns.

A trigger only answers "what is due now, and what is my new state". Policy
that spans runs (overlap) lives on the `TriggerSpec` and the scheduler
applies it; storage and Celery never appear here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from agents import AgentSpec, Event, NightowlError, SourceLocation

Overlap = Literal["skip", "buffer_one", "allow", "cancel_other", "per_key"]
OVERLAP_POLICIES: tuple[str, ...] = ("skip", "buffer_one", "allow", "cancel_other", "per_key")


class TriggerError(NightowlError):
    """Base for trigger definition and evaluation errors."""


class TriggerDefinitionError(TriggerError):
    """A trigger declaration is invalid; the message names file:line, the field and the fix."""


class SourceDefinitionError(TriggerDefinitionError, ValueError):
    """A source constructor (`prometheus()`, `sql()`, `redis_list()`) got a bad argument;
    like every definition error it names the user's file:line, the field and the fix."""


class StateVersionError(TriggerError):
    """Persisted trigger state has a version this code cannot read."""


@dataclass(frozen=True, slots=True)
class Firing:
    """One run a trigger wants: its dedupe key, the time it stands for, its event."""

    idempotency_key: str
    logical_time: datetime
    event: Event
    # Runs with the same key never run at once under `per_key` (db_change: the row key).
    overlap_key: str | None = None


@dataclass(frozen=True, slots=True)
class MissedGap:
    """A contiguous stretch of slots that were not run (one ledger row, not one per slot)."""

    first: datetime
    last: datetime
    count: int
    reason: str = "missed"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The answer of one `evaluate`: runs to create, the state to persist, when to ask again."""

    firings: list[Firing]
    state: dict[str, Any]
    next_at: datetime
    missed: list[MissedGap] = field(default_factory=list)


class Trigger(Protocol):
    """A trigger kind. Implementations are small and pure; `evaluate` may do I/O to its source."""

    kind: str
    state_version: int

    def fingerprint(self) -> str:
        """Changes when the definition changes meaning (a new expression restarts from now)."""
        ...

    def evaluate(self, name: str, now: datetime, state: dict[str, Any] | None) -> Evaluation:
        """Firings due at `now` given the persisted `state` (None for a new trigger)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings for `triggers list/show`, with secrets masked."""
        ...


def check_state(state: dict[str, Any] | None, version: int, kind: str) -> dict[str, Any] | None:
    """The one place persisted state versions are checked."""
    if state is None:
        return None
    got = state.get("version")
    if got != version:
        raise StateVersionError(
            f"{kind} trigger state has version {got!r}, this nightowl reads version {version}; "
            "run `nightowl db upgrade` or reset the trigger's state"
        )
    return state


@dataclass(frozen=True, slots=True, eq=False)
class TriggerSpec:
    """A declared trigger: its name, the agent it wakes and the policy applied around it."""

    name: str
    agent: AgentSpec | str
    overlap: Overlap
    location: SourceLocation
    source: Trigger

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def agent_name(self) -> str:
        return self.agent if isinstance(self.agent, str) else self.agent.name


_lock = threading.Lock()
_declared: list[TriggerSpec] = []


def declare(spec: TriggerSpec) -> TriggerSpec:
    """Record a trigger for the loader; the declaring module is on `spec.location`."""
    with _lock:
        _declared.append(spec)
    return spec


def declared_triggers(module: str) -> list[TriggerSpec]:
    with _lock:
        return [t for t in _declared if t.location.module == module]


def forget_module(module: str) -> None:
    with _lock:
        _declared[:] = [t for t in _declared if t.location.module != module]
