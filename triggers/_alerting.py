"""The alert state machine metric and queue_depth share, persisted between polls.

    ok --breach--> pending --held for_ (and past cooldown)--> firing --cleared--> ok
       <--no breach--

Why persisted: Prometheus kept `for` state in memory for years, so every
restart reset pending alerts and re-fired firing ones. Here the state is the
trigger's stored state, written with compare-and-set, so a restart continues
the episode and a paused ex-leader cannot write an older one back.

Why hysteresis (`clear_below`/`clear_above`): a value hovering at the
threshold must not flap firing/ok on every poll. Why `cooldown`: a new
episode right after the last firing run waits in `pending` until the
cooldown has passed, then fires if the condition still holds.

A failed poll (error, timeout, or an empty result with `empty="fail"`)
does not move the machine at all: it only counts toward `source_failing`.

Why an episode counter: a run's idempotency key is
`alert:<trigger>:<episode>:<firing|resolved>` (the DESIGN contract). The
counter is part of the persisted state and survives a redefinition (which
restarts the machine from `ok`), so a new episode never gets the key of an
older run. A state saved before the counter existed starts it from what it
holds: 1 while that episode is still firing (its firing run had the old
`<kind>:<name>:<since>:firing` key, so its resolve gets episode 1), else 0.

Why readings are stored as JSON-safe values: PostgreSQL's jsonb refuses
NaN and infinities (SQLite keeps them), and a state the database refuses
fails the whole tick. +Inf (above any threshold) and -Inf (below any) are
real readings; they are stored as the strings "+Inf" and "-Inf". NaN is "no
data", like an empty result (Prometheus answers NaN for 0/0, for example an
error ratio when traffic stops).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agents import Event
from triggers.abc import Evaluation, Firing, PollingTrigger, check_state
from triggers.sources import (
    Reading,
    SourceDefaults,
    SourceError,
    record_failure,
    record_success,
)

Direction = Literal["above", "below"]
AlertState = Literal["ok", "pending", "firing"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """A threshold with its hysteresis bound: fire past `threshold`, clear past `clear`."""

    direction: Direction
    threshold: float
    clear: float

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.direction == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        return value < self.clear if self.direction == "above" else value > self.clear

    def describe(self) -> dict[str, Any]:
        clear = "clear_below" if self.direction == "above" else "clear_above"
        return {self.direction: self.threshold, clear: self.clear}


@dataclass(frozen=True, slots=True)
class Policy:
    """How long a breach must hold, how soon an alert may fire again, whether to send resolves."""

    for_: timedelta
    cooldown: timedelta
    on_resolve: bool


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def stored_value(value: float | None) -> float | str | None:
    """A reading as the state stores it: JSON every database accepts ("+Inf"/"-Inf")."""
    if value is None or math.isfinite(value):
        return value
    return "+Inf" if value > 0 else "-Inf"


def episode_of(state: dict[str, Any]) -> int:
    """The number of the latest episode that fired; derived for a state saved without one."""
    episode = state.get("episode")
    if isinstance(episode, int) and not isinstance(episode, bool) and episode >= 0:
        return episode
    return 1 if state.get("alert_state") == "firing" else 0


@dataclass(frozen=True, slots=True)
class Transition:
    """A run the machine fires: `firing` or `resolved`, its episode number and start."""

    which: str
    episode: int
    since: datetime
    reading: Reading


def step(
    state: dict[str, Any], reading: Reading, now: datetime, bounds: Bounds, policy: Policy
) -> tuple[dict[str, Any], list[Transition]]:
    """Advance the machine by one successful reading.

    Returns the new state and the runs to fire. Each names its episode number,
    which is persisted with the state, so re-evaluating the same episode can
    only produce the same idempotency key.
    """
    current: AlertState = state.get("alert_state", "ok")
    since = datetime.fromisoformat(state["since"]) if state.get("since") else now
    last_fire = datetime.fromisoformat(state["last_fired_at"]) if state.get("last_fired_at") else None
    episode = episode_of(state)
    value = reading.value
    breach = value is not None and bounds.breached(value)
    cleared = value is None or bounds.cleared(value)
    out: list[Transition] = []
    new = dict(state)
    new["last_value"] = stored_value(value)
    if current == "ok" and breach:
        current, since = "pending", now
    if current == "pending":
        if not breach:
            current, since = "ok", now
        elif now - since >= policy.for_ and (last_fire is None or now - last_fire >= policy.cooldown):
            current = "firing"
            episode += 1
            new["last_fired_at"] = _iso(now)
            out.append(Transition("firing", episode, since, reading))
    elif current == "firing" and cleared:
        if policy.on_resolve:
            out.append(Transition("resolved", episode, since, reading))
        current, since = "ok", now
    new["alert_state"] = current
    new["since"] = _iso(since)
    new["episode"] = episode
    return new, out


class Guard:
    """Runs a source read with a time limit on a thread of its own.

    A callable that hangs cannot be interrupted in Python; the guard stops
    waiting after `timeout` (a failed poll) and does not start a second call
    while the first is still stuck, so a hung source costs one thread, not one
    per poll.
    """

    def __init__(self, timeout: timedelta) -> None:
        self.timeout = timeout.total_seconds()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nightowl-source")
        self._running: Future[Any] | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            if self._running is not None and not self._running.done():
                raise SourceError(f"the previous read is still running after {self.timeout:g}s")
            self._running = self._pool.submit(fn)
            running = self._running
        try:
            return running.result(timeout=self.timeout)
        except FutureTimeout:
            raise SourceError(f"timed out after {self.timeout:g}s") from None


class AlertTrigger(PollingTrigger):
    """Base for threshold triggers: poll a reading, step the machine, fire on transitions."""

    kind = "alert"
    state_version = 1
    # Only user callables run under the Guard's thread: the built-in sources carry their own
    # timeouts (httpx, statement_timeout, socket timeouts), so they cost no extra thread.
    guarded = False

    def __init__(self, bounds: Bounds, policy: Policy, every: timedelta, timeout: timedelta) -> None:
        self.bounds = bounds
        self.policy = policy
        self.every = every
        self.guard = Guard(timeout)
        self.defaults = SourceDefaults()

    # Subclasses provide these three.
    def read(self, now: datetime) -> Reading:
        raise NotImplementedError

    def event(self, name: str, state: str, since: datetime, reading: Reading) -> Event:
        raise NotImplementedError

    def source_fingerprint(self) -> str:
        raise NotImplementedError

    def fingerprint(self) -> str:
        b = self.bounds
        return f"{self.source_fingerprint()}|{b.direction}:{b.threshold}:{b.clear}"

    def describe_policy(self) -> dict[str, Any]:
        return {
            **self.bounds.describe(),
            "for_s": self.policy.for_.total_seconds(),
            "cooldown_s": self.policy.cooldown.total_seconds(),
            "on_resolve": self.policy.on_resolve,
            "every_s": self.every.total_seconds(),
        }

    def evaluate(self, name: str, now: datetime, state: dict[str, Any] | None) -> Evaluation:
        from triggers.sources import scrub

        state = check_state(state, self.state_version, self.kind)
        if state is None or state.get("fingerprint") != self.fingerprint():
            # A new or redefined alert starts from `ok`: an old episode's bounds no longer apply.
            # The episode count carries on, so no new episode reuses an older run's key.
            state = {
                "version": self.state_version,
                "fingerprint": self.fingerprint(),
                "alert_state": "ok",
                "since": _iso(now),
                "episode": episode_of(state) if state is not None else 0,
            }
        try:
            reading = self.guard.call(lambda: self.read(now)) if self.guarded else self.read(now)
            if reading.value is not None and math.isnan(reading.value):
                reading = Reading(None, reading.extra)  # NaN is no data, like an empty result
                self.check_empty(reading)
        except Exception as exc:  # any source failure freezes the machine and is counted
            message = scrub(f"{type(exc).__name__}: {exc}", *self.secrets())
            return Evaluation([], record_failure(state, message, now), now + self.every)
        new, fire = step(record_success(state), reading, now, self.bounds, self.policy)
        if reading.extra:
            new["last_reading"] = reading.extra
        firings = [
            Firing(alert_key(name, t.episode, t.which), now, self.event(name, t.which, t.since, t.reading))
            for t in fire
        ]
        return Evaluation(firings, new, now + self.every)

    def check_empty(self, reading: Reading) -> None:
        """Raise SourceError when "no data" is a failure for this trigger (metric's empty="fail")."""


def alert_key(trigger: str, episode: int, which: str) -> str:
    """The idempotency key of an alert trigger's run (DESIGN: `alert:<trigger>:<n>:<state>`)."""
    return f"alert:{trigger}:{episode}:{which}"


def bounds_from(
    above: float | None, below: float | None, clear_below: float | None, clear_above: float | None
) -> Bounds:
    """Exactly one of above/below, and the hysteresis bound on the right side of it."""
    for label, v in (
        ("above", above),
        ("below", below),
        ("clear_below", clear_below),
        ("clear_above", clear_above),
    ):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise ValueError(f"{label} must be a finite number, got {v!r}")
    if (above is None) == (below is None):
        raise ValueError("give exactly one of above= or below=")
    if above is not None:
        if clear_above is not None:
            raise ValueError("clear_above goes with below=; with above= use clear_below")
        clear = above if clear_below is None else clear_below
        if clear > above:
            raise ValueError(f"clear_below={clear} is above the threshold {above}; it must be <= it")
        return Bounds("above", float(above), float(clear))
    assert below is not None
    if clear_below is not None:
        raise ValueError("clear_below goes with above=; with below= use clear_above")
    clear = below if clear_above is None else clear_above
    if clear < below:
        raise ValueError(f"clear_above={clear} is below the threshold {below}; it must be >= it")
    return Bounds("below", float(below), float(clear))
