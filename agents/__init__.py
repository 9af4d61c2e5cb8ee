"""The agent contract: `@agent`, `AgentContext` and the events agents receive.

This package imports nothing else of nightowl's, so agent code and its tests
depend only on it.
"""

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
