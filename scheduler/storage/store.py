"""The whole store: every statement group of nightowl's own database on one engine.

Each group keeps its table's statements in one home (runs.py, attempts.py,
trigger_state.py, dead_letters.py, queries.py); `Store` only composes them, so a caller
that needs everything (the CLI, the services' wiring) holds one object, while a caller that
needs one group may take just that group (`scheduler.core.publish.dispatch` takes a
RunStore). The names callers import from here stay importable from here.
"""

from __future__ import annotations

from agents.outbox import OutboxWrite
from scheduler.core.values import (  # re-exported: callers may still import them from here
    Beat,
    Dispatch,
    MissedRow,
    NewRun,
    QueuedRun,
    StartedAttempt,
    StateWrite,
    new_run_id,
)
from scheduler.storage._sql import attempts_t, dead_t, missed_t, runs_t, state_t
from scheduler.storage.attempts import (
    FINISH_RETRY_FOR,
    AttemptStore,
    ConcurrencyBlockedError,
    OverlapBlockedError,
    Plan,
    is_transient,
    plan_for,
)
from scheduler.storage.dead_letters import DeadLetterStore
from scheduler.storage.pauses import PauseStore
from scheduler.storage.queries import Queries
from scheduler.storage.run_logs import RunLogStore
from scheduler.storage.runs import RunStore
from scheduler.storage.steps import StepStore
from scheduler.storage.trigger_state import TriggerStateStore


class Store(
    RunStore, AttemptStore, StepStore, TriggerStateStore, DeadLetterStore, PauseStore, RunLogStore, Queries
):
    """Runs, attempts, steps, trigger state, dead letters, pauses and the read-only queries on
    one engine.

    `Store(engine, dialect=...)` pins the dialect's capabilities, and with them the
    attempt plan (the contract tests run the transaction plan on PostgreSQL)."""


__all__ = [
    "FINISH_RETRY_FOR",
    "AttemptStore",
    "Beat",
    "ConcurrencyBlockedError",
    "DeadLetterStore",
    "Dispatch",
    "MissedRow",
    "NewRun",
    "OutboxWrite",
    "OverlapBlockedError",
    "PauseStore",
    "Plan",
    "Queries",
    "QueuedRun",
    "RunStore",
    "StartedAttempt",
    "StateWrite",
    "StepStore",
    "Store",
    "TriggerStateStore",
    "attempts_t",
    "dead_t",
    "is_transient",
    "missed_t",
    "new_run_id",
    "plan_for",
    "runs_t",
    "state_t",
]
