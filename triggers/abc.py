"""The trigger contract: what a trigger kind implements and what it returns.

A trigger only answers "what is due now, and what is my new state". Policy
that spans runs (overlap) lives on the `TriggerSpec` and the scheduler
applies it; storage and Celery never appear here.

This module is public (docs/extending.md): a new kind subclasses `Trigger` (a kind that
reads nothing but the clock, like cron) or `PollingTrigger` (a kind that reads an outside
source, like db_change). The state a kind returns is its own; the scheduler, the watchdog
and the CLI read it only through `TriggerStatus.of(state)` and
`triggers.sources.SourceHealth.of(state)`, so a kind may change its keys freely.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

from pydantic import SecretStr

from agents import AgentSpec, Event, NightowlError, SourceLocation
from triggers.urls import SourceDefaults

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


class TriggerStatus(StrEnum):
    """What a trigger's persisted state says about it, for listings, metrics and alerts."""

    OK = "ok"
    PENDING = "pending"  # a threshold is breached, not yet for `for_`
    FIRING = "firing"  # a threshold alert is firing
    SOURCE_FAILING = "source_failing"  # the last polls in a row failed (triggers.sources)

    @classmethod
    def of(cls, state: Mapping[str, Any] | None) -> TriggerStatus:
        """The status a persisted state records. Two keys mean something outside the kind
        that wrote them: `source_failing` (`triggers.sources.record_failure`) and
        `alert_state` (the threshold machine of metric and queue_depth)."""
        if state and state.get("source_failing"):
            return cls.SOURCE_FAILING
        return cls.alert_of(state)

    @classmethod
    def alert_of(cls, state: Mapping[str, Any] | None) -> TriggerStatus:
        """The threshold alert's status alone (ok for kinds with no threshold): a failing
        source freezes the alert where it was, and listings show both."""
        label = (state or {}).get("alert_state")
        return cls(label) if label in {"pending", "firing"} else cls.OK


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The answer of one `evaluate`: runs to create, the state to persist, when to ask again."""

    firings: list[Firing]
    state: dict[str, Any]
    next_at: datetime
    missed: list[MissedGap] = field(default_factory=list)

    @property
    def status(self) -> TriggerStatus:
        """The status the new state records (what `triggers list` and /metrics show)."""
        return TriggerStatus.of(self.state)


class Trigger(Protocol):
    """A trigger kind. Implementations are small and pure; `evaluate` may do I/O to its source.

    Subclass it (or `PollingTrigger`) to inherit `polls` and `bind`; any class with these
    members satisfies it.
    """

    kind: str
    state_version: int
    # True when `evaluate` reads an outside source: the scheduler then runs it on a thread
    # pool (a slow source never delays cron) and persists its state after every poll.
    polls: ClassVar[bool] = False
    # True when `evaluate` consumes its source through a cursor (db_change): a paused
    # trigger of such a kind is not evaluated at all, so its cursor stays put and what
    # changed while it was paused fires after resume. Other kinds keep evaluating while
    # paused (their state stays true) and fire nothing.
    consumes: ClassVar[bool] = False

    def fingerprint(self) -> str:
        """Changes when the definition changes meaning (a new expression restarts from now)."""
        ...

    def evaluate(self, name: str, now: datetime, state: dict[str, Any] | None) -> Evaluation:
        """Firings due at `now` given the persisted `state` (None for a new trigger)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings for `triggers list/show`, with secrets masked."""
        ...

    def bind(self, defaults: SourceDefaults) -> None:
        """Receive nightowl's own database and broker URLs, for sources left unset.

        Called once by each process that loads the trigger modules; a kind that reads no
        source ignores it."""
        return None

    def secrets(self) -> tuple[SecretStr | None, ...]:
        """The connection URLs this trigger holds: every nightowl process registers them
        with its log scrubber, so an error quoting one never shows the password."""
        return ()


class PollingTrigger(Trigger, Protocol):
    """A kind that polls an outside source (db_change, queue_depth, metric).

    Its source problems belong in the state it returns, not in exceptions:
    `triggers.sources.record_failure(state, message, now)` and `record_success(state)`.
    `bind` keeps the defaults in `self.defaults`.
    """

    polls: ClassVar[bool] = True
    defaults: SourceDefaults

    def bind(self, defaults: SourceDefaults) -> None:
        self.defaults = defaults


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


_MEMBERS = ("kind", "state_version", "polls", "fingerprint", "evaluate", "describe", "bind", "secrets")


def declare(spec: TriggerSpec) -> TriggerSpec:
    """Record a trigger for the loader; the declaring module is on `spec.location`.

    A kind written to the 0.1 contract (no `polls`, `bind`, `secrets`) fails here, at
    load, with the fix, rather than deep in the scheduler's first tick."""
    missing = [m for m in _MEMBERS if not hasattr(spec.source, m)]
    if missing:
        kind = type(spec.source).__name__
        raise TriggerDefinitionError(
            f"{spec.location}: trigger {spec.name!r}: its kind {kind} lacks {', '.join(missing)}; "
            "subclass triggers.abc.Trigger (or triggers.abc.PollingTrigger for a kind that "
            "reads a source), which provides polls, bind and secrets (docs/extending.md)"
        )
    with _lock:
        _declared.append(spec)
    return spec


def declared_triggers(module: str) -> list[TriggerSpec]:
    with _lock:
        return [t for t in _declared if t.location.module == module]


def forget_module(module: str) -> None:
    with _lock:
        _declared[:] = [t for t in _declared if t.location.module != module]
