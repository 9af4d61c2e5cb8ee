"""Rate-limited logging of a loop step that keeps failing.

During an outage (the database restarting, Redis gone) a loop that wakes twice a second
would print a traceback per wake-up: thousands of lines that hide the one that matters.
Instead a step's first failure is one line, then at most one "still failing" line per
`every` seconds, and one "recovered after N s" line once it has kept succeeding for
`settle` seconds (a step that fails every other wake-up is one episode, not two lines a
second). The traceback of every failure goes to DEBUG. Every line is scrubbed (no password
from a driver's error).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.core.scrub import scrub_text

STILL_FAILING_EVERY = 60.0
SETTLE = 5.0  # seconds of success that end an episode


def describe(exc: BaseException) -> str:
    """One scrubbed line for an exception: its type and the first line of its message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return scrub_text(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


@dataclass
class _Failing:
    since: float
    reported: float
    failures: int
    last: str
    ok_since: float | None = None  # succeeding again since (not yet settled)


class StepFailures:
    """Per-step failure state of one loop; `failed(name, exc)` / `succeeded(name)`."""

    def __init__(
        self,
        log: logging.Logger,
        every: float = STILL_FAILING_EVERY,
        settle: float = SETTLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.every = every
        self.settle = settle
        self._clock = clock
        self._failing: dict[str, _Failing] = {}
        self._lock = threading.Lock()

    def failed(self, name: str, exc: BaseException) -> None:
        """Call from the `except` block of a failed step."""
        now = self._clock()
        line = describe(exc)
        with self._lock:
            state = self._failing.get(name)
            if state is None:
                self._failing[name] = _Failing(now, now, 1, line)
                self.log.error(
                    "%s failed: %s; retrying at each wake-up (one line a minute "
                    "while it keeps failing, tracebacks at DEBUG)",
                    name,
                    line,
                )
            else:
                state.failures += 1
                state.last = line
                state.ok_since = None
                if now - state.reported >= self.every:
                    state.reported = now
                    self.log.warning(
                        "%s still failing after %.0f s (%d failures): %s",
                        name,
                        now - state.since,
                        state.failures,
                        line,
                    )
        if self.log.isEnabledFor(logging.DEBUG):
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log.debug("%s failed:\n%s", name, scrub_text(tb.rstrip()))

    def succeeded(self, name: str) -> None:
        now = self._clock()
        with self._lock:
            state = self._failing.get(name)
            if state is None:
                return
            if state.ok_since is None:
                state.ok_since = now
            if now - state.ok_since < self.settle:
                return
            del self._failing[name]
        self.log.warning(
            "%s recovered after %.0f s (%d failures)", name, state.ok_since - state.since, state.failures
        )

    def failing(self) -> dict[str, float]:
        """Steps failing now (not yet settled), with the seconds since each began."""
        now = self._clock()
        with self._lock:
            return {name: now - s.since for name, s in self._failing.items()}
