"""The run vocabulary: every status, reason and kind nightowl stores or reports, as StrEnums.

A `StrEnum` member *is* its string (`RunStatus.QUEUED == "queued"`), so rows,
JSON and CLI output are unchanged, while mypy rejects a misspelt status. The
migrations keep their own literals (they describe the schema as it was); no
other module writes a status as a bare string.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """`runs.status`. Active runs move pending -> queued -> running; the rest are terminal."""

    PENDING = "pending"  # inserted, not yet published (the sweeper publishes it)
    WAITING = "waiting"  # held until `not_before` (a retry, an overlap, a concurrency limit)
    QUEUED = "queued"  # published; a message is on (or about to be on) the broker
    RUNNING = "running"  # an attempt holds the run's lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


ACTIVE_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.PENDING,
    RunStatus.WAITING,
    RunStatus.QUEUED,
    RunStatus.RUNNING,
)
TERMINAL_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.DEAD,
    RunStatus.CANCELLED,
    RunStatus.SKIPPED,
    RunStatus.BUDGET_EXCEEDED,
)
# Terminal runs `nightowl runs retry` may start again.
RETRYABLE_STATUSES: tuple[RunStatus, ...] = (RunStatus.DEAD, RunStatus.FAILED, RunStatus.TIMED_OUT)


class AttemptStatus(StrEnum):
    """`attempts.status`: how one delivery of a run ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STALLED = "stalled"  # the watchdog saw its heartbeat stop
    FENCED_OUT = "fenced_out"  # a newer attempt took the run over; nothing of it was written
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEFERRED = "deferred"  # its provider was unavailable: the run waits, the attempt is not counted


class Reason(StrEnum):
    """`runs.terminal_reason` (and the reason a run waits or an attempt was cancelled)."""

    # skipped
    OVERLAP = "overlap"
    MISSED = "missed"
    PAUSED = "paused"
    # failed
    ERROR = "error"
    NON_RETRYABLE = "non_retryable"
    POISON = "poison"
    NOT_SERIALISABLE = "not_serialisable"
    UNKNOWN_AGENT = "unknown_agent"
    # timed_out
    SOFT = "soft"
    HARD = "hard"
    # cancelled
    BY_USER = "by_user"
    CANCEL_OTHER = "cancel_other"
    FENCED_OUT = "fenced_out"
    # dead
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    # budget_exceeded
    TOKENS = "tokens"
    COST_USD = "cost_usd"
    TOOL_CALLS = "tool_calls"
    MAX_STEPS = "max_steps"


# Which reasons each terminal status may carry, exactly as DESIGN.md lists them.
TERMINAL_REASONS: dict[RunStatus, tuple[Reason, ...]] = {
    RunStatus.SKIPPED: (Reason.OVERLAP, Reason.MISSED, Reason.PAUSED),
    RunStatus.FAILED: (
        Reason.ERROR,
        Reason.NON_RETRYABLE,
        Reason.POISON,
        Reason.NOT_SERIALISABLE,
        Reason.UNKNOWN_AGENT,
    ),
    RunStatus.TIMED_OUT: (Reason.SOFT, Reason.HARD),
    RunStatus.CANCELLED: (Reason.BY_USER, Reason.CANCEL_OTHER),
    RunStatus.DEAD: (Reason.ATTEMPTS_EXHAUSTED,),
    RunStatus.BUDGET_EXCEEDED: (Reason.TOKENS, Reason.COST_USD, Reason.TOOL_CALLS, Reason.MAX_STEPS),
}


class OverlapPolicy(StrEnum):
    """A trigger's `overlap=` (the user's word; `triggers.OVERLAP_POLICIES` lists the same)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"
    CANCEL_OTHER = "cancel_other"
    PER_KEY = "per_key"


class RunOverlap(StrEnum):
    """`runs.overlap`: how a run is held against the active runs of its overlap key.

    A trigger's policy (`overlap=` in a trigger module) maps onto it: `allow` stores
    none, `per_key` and catch-up runs `wait` (scheduler.core.overlap)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    WAIT = "wait"
    CANCEL_OTHER = "cancel_other"


class WaitingFor(StrEnum):
    """`runs.waiting_for`: what a `waiting` run waits on."""

    OVERLAP = "overlap"
    CONCURRENCY = "concurrency"
    RETRY = "retry"
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # its LLM provider's circuit breaker is open
    SPEND_CAP = "spend_cap"  # its agent spent its SpendCap for the current window
    PAUSED = "paused"  # its agent is paused (`agents pause`): it starts on resume


class RunOrigin(StrEnum):
    """`runs.origin`: what made the run."""

    LIVE = "live"  # its trigger fired
    MANUAL = "manual"  # `nightowl fire`
    BACKFILL = "backfill"  # `nightowl triggers backfill`
    REPLAY = "replay"  # `nightowl runs replay`


class StallReason(StrEnum):
    """`attempts.reason` of a `stalled` attempt."""

    WORKER_LOST = "worker_lost"  # no heartbeat: the worker died or hangs
    NO_PROGRESS = "no_progress"  # heartbeats, but no ctx.heartbeat() within progress_timeout


class AlertKind(StrEnum):
    """`alerts.kind`: the quiet failures nightowl tells about."""

    RUN_STALLED = "run_stalled"
    RUN_DEAD = "run_dead"
    RUN_LATE = "run_late"
    RUN_STUCK = "run_stuck"
    RUN_BUDGET_EXCEEDED = "run_budget_exceeded"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    SPEND_CAP_REACHED = "spend_cap_reached"
    TRIGGER_SOURCE_FAILING = "trigger_source_failing"
    SCHEDULER_FAILING = "scheduler_failing"
    OUTBOX_DEAD = "outbox_dead"
    WATCHDOG_DOWN = "watchdog_down"
    SCHEDULER_DOWN = "scheduler_down"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Delivery(StrEnum):
    """What the worker did with one delivery of `agent.<name>(run_id)` (metrics, Flower)."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    DEAD = "dead"
    DUPLICATE = "duplicate"  # the run is already terminal: the stored result stands
    LEASE_HELD = "lease_held"  # another worker holds the run
    FENCED_OUT = "fenced_out"
    UNKNOWN_RUN = "unknown_run"
    UNKNOWN_AGENT = "unknown_agent"
    POISON = "poison"
    SKIPPED = "skipped"
    PARKED = "parked"  # behind a running run of its overlap key
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    EARLY = "early"  # delivered before its not_before: put back to wait
    DEFERRED = "deferred"  # its LLM provider is unavailable: waits without counting an attempt
    PAUSED = "paused"  # its agent is paused: waits for the resume, no attempt taken


# Deliveries whose attempt did not succeed: the Celery task raises so Flower shows FAILURE.
FAILED_DELIVERIES = frozenset(
    {
        Delivery.FAILED,
        Delivery.DEAD,
        Delivery.TIMED_OUT,
        Delivery.POISON,
        Delivery.RETRY,
        Delivery.BUDGET_EXCEEDED,
    }
)


class DeadLetterReason(StrEnum):
    """`dead_letters.reason`: why a message could not become an attempt."""

    DECODE_ERROR = "decode_error"  # not JSON (a pickle, a broken body)
    UNKNOWN_TASK = "unknown_task"  # a task name no agent has
    BAD_ARGUMENTS = "bad_arguments"  # not `[run_id]`
    UNKNOWN_RUN = "unknown_run"  # a run id the runs table does not hold
    CONTENT_DISALLOWED = "content_disallowed"  # refused by accept_content=["json"] (a pickle)
    REJECTED = "rejected"


class OutboxStatus(StrEnum):
    """`outbox.status`."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
