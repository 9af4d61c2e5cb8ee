"""The run vocabulary and the pure attempt verdict: no service, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents import AgentSpec, NonRetryable, agent
from scheduler.core import verdict
from scheduler.core.verdict import Cancel, CancelKind
from scheduler.core.vocabulary import (
    ACTIVE_STATUSES,
    TERMINAL_REASONS,
    TERMINAL_STATUSES,
    AttemptStatus,
    Delivery,
    OverlapPolicy,
    Reason,
    RunStatus,
)
from triggers import OVERLAP_POLICIES


def _spec(**options: Any) -> AgentSpec:
    def run(ctx: object, event: object) -> None:
        return None

    return agent("vocab-agent", **options)(run)


def test_a_status_is_its_string_so_rows_and_json_do_not_change() -> None:
    as_text: str = RunStatus.QUEUED  # a str itself, not only convertible to one
    assert as_text == "queued" and f"{RunStatus.QUEUED}" == "queued"
    assert set(ACTIVE_STATUSES) | set(TERMINAL_STATUSES) == set(RunStatus)
    assert not set(ACTIVE_STATUSES) & set(TERMINAL_STATUSES)
    assert all(s.terminal for s in TERMINAL_STATUSES) and not any(s.terminal for s in ACTIVE_STATUSES)


def test_terminal_reasons_cover_every_terminal_status_but_success() -> None:
    assert set(TERMINAL_REASONS) == set(TERMINAL_STATUSES) - {RunStatus.SUCCEEDED}
    assert all(isinstance(r, Reason) for reasons in TERMINAL_REASONS.values() for r in reasons)


def test_the_overlap_policies_are_the_triggers_own() -> None:
    assert tuple(OverlapPolicy) == OVERLAP_POLICIES


def test_a_cancel_outranks_what_the_agent_did_after_it() -> None:
    spec = _spec(max_attempts=3)
    out = verdict.attempt_verdict(spec, 1, Cancel.requested(Reason.BY_USER), None, ValueError("x"))
    assert (out.status, out.reason, out.attempt_status) == (
        RunStatus.CANCELLED,
        Reason.BY_USER,
        AttemptStatus.CANCELLED,
    )
    timed = verdict.attempt_verdict(spec, 1, verdict.TIMEOUT, None, None)
    assert (timed.status, timed.reason) == (RunStatus.TIMED_OUT, Reason.SOFT)
    assert verdict.cancelled(verdict.TIMEOUT, hard=True).reason == Reason.HARD


def test_a_budget_ends_the_run_and_is_not_retried() -> None:
    out = verdict.attempt_verdict(_spec(max_attempts=5), 1, None, "tokens", RuntimeError("late"))
    assert (out.status, out.reason, out.delivery, out.retry_in) == (
        RunStatus.BUDGET_EXCEEDED,
        "tokens",
        Delivery.BUDGET_EXCEEDED,
        None,
    )
    assert out.terminal
    assert str(Cancel.budget("cost_usd")) == "budget:cost_usd"
    assert Cancel.budget("cost_usd").kind is CancelKind.BUDGET


def test_an_error_retries_with_backoff_until_the_last_attempt() -> None:
    spec = _spec(max_attempts=2, retry_backoff=timedelta(seconds=4))
    first = verdict.attempt_verdict(spec, 1, None, None, RuntimeError("flaky"))
    assert (first.status, first.attempt_status, first.delivery) == (
        RunStatus.WAITING,
        AttemptStatus.FAILED,
        Delivery.RETRY,
    )
    assert first.retry_in is not None and first.retry_in > timedelta(0) and not first.terminal
    last = verdict.attempt_verdict(spec, 2, None, None, RuntimeError("flaky"))
    assert (last.status, last.reason) == (RunStatus.DEAD, Reason.ATTEMPTS_EXHAUSTED)
    assert last.not_before(datetime(2026, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (NonRetryable("no"), Reason.NON_RETRYABLE),
    ],
)
def test_errors_that_are_not_retried(error: BaseException, reason: Reason) -> None:
    out = verdict.attempt_verdict(_spec(max_attempts=3), 1, None, None, error)
    assert (out.status, out.reason) == (RunStatus.FAILED, reason)


def test_success() -> None:
    assert verdict.attempt_verdict(_spec(), 1, None, None, None) is verdict.SUCCEEDED


def test_a_lost_attempt_requeues_until_the_last_one_allowed() -> None:
    assert verdict.lost(1, 3) is RunStatus.PENDING
    assert verdict.lost(3, 3) is RunStatus.DEAD


def test_deferrals_back_off_from_the_breakers_retry_in_up_to_a_cap() -> None:
    from datetime import timedelta

    from agents import ProviderUnavailable
    from scheduler.core.verdict import MAX_DEFERRAL, deferred

    waits = [deferred(ProviderUnavailable("p", 30.0), n).retry_in for n in (0, 1, 3, 12)]
    assert [w is not None for w in waits] == [True] * 4
    first, second, fourth, late = (w for w in waits if w is not None)
    assert timedelta(seconds=30) <= first <= timedelta(seconds=45)
    assert timedelta(seconds=60) <= second <= timedelta(seconds=90)
    assert timedelta(seconds=240) <= fourth <= timedelta(seconds=270)
    assert MAX_DEFERRAL <= late <= MAX_DEFERRAL + timedelta(seconds=30)


def test_a_bug_raised_while_handling_an_outage_is_a_failure_not_a_deferral() -> None:
    from agents import ProviderUnavailable
    from scheduler.core.verdict import unavailable_provider

    try:
        try:
            raise ProviderUnavailable("p", 1.0)
        except ProviderUnavailable:
            raise KeyError("bug in the fallback path")  # noqa: B904 (the point of the test)
    except KeyError as bug:
        assert unavailable_provider(bug) is None
    wrapped = RuntimeError("while asking")
    wrapped.__cause__ = ProviderUnavailable("p", 1.0)
    assert unavailable_provider(wrapped) is not None
