"""The agent contract: `@agent`, `AgentContext` and the events agents receive.

This package imports nothing else of nightowl's, so agent code and its tests
depend only on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.lazy import lazy_names

if TYPE_CHECKING:
    from agents._budget import Budget, BudgetExceeded, SpendCap
    from agents._context import AgentContext, Usage
    from agents._errors import (
        AgentDefinitionError,
        AgentError,
        NightowlError,
        NonRetryable,
        ProviderUnavailable,
    )
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
    from agents._spec import AgentSpec, Backoff, agent
    from agents._steps import (
        MAX_STEP_BYTES,
        MemoryJournal,
        StepCursor,
        StepDiverged,
        StepError,
        StepFencedOut,
        StepJournal,
        StepRecord,
        StepTooLarge,
    )
    from agents.breaker import BreakerPolicy, BreakerState, LocalBreaker, OpenGate, ProviderGate
    from agents.location import SourceLocation
    from agents.outbox import OutboxBuffer, OutboxValueError, OutboxWrite, UnknownSinkError
    from agents.values import NotSerialisable, check_json, json_problem

_HOME = {
    "Budget": "agents._budget",
    "BudgetExceeded": "agents._budget",
    "SpendCap": "agents._budget",
    "AgentContext": "agents._context",
    "Usage": "agents._context",
    "AgentDefinitionError": "agents._errors",
    "AgentError": "agents._errors",
    "NightowlError": "agents._errors",
    "NonRetryable": "agents._errors",
    "ProviderUnavailable": "agents._errors",
    "CronTick": "agents._events",
    "Event": "agents._events",
    "ManualFire": "agents._events",
    "MetricAlert": "agents._events",
    "QueueDepth": "agents._events",
    "RowChange": "agents._events",
    "event_from_json": "agents._events",
    "event_to_json": "agents._events",
    "cancellable": "agents._run",
    "stored_result": "agents._run",
    "AgentSpec": "agents._spec",
    "Backoff": "agents._spec",
    "agent": "agents._spec",
    "MAX_STEP_BYTES": "agents._steps",
    "MemoryJournal": "agents._steps",
    "StepCursor": "agents._steps",
    "StepDiverged": "agents._steps",
    "StepError": "agents._steps",
    "StepFencedOut": "agents._steps",
    "StepJournal": "agents._steps",
    "StepRecord": "agents._steps",
    "StepTooLarge": "agents._steps",
    "BreakerPolicy": "agents.breaker",
    "BreakerState": "agents.breaker",
    "LocalBreaker": "agents.breaker",
    "OpenGate": "agents.breaker",
    "ProviderGate": "agents.breaker",
    "SourceLocation": "agents.location",
    "OutboxBuffer": "agents.outbox",
    "OutboxValueError": "agents.outbox",
    "OutboxWrite": "agents.outbox",
    "UnknownSinkError": "agents.outbox",
    "NotSerialisable": "agents.values",
    "check_json": "agents.values",
    "json_problem": "agents.values",
}


__getattr__ = lazy_names(__name__, _HOME, globals())


__all__ = [
    "MAX_STEP_BYTES",
    "AgentContext",
    "AgentDefinitionError",
    "AgentError",
    "AgentSpec",
    "Backoff",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetExceeded",
    "CronTick",
    "Event",
    "LocalBreaker",
    "ManualFire",
    "MemoryJournal",
    "MetricAlert",
    "NightowlError",
    "NonRetryable",
    "NotSerialisable",
    "OpenGate",
    "OutboxBuffer",
    "OutboxValueError",
    "OutboxWrite",
    "ProviderGate",
    "ProviderUnavailable",
    "QueueDepth",
    "RowChange",
    "SourceLocation",
    "SpendCap",
    "StepCursor",
    "StepDiverged",
    "StepError",
    "StepFencedOut",
    "StepJournal",
    "StepRecord",
    "StepTooLarge",
    "UnknownSinkError",
    "Usage",
    "agent",
    "cancellable",
    "check_json",
    "event_from_json",
    "event_to_json",
    "json_problem",
    "stored_result",
]
