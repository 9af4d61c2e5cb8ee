"""The circuit breaker an LLM call consults: is this provider worth calling right now?

During a provider outage every run that calls it fails, is retried, fails again and ends
`dead` after `max_attempts`, hours of work thrown away while the provider was the only
thing wrong. A breaker counts the provider's transient failures (5xx, timeouts, refused
connections; never a 429, a 4xx or a malformed answer, which are not outages): after
`failures` of them within `window` it opens, and calls fail fast with
`ProviderUnavailable`, which the worker turns into a deferral (`waiting`,
`waiting_for=provider_unavailable`) that counts towards neither `max_attempts` nor
`max_deliveries`. After `open_for` one caller is let through as a probe (half-open): its
success closes the breaker, its failure opens it again.

The worker's breaker keeps this state in Redis, shared by the fleet (one worker's failures
protect all of them); `LocalBreaker` keeps it in memory, for `AgentEnvironment` and tests.
Both follow `BreakerPolicy` and the `ProviderGate` protocol.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from agents._errors import ProviderUnavailable


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # open_for has passed: one probe may call


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a provider's breaker opens, and for how long."""

    failures: int = 5  # transient failures within `window` that open it
    window_s: float = 60.0
    open_for_s: float = 30.0  # then one probe is let through
    probe_timeout_s: float = 120.0  # a probe that never reports frees the slot after this

    def __post_init__(self) -> None:
        if self.failures < 1 or min(self.window_s, self.open_for_s, self.probe_timeout_s) <= 0:
            raise ValueError("BreakerPolicy needs failures >= 1 and positive durations")


class ProviderGate(Protocol):
    """What `agents.llm` (or a user's own client) asks before and tells after a call."""

    def check(self, provider: str) -> None:
        """Return when a call may go ahead; raise `ProviderUnavailable` when the breaker is
        open (or half-open with its probe already out)."""
        ...

    def succeeded(self, provider: str) -> None:
        """A call got an answer from the provider (closes a half-open breaker)."""
        ...

    def failed(self, provider: str) -> bool:
        """A call failed transiently; True when the breaker is (now) open."""
        ...

    def state(self, provider: str) -> BreakerState: ...


class OpenGate:
    """A gate that never opens: a context built without a runtime."""

    def check(self, provider: str) -> None:
        return None

    def succeeded(self, provider: str) -> None:
        return None

    def failed(self, provider: str) -> bool:
        return False

    def state(self, provider: str) -> BreakerState:
        return BreakerState.CLOSED


@dataclass
class _Circuit:
    failures: list[float] = field(default_factory=list)
    opened_at: float | None = None
    probe_until: float | None = None  # a probe is out until then


class LocalBreaker:
    """`BreakerPolicy` in memory, for one process (thread-safe; the clock is injectable)."""

    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()
        self.transitions: list[tuple[str, BreakerState]] = []  # what a test or the demo shows

    def _circuit(self, provider: str) -> _Circuit:
        return self._circuits.setdefault(provider, _Circuit())

    def state(self, provider: str) -> BreakerState:
        with self._lock:
            return self._state(self._circuit(provider), self._clock())

    def _state(self, c: _Circuit, now: float) -> BreakerState:
        if c.opened_at is None:
            return BreakerState.CLOSED
        if now - c.opened_at < self.policy.open_for_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def check(self, provider: str) -> None:
        with self._lock:
            c, now = self._circuit(provider), self._clock()
            state = self._state(c, now)
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.OPEN:
                assert c.opened_at is not None
                raise ProviderUnavailable(provider, c.opened_at + self.policy.open_for_s - now)
            if c.probe_until is not None and now < c.probe_until:
                raise ProviderUnavailable(provider, self.policy.open_for_s, "a probe is under way")
            c.probe_until = now + self.policy.probe_timeout_s  # this caller is the probe

    def succeeded(self, provider: str) -> None:
        with self._lock:
            c = self._circuit(provider)
            if c.opened_at is not None:
                self.transitions.append((provider, BreakerState.CLOSED))
            c.failures.clear()
            c.opened_at = c.probe_until = None

    def failed(self, provider: str) -> bool:
        with self._lock:
            c, now = self._circuit(provider), self._clock()
            if c.opened_at is not None:
                if self._state(c, now) is BreakerState.HALF_OPEN:  # the probe failed: open again
                    c.opened_at, c.probe_until = now, None
                    self.transitions.append((provider, BreakerState.OPEN))
                return True
            c.failures = [t for t in c.failures if now - t < self.policy.window_s] + [now]
            if len(c.failures) >= self.policy.failures:
                c.opened_at, c.failures = now, []
                self.transitions.append((provider, BreakerState.OPEN))
                return True
            return False
