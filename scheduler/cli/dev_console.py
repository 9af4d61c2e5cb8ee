"""What `nightowl dev` prints: each run as it finishes, each retry and wait, each alert.

A new user watches this console to see what the fleet does, so it shows what a run goes
through, not only how it ends: an attempt that failed and when it is retried, a run waiting for
its LLM provider's circuit breaker or its agent's spend cap, and, for a run that took more than
one attempt, which of its durable steps were replayed from an earlier attempt.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise

import typer

from agents import StepRecord
from scheduler.core.vocabulary import AttemptStatus, RunStatus, WaitingFor
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.models import Run
from scheduler.storage.store import Store

log = logging.getLogger("nightowl.dev")

# The waits a user should see; overlap and concurrency holds are routine and would flood it.
_SHOWN_WAITS = {WaitingFor.RETRY, WaitingFor.PROVIDER_UNAVAILABLE, WaitingFor.SPEND_CAP}


def _clock(at: datetime | None) -> str:
    return "?" if at is None else f"{at:%H:%M:%S}"


def _span(records: Sequence[StepRecord]) -> str:
    """`1-2 (fetch, summarise)` or `3 (logs)`."""
    first, last = records[0].seq, records[-1].seq
    numbers = str(first) if first == last else f"{first}-{last}"
    return f"{numbers} ({', '.join(r.name for r in records)})"


def tries_note(run: Run) -> str:
    """` after 2 attempts, 1 deferral`: what it took, when it took more than one try (a
    deferral is an attempt row that never counted as one)."""
    counted = run.attempt - run.deferrals
    parts = [f"{counted} attempts"] if counted > 1 else []
    if run.deferrals:
        parts.append(f"{run.deferrals} deferral{'s' if run.deferrals > 1 else ''}")
    return f" after {', '.join(parts)}" if parts else ""


def steps_line(steps: Sequence[StepRecord], attempt: int) -> str | None:
    """Which steps the final attempt replayed and which it ran, or None when it replayed none."""
    replayed = [s for s in steps if s.attempt < attempt]
    if not replayed:
        return None
    earlier = sorted({s.attempt for s in replayed})
    where = f"attempt {earlier[0]}" if len(earlier) == 1 else f"attempts {', '.join(map(str, earlier))}"
    line = f"    steps {_span(replayed)} replayed from {where}, not run again"
    ran = [s for s in steps if s.attempt == attempt]
    return f"{line}; {_span(ran)} ran in attempt {attempt}" if ran else line


class DevConsole:
    """One `step()` prints what changed since the last; `run(stop)` steps every second."""

    def __init__(
        self,
        store: Store,
        echo: Callable[[str], None] = typer.echo,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.alerts = AlertStore(store.engine)
        self.echo = echo
        self.now = now
        self.started = now()
        self._finished: set[str] = set()
        self._waits: set[tuple[str, int, int, str]] = set()
        self._alerts: set[int] = set()
        self._retries: set[tuple[str, int]] = set()  # (run, failed attempt) already printed

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                self.step()
            except Exception as exc:  # the database may be busy; try again next second
                log.debug("listing runs failed: %s", exc)

    def step(self) -> None:
        runs = self.store.list_runs(limit=100)
        alerts = [a for a in reversed(self.alerts.history(limit=20)) if a.created_at >= self.started]
        for a in alerts:
            if a.id not in self._alerts:
                self._alerts.add(a.id)
                self.echo(f"[{_clock(a.created_at)}] ALERT {a.kind} {a.state}: {a.message}")
        for run in reversed(runs):
            if run.created_at < self.started:
                continue
            if run.finished_at is not None:
                self._finished_run(run)
            elif run.status == RunStatus.WAITING and run.waiting_for in _SHOWN_WAITS:
                self._waiting_run(run)

    def _finished_run(self, run: Run) -> None:
        if run.id in self._finished:
            return
        self._finished.add(run.id)
        if run.attempt > 1:
            self._missed_retries(run)
        detail = json.dumps(run.result, default=str) if run.status == RunStatus.SUCCEEDED else run.error
        reason = f"/{run.terminal_reason}" if run.terminal_reason else ""
        self.echo(
            f"[{_clock(run.finished_at)}] {run.trigger} -> {run.agent}: {run.status}{reason}{tries_note(run)}"
            f" run={run.id} {detail}"
        )
        if run.attempt > 1:
            line = steps_line(self.store.steps_of(run.id), run.attempt)
            if line is not None:
                self.echo(line)

    def _missed_retries(self, run: Run) -> None:
        """A retry (or a provider deferral) whose wait was shorter than the console's
        one-second poll was never seen waiting: print it from the attempts, so each failed or
        deferred attempt shows exactly once."""
        attempts = self.store.attempts_of(run.id)
        deferrals = 0
        for failed, after in pairwise(attempts):
            deferrals += failed.status == AttemptStatus.DEFERRED
            if failed.status not in (AttemptStatus.FAILED, AttemptStatus.DEFERRED):
                continue
            if (run.id, failed.number) in self._retries:
                continue
            self._retries.add((run.id, failed.number))
            head = f"[{_clock(failed.finished_at)}] {run.trigger} -> {run.agent}:"
            if failed.status == AttemptStatus.DEFERRED:
                self.echo(
                    f"{head} waiting/provider_unavailable until {_clock(after.started_at)} run={run.id} "
                    f"(its LLM provider's circuit breaker is open; deferral {deferrals}, not counted "
                    "as an attempt)"
                )
                continue
            error = failed.error_message or ""  # stored as `Type: message`
            retry = f"retry at {_clock(after.started_at)}"
            self.echo(f"{head} attempt {failed.number} failed, {retry} run={run.id} {error}".rstrip())

    def _waiting_run(self, run: Run) -> None:
        key = (run.id, run.attempt, run.deferrals, str(run.waiting_for))
        if key in self._waits:
            return
        self._waits.add(key)
        head = f"[{_clock(self.now())}] {run.trigger} -> {run.agent}:"
        until = _clock(run.not_before)
        if run.waiting_for == WaitingFor.RETRY:
            self._retries.add((run.id, run.attempt))
            self.echo(f"{head} attempt {run.attempt} failed, retry at {until} run={run.id} {run.error}")
        elif run.waiting_for == WaitingFor.PROVIDER_UNAVAILABLE:
            self._retries.add((run.id, run.attempt))
            self.echo(
                f"{head} waiting/provider_unavailable until {until} run={run.id} (its LLM provider's "
                f"circuit breaker is open; deferral {run.deferrals}, not counted as an attempt)"
            )
        else:
            self.echo(f"{head} waiting/spend_cap until {until} run={run.id} (the agent spent its SpendCap)")
