"""One interval-loop type for the scheduler, the watchdog and the relay.

Each process is a few step methods (tick, sweep, check, relay step) that decide what
is due from the clock; this loop only wakes them and keeps an outage to one log line
(then one a minute and one on recovery) instead of a traceback per wake-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.core.metrics import LOOP_LAST_SUCCESS
from scheduler.core.steplog import StepFailures

OVERDUE_GAP = timedelta(milliseconds=100)


class Step(NamedTuple):
    """One step of a loop: woken every `every`; a `drain` step runs again at once while it
    returns True (the relay: a busy outbox drains without waiting for the next wake-up).
    `next_at`, when given, says after each run in how many seconds the step is next due (or
    None), by the step's own clock: the loop wakes it then if that comes before its next
    interval wake-up (the scheduler's tick wakes at the boundary its triggers are due at,
    not up to a tick interval after it). It only ever brings a wake-up forward."""

    name: str
    run: Callable[[], object]
    every: timedelta
    drain: bool = False
    next_at: Callable[[], float | None] | None = None


class _DropSkippedWakeUps(logging.Filter):
    """A wake-up that lands while its step still runs is skipped by design (max_instances=1,
    coalesce: the running step covers it); APScheduler would warn about each one (a long
    tick, or a draining relay, twice a second), which buries the lines that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


# Under `apscheduler`, not `nightowl`: its INFO chatter (jobs added, shut down) stays out of
# our INFO log, as it was before a logger was passed.
_APS_LOG = logging.getLogger("apscheduler.nightowl")
_APS_LOG.addFilter(_DropSkippedWakeUps())


class IntervalLoop:
    """Runs steps on APScheduler interval jobs until `stop()`.

    misfire_grace_time=None, coalesce and max_instances=1: a slow step delays
    the next wake-up instead of stacking or silently dropping it; each step
    decides what is due from the clock, so nothing is lost either way.
    """

    def __init__(
        self,
        steps: list[Step],
        on_stop: Callable[[], None],
        logger: logging.Logger,
        *,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.stopped = threading.Event()
        self._on_stop = on_stop
        self.failures = StepFailures(logger, clock=monotonic or time.monotonic)
        self._first = steps[0]
        self._lock = threading.Lock()  # start() and stop() may race (a signal during start)
        self._aps = BackgroundScheduler(
            logger=_APS_LOG,
            timezone="UTC",
            job_defaults={
                "misfire_grace_time": None,
                "coalesce": True,
                "max_instances": 1,
            },
        )
        for step in steps:
            self._aps.add_job(
                self._wake, "interval", args=[step], seconds=step.every.total_seconds(), id=step.name
            )

    def _wake(self, step: Step) -> None:
        while self._guarded(step) and step.drain and not self.stopped.is_set():
            pass
        if step.next_at is not None and not self.stopped.is_set():
            self._wake_early(step, step.next_at())

    def _wake_early(self, step: Step, due_in: float | None) -> None:
        """Bring the step's next wake-up forward to `due_in` seconds from now (never later
        than the interval wake-up APScheduler already has for it)."""
        if due_in is None:
            return
        # overdue (a retry scheduled for "now"): soon, but never a busy loop
        delay = timedelta(seconds=due_in) if due_in > 0 else min(step.every, OVERDUE_GAP)
        at = datetime.now(UTC) + delay
        with self._lock:
            if not self._aps.running or self.stopped.is_set():
                return
            job = self._aps.get_job(step.name)
            if job is None or (job.next_run_time is not None and job.next_run_time <= at):
                return
            self._aps.modify_job(step.name, next_run_time=at)

    def _guarded(self, step: Step) -> bool:
        """One step; during an outage one line, then one a minute, not a traceback per
        wake-up. True when the step says it did work (a drain step runs again)."""
        try:
            busy = bool(step.run())
        except Exception as exc:
            self.failures.failed(step.name, exc)
            return False
        self.failures.succeeded(step.name)
        LOOP_LAST_SUCCESS.labels(step.name).set_to_current_time()
        return busy

    def start(self) -> None:
        """One step of the first kind now, on the caller's thread (a drain step too runs just
        once here, so start-up is bounded by one step), then the interval jobs."""
        if self.stopped.is_set():
            return
        self._guarded(self._first)
        with self._lock:
            if not self.stopped.is_set():
                self._aps.start()
        if self._first.next_at is not None:
            self._wake_early(self._first, self._first.next_at())

    def stop(self) -> None:
        """Stop waking the steps, wait for the one running (a drain step stops after its
        current step), then run `on_stop`. Safe before or during `start()`."""
        with self._lock:
            if self.stopped.is_set():
                return
            self.stopped.set()
            running = self._aps.running
        if running:
            self._aps.shutdown(wait=True)
        self._on_stop()
