"""How an attempt ended, as one value: the pure verdict the worker and the watchdog apply.

The worker asks `attempt_verdict` after the agent returned or raised, and
`cancelled` when the watch thread stopped it; the worker's takeover and the
watchdog's stall both ask `lost` about an attempt whose worker vanished. Each
returns an `AttemptOutcome` that storage writes in one fenced transaction, so
the rules (a cancel outranks what the agent did after it; a budget is not
retried; the last allowed attempt ends the run dead) live here only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from agents import AgentSpec, NonRetryable, NotSerialisable, ProviderUnavailable
from scheduler.core.vocabulary import AttemptStatus, Delivery, Reason, RunStatus, WaitingFor


class CancelKind(StrEnum):
    """Why the watch thread stopped an attempt."""

    TIMEOUT = "timeout"  # the agent's deadline passed
    FENCED_OUT = "fenced_out"  # a beat found a newer fence: a newer attempt holds the run
    BUDGET = "budget"  # the agent's own usage crossed a limit of its Budget
    REQUESTED = "requested"  # `nightowl runs cancel`, or cancel_other


@dataclass(frozen=True, slots=True)
class Cancel:
    """A cancel cause. `detail` is the budget's limit name or the requested reason."""

    kind: CancelKind
    detail: str | None = None

    @classmethod
    def requested(cls, reason: str) -> Cancel:
        return cls(CancelKind.REQUESTED, reason)

    @classmethod
    def budget(cls, limit: str) -> Cancel:
        return cls(CancelKind.BUDGET, limit)

    def __str__(self) -> str:
        return self.kind if self.detail is None else f"{self.kind}:{self.detail}"


TIMEOUT = Cancel(CancelKind.TIMEOUT)
FENCED_OUT = Cancel(CancelKind.FENCED_OUT)


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What to write when an attempt ends: the run's status and reason, the attempt's status,
    what the delivery reports (metrics, Flower), and for a retry, how long the run waits."""

    status: RunStatus
    reason: str | None
    attempt_status: AttemptStatus
    delivery: Delivery
    retry_in: timedelta | None = None
    waiting_for: WaitingFor | None = None  # a waiting verdict's cause; None means a retry
    deferral: bool = False  # counts towards neither max_attempts nor max_deliveries

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def not_before(self, now: datetime) -> datetime | None:
        return now + self.retry_in if self.retry_in is not None else None


SUCCEEDED = AttemptOutcome(RunStatus.SUCCEEDED, None, AttemptStatus.SUCCEEDED, Delivery.SUCCEEDED)
POISON = AttemptOutcome(RunStatus.FAILED, Reason.POISON, AttemptStatus.FAILED, Delivery.POISON)
EXHAUSTED = AttemptOutcome(RunStatus.DEAD, Reason.ATTEMPTS_EXHAUSTED, AttemptStatus.FAILED, Delivery.DEAD)


def cancelled(cause: Cancel, *, hard: bool) -> AttemptOutcome:
    """The outcome of an attempt the watch thread stopped."""
    if cause.kind is CancelKind.BUDGET:
        # Not retried: another attempt would spend the same again.
        return AttemptOutcome(
            RunStatus.BUDGET_EXCEEDED, cause.detail, AttemptStatus.BUDGET_EXCEEDED, Delivery.BUDGET_EXCEEDED
        )
    if cause.kind is CancelKind.TIMEOUT:
        return AttemptOutcome(
            RunStatus.TIMED_OUT,
            Reason.HARD if hard else Reason.SOFT,
            AttemptStatus.TIMED_OUT,
            Delivery.TIMED_OUT,
        )
    if cause.kind is CancelKind.FENCED_OUT:  # nothing of it is written: the fence refuses it
        return AttemptOutcome(
            RunStatus.CANCELLED, Reason.FENCED_OUT, AttemptStatus.FENCED_OUT, Delivery.FENCED_OUT
        )
    return AttemptOutcome(RunStatus.CANCELLED, cause.detail, AttemptStatus.CANCELLED, Delivery.CANCELLED)


# A deferred run waits at least this long, and at most this much longer than the breaker
# said (jitter, so the runs an outage parked do not all come back in the same second).
MIN_DEFERRAL = timedelta(seconds=1)
MAX_DEFERRAL_JITTER = timedelta(seconds=30)


# Deferrals back off: the n-th waits the breaker's retry_in times 2**(n-1), up to this.
MAX_DEFERRAL = timedelta(minutes=10)


def unavailable_provider(exc: BaseException) -> ProviderUnavailable | None:
    """The ProviderUnavailable behind `exc`: raised, or the explicit cause (`raise ... from`)
    of what was raised. Not an exception merely raised while handling one (`__context__`):
    a bug in an `except ProviderUnavailable:` block is a failure, not a deferral."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, ProviderUnavailable):
            return seen
        seen = seen.__cause__
    return None


def deferred(
    exc: ProviderUnavailable, deferrals: int = 0, rng: random.Random | None = None
) -> AttemptOutcome:
    """The run waits for its provider's breaker (`waiting`, `provider_unavailable`): not a
    failure, and not counted towards max_attempts or max_deliveries. `deferrals` (the run's
    earlier ones) backs the wait off, so a long outage does not bring every parked run back
    every `open_for`."""
    base = max(MIN_DEFERRAL, timedelta(seconds=exc.retry_in))
    base = max(base, min(MAX_DEFERRAL, base * 2 ** min(deferrals, 20)))
    jitter = (rng or random).uniform(0.0, min(base / 2, MAX_DEFERRAL_JITTER).total_seconds())
    return AttemptOutcome(
        RunStatus.WAITING,
        None,
        AttemptStatus.DEFERRED,
        Delivery.DEFERRED,
        retry_in=base + timedelta(seconds=jitter),
        waiting_for=WaitingFor.PROVIDER_UNAVAILABLE,
        deferral=True,
    )


def failed(spec: AgentSpec, exc: BaseException, attempt: int, deferrals: int = 0) -> AttemptOutcome:
    """The outcome of an attempt whose agent raised: failed, a retry, dead, or deferred
    (its provider is unavailable). `attempt` counts only the attempts that count (not
    deferrals)."""
    unavailable = unavailable_provider(exc)
    if unavailable is not None:
        return deferred(unavailable, deferrals)
    if isinstance(exc, NotSerialisable):  # the result, an outbox value or usage
        return AttemptOutcome(
            RunStatus.FAILED, Reason.NOT_SERIALISABLE, AttemptStatus.FAILED, Delivery.FAILED
        )
    if isinstance(exc, NonRetryable):
        return AttemptOutcome(RunStatus.FAILED, Reason.NON_RETRYABLE, AttemptStatus.FAILED, Delivery.FAILED)
    if not spec.retryable(exc):
        return AttemptOutcome(RunStatus.FAILED, Reason.ERROR, AttemptStatus.FAILED, Delivery.FAILED)
    if attempt >= spec.max_attempts:
        return EXHAUSTED
    return AttemptOutcome(
        RunStatus.WAITING,
        None,
        AttemptStatus.FAILED,
        Delivery.RETRY,
        retry_in=spec.retry_backoff.delay(attempt - 1),
    )


def attempt_verdict(
    spec: AgentSpec,
    attempt: int,
    cancel: Cancel | None,
    over_budget: str | None,
    error: BaseException | None,
    *,
    deferrals: int = 0,
) -> AttemptOutcome:
    """How an attempt that ran its agent ended: a cancel (request, timeout, budget) outranks
    what the agent returned or raised after it."""
    if cancel is not None:
        return cancelled(cancel, hard=False)
    if over_budget is not None:  # the agent stopped before the watch thread looked
        return cancelled(Cancel.budget(over_budget), hard=False)
    if error is not None:
        return failed(spec, error, attempt, deferrals)
    return SUCCEEDED


def lost(attempt: int, max_attempts: int) -> RunStatus:
    """Where a run goes when its attempt `attempt` was lost with its worker (a stall seen by
    the watchdog, or a takeover seen by the next delivery): back to `pending` for another
    attempt, or `dead/attempts_exhausted` when it was the last one allowed."""
    return RunStatus.DEAD if attempt >= max_attempts else RunStatus.PENDING
