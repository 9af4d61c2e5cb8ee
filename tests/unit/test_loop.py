"""The one interval loop of the scheduler, the watchdog and the relay (scheduler/core/loop.py).

Real threads and short real intervals: the loop only wakes steps, so what is tested is when
it wakes them, what it logs, and that start and stop cannot strand each other.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from datetime import timedelta

import pytest

from scheduler.core.loop import IntervalLoop, Step
from tests.helpers import wait_for


class Backlog:
    """A drain step: busy (True) while work is left, each step taking `cost` seconds."""

    def __init__(self, items: int, cost: float = 0.02) -> None:
        self.items = items
        self.cost = cost
        self.steps = 0

    def step(self) -> bool:
        self.steps += 1
        time.sleep(self.cost)
        if self.items:
            self.items -= 1
            return True
        return False


def test_start_runs_one_step_and_the_loop_then_drains_back_to_back_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backlog = Backlog(30)
    stops: list[int] = []
    loop = IntervalLoop(
        [Step("drain", backlog.step, timedelta(seconds=0.05), drain=True)],
        lambda: stops.append(1),
        logging.getLogger("test.loop"),
    )
    with caplog.at_level(logging.DEBUG):
        started = time.monotonic()
        loop.start()
        assert time.monotonic() - started < 0.5 and backlog.steps == 1  # bounded start-up
        wait_for(lambda: backlog.items == 0, timeout=10, message="the backlog drained")
        loop.stop()
    # 30 items at 20 ms drain in well under 30 wake-ups: back to back, not one per interval
    assert backlog.steps <= 33
    assert stops == [1]
    assert not [r for r in caplog.records if "maximum number of running instances" in r.getMessage()]


def test_a_stop_during_start_leaves_nothing_running_and_stops_once() -> None:
    gate = threading.Event()
    stops: list[int] = []

    def slow_first() -> bool:
        gate.wait(5)
        return True

    loop = IntervalLoop(
        [Step("first", slow_first, timedelta(seconds=0.05), drain=True)],
        lambda: stops.append(1),
        logging.getLogger("test.loop"),
    )
    starter = threading.Thread(target=loop.start)
    starter.start()
    time.sleep(0.05)
    loop.stop()  # a signal while start() runs its first step
    gate.set()
    starter.join(5)
    assert not loop._aps.running  # start() saw the stop and never started the jobs
    loop.stop()
    assert stops == [1]


def test_a_failing_step_logs_one_line_not_one_per_wake_up(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise ConnectionError("database is down")

    loop = IntervalLoop(
        [Step("tick", broken, timedelta(seconds=0.02))], lambda: None, logging.getLogger("test.loop")
    )
    with caplog.at_level(logging.INFO, logger="test.loop"):
        loop.start()
        time.sleep(0.3)
        loop.stop()
    lines = [r for r in caplog.records if r.name == "test.loop"]
    assert len(lines) == 1 and "tick failed: ConnectionError" in lines[0].getMessage()


def test_a_step_that_says_when_it_is_next_due_is_woken_then_not_a_whole_interval_later() -> None:
    """The scheduler's tick: its interval is a ceiling, its triggers' boundary the wake-up."""
    runs: list[float] = []
    due = [0.2]

    def tick() -> None:
        runs.append(time.time())

    def next_at() -> float | None:
        return due.pop() if due else None

    loop = IntervalLoop(
        [Step("tick", tick, timedelta(seconds=30), next_at=next_at)], lambda: None, logging.getLogger("t")
    )
    loop.start()
    try:
        wait_for(lambda: len(runs) >= 2, timeout=10, message="the early wake-up")
    finally:
        loop.stop()
    assert runs[1] - runs[0] >= 0.15  # at the time it named, not at once


def test_an_overdue_next_time_wakes_soon_but_never_spins() -> None:
    runs: list[float] = []
    loop = IntervalLoop(
        [
            Step(
                "tick",
                lambda: runs.append(time.time()),
                timedelta(seconds=30),
                next_at=lambda: -5.0,
            )
        ],
        lambda: None,
        logging.getLogger("t"),
    )
    loop.start()
    time.sleep(0.5)
    loop.stop()
    assert 2 <= len(runs) <= 8, len(runs)  # every OVERDUE_GAP (100 ms), not back to back


def test_an_early_wake_up_never_pushes_the_interval_wake_up_later() -> None:
    """A tick that ran long has its interval wake-up already queued: a `next_at` after that
    must not move it later (it would delay the lease renewal)."""
    runs: list[float] = []

    def slow() -> None:
        runs.append(time.monotonic())
        time.sleep(0.3)

    loop = IntervalLoop(
        [Step("tick", slow, timedelta(seconds=0.4), next_at=lambda: 0.35)],
        lambda: None,
        logging.getLogger("t"),
    )
    loop.start()
    try:
        wait_for(lambda: len(runs) >= 4, timeout=10, message="four ticks")
    finally:
        loop.stop()
    gaps = [b - a for a, b in itertools.pairwise(runs[1:])]
    # the 0.4 s interval holds; moved to 0.35 s after each 0.3 s tick, the gap would be 0.65 s
    assert statistics.median(gaps) < 0.55, gaps
