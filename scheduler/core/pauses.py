"""Pauses: the kill switch an operator reaches for at 3 AM, as values every process reads.

A pause is a row in the database (scheduler/storage/pauses.py), not a flag in one
process's memory, so it holds across every scheduler and worker and survives restarts.
The scheduler reads the whole set once per tick and each worker at most once a second
(`PauseCache`), which is what "effective within one tick" costs: one small SELECT.

What a pause does depends on what is paused:

- a cron trigger: its slots still come due, and each becomes a `skipped/paused` ledger
  entry, or (`missed=run-latest-on-resume`) the newest one is held in the trigger's state
  and runs once on resume;
- a trigger that reads its source through a cursor (db_change): it is not polled, so the
  cursor stays where it was and every row changed while paused runs after resume;
- a metric or queue_depth trigger: it keeps evaluating (its episode state stays true) but
  fires nothing;
- an agent: its new and queued runs wait (`waiting_for=paused`, never stuck, no attempt
  taken) and start on resume, or (`pending=skip`) end `skipped/paused`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

ALL = "*"  # the name of a pause that covers every trigger (or every agent)


class PauseScope(StrEnum):
    TRIGGER = "trigger"
    AGENT = "agent"


class MissedOnPause(StrEnum):
    """A paused cron trigger's slots (`--missed`)."""

    SKIP = "skip"  # each a `skipped/paused` ledger entry
    RUN_LATEST = "run-latest-on-resume"  # the newest runs on resume, the rest are skipped


class PendingOnPause(StrEnum):
    """A paused agent's runs (`--skip-pending`)."""

    WAIT = "wait"  # `waiting/paused` until resumed
    SKIP = "skip"  # ended `skipped/paused`


@dataclass(frozen=True, slots=True)
class PauseRecord:
    scope: PauseScope
    name: str
    paused_at: datetime
    reason: str | None = None
    paused_by: str | None = None
    missed: MissedOnPause = MissedOnPause.SKIP
    pending: PendingOnPause = PendingOnPause.WAIT

    def describe(self) -> str:
        """`since 03:12 UTC by ops@host: deploy in progress`, for listings."""
        who = f" by {self.paused_by}" if self.paused_by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"since {self.paused_at:%Y-%m-%d %H:%M} UTC{who}{why}"


@dataclass(frozen=True, slots=True)
class Pauses:
    """Every pause at one moment. A name's own pause wins over the `*` one (its reason and
    policies are the more specific)."""

    records: dict[tuple[PauseScope, str], PauseRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[PauseRecord]) -> Pauses:
        return cls({(r.scope, r.name): r for r in records})

    def trigger(self, name: str) -> PauseRecord | None:
        return self._find(PauseScope.TRIGGER, name)

    def agent(self, name: str) -> PauseRecord | None:
        return self._find(PauseScope.AGENT, name)

    def _find(self, scope: PauseScope, name: str) -> PauseRecord | None:
        return self.records.get((scope, name)) or self.records.get((scope, ALL))

    def __bool__(self) -> bool:
        return bool(self.records)


NO_PAUSES = Pauses()


class PauseCache:
    """A worker's view of the pauses, read at most once per `ttl` seconds.

    A read that fails raises to its caller (the attempt's start, which fails on the same
    database blip anyway and is delivered again); it never yields an empty view, since a
    blip must not unpause a fleet. The calls within `ttl` after a failed read get the last
    good view instead of each waiting on the database again."""

    def __init__(
        self, load: Callable[[], Pauses], ttl: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._view = NO_PAUSES
        self._read_at: float | None = None

    def get(self) -> Pauses:
        with self._lock:
            now = self._monotonic()
            if self._read_at is None or now - self._read_at >= self._ttl:
                try:
                    self._view = self._load()
                finally:
                    self._read_at = now
            return self._view
