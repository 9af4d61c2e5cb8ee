"""The agent contract: `@agent`, `AgentContext` and the events agents receive.

This package imports nothing else of nightowl's, so agent code and its tests
depend only on it.
"""

from agents._budget import Budget
from agents._context import AgentContext, Usage
from agents._errors import AgentDefinitionError, AgentError, NightowlError, NonRetryable
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
from agents._spec import AgentSpec, Backoff, agent
from agents.location import SourceLocation
from agents.outbox import OutboxBuffer, OutboxValueError, OutboxWrite, UnknownSinkError
from agents.values import NotSerialisable, check_json, json_problem

__all__ = [
    "AgentContext",
    "AgentDefinitionError",
    "AgentError",
    "AgentSpec",
    "Backoff",
    "Budget",
    "CronTick",
    "Event",
    "ManualFire",
    "MetricAlert",
    "NightowlError",
    "NonRetryable",
    "NotSerialisable",
    "OutboxBuffer",
    "OutboxValueError",
    "OutboxWrite",
    "QueueDepth",
    "RowChange",
    "SourceLocation",
    "UnknownSinkError",
    "Usage",
    "agent",
    "check_json",
    "event_from_json",
    "event_to_json",
    "json_problem",
]
