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
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.core.metrics import LOOP_LAST_SUCCESS
from scheduler.core.steplog import StepFailures

Step = tuple[str, Callable[[], object], timedelta]


class IntervalLoop:
    """Runs steps on APScheduler interval jobs until `stop()`.

    misfire_grace_time=None, coalesce and max_instances=1: a slow step delays
    the next wake-up instead of stacking or silently dropping it; each step
    decides what is due from the clock, so nothing is lost either way.
    """

    def __init__(self, steps: list[Step], on_stop: Callable[[], None],
                 logger: logging.Logger) -> None:
        self.stopped = threading.Event()
        self._on_stop = on_stop
        self.failures = StepFailures(logger)
        self._first = steps[0]
        self._aps = BackgroundScheduler(timezone="UTC", job_defaults={
            "misfire_grace_time": None, "coalesce": True, "max_instances": 1,
        })
        for name, step, every in steps:
            self._aps.add_job(self._guarded, "interval", args=[name, step],
                              seconds=every.total_seconds(), id=name)

    def _guarded(self, name: str, step: Callable[[], object]) -> None:
        """One step; during an outage one line, then one a minute, not a traceback per wake-up."""
        try:
            step()
        except Exception as exc:
            self.failures.failed(name, exc)
        else:
            self.failures.succeeded(name)
            LOOP_LAST_SUCCESS.labels(name).set_to_current_time()

    def start(self) -> None:
        self._guarded(self._first[0], self._first[1])
        self._aps.start()

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._aps.shutdown(wait=True)
        self._on_stop()


class ThreadLoop:
    """Runs one step back to back on a thread until `stop()`, idling `poll` when the step
    reports nothing to do (the relay: a busy outbox drains without waiting on an interval)."""

    def __init__(self, name: str, step: Callable[[], bool], on_stop: Callable[[], None],
                 logger: logging.Logger, *, poll: timedelta,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.name = name
        self.poll = poll
        self._step = step
        self._on_stop = on_stop
        self.failures = StepFailures(logger, clock=monotonic or time.monotonic)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nightowl-{name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._step()
            except Exception as exc:
                self.failures.failed(self.name, exc)
                busy = False
            else:
                self.failures.succeeded(self.name)
                LOOP_LAST_SUCCESS.labels(self.name).set_to_current_time()
            if not busy:
                self._stop.wait(self.poll.total_seconds())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._on_stop()
