"""The value types that travel between the processes and storage.

A tick builds `NewRun`s and `StateWrite`s and gets back the runs it inserted; the sweeper,
the watchdog and `fire`/`retry` hand `Dispatch`es to the one publish path; the worker holds a
`StartedAttempt` from its start to its fenced finish and learns a `Beat` from each
heartbeat. They live here, not in storage, so a caller names what it passes without
importing the statements that store it (storage imports them from here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.core.vocabulary import RunStatus


def new_run_id() -> str:
    """A random (version 4) UUID in its canonical text form.

    `str(uuid.uuid4())` builds a UUID object to print it: about 7 us, three times per run of
    a 10,000-trigger burst (the run, its Celery task id, the delivery tag). Formatting the
    16 random bytes directly gives the same text at a fraction of the cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run row to insert (status `pending` unless policy decided otherwise)."""

    idempotency_key: str
    trigger: str | None
    agent: str
    queue: str
    event: dict[str, Any]
    logical_time: datetime | None
    agent_version: str | None
    status: str = RunStatus.PENDING
    terminal_reason: str | None = None
    overlap_key: str | None = None
    overlap: str | None = None  # a RunOverlap (skip | buffer_one | cancel_other | wait) or None
    id: str = field(default_factory=new_run_id)
    error: str | None = None  # why a run inserted already ended (an unstorable event)
    origin: str = "live"  # a RunOrigin: live | manual | backfill | replay
    replay_of: str | None = None


@dataclass(frozen=True, slots=True)
class StateWrite:
    """Persist a trigger's new state if its revision is still `expected_revision` (0 = new)."""

    name: str
    kind: str
    state: dict[str, Any]
    expected_revision: int
    next_evaluation: datetime | None
    source_failing: bool = False  # mirrored from the state so listings and alerts need no JSON


@dataclass(frozen=True, slots=True)
class MissedRow:
    """A ledger entry: a gap of slots that did not run, and why."""

    trigger: str
    first: datetime
    last: datetime
    count: int
    reason: str
    # Set for slots skipped by a pause: extend the trigger's row of the same pause (recorded
    # since then) instead of adding one.
    extends_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What a publisher needs to send `agent.<name>(run_id)`, and the run's state as the
    publisher saw it: the claim before the publish compares on it (`claim_for_publish`)."""

    run_id: str
    agent: str
    queue: str
    trigger: str | None
    attempt: int
    status: str = RunStatus.PENDING
    fence: int = 0


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A `queued` run old enough that its message may be gone (the lost-message check)."""

    dispatch: Dispatch
    queued_at: datetime


@dataclass(frozen=True, slots=True)
class StartedAttempt:
    run_id: str
    fence: int
    attempt: int
    deliveries: int
    overlap_key: str | None = None
    capped_agent: str | None = None  # set when the agent has a concurrency cap
    # What the agent needs of its run, returned by the same statement that took the fence.
    idempotency_key: str = ""
    trigger: str | None = None
    event: Any = None
    logical_time: datetime | None = None
    previous_heartbeat: dict[str, Any] | None = None
    # The start closed an attempt still marked running: its worker vanished mid-run.
    took_over: bool = False
    # What earlier attempts spent (the budget is for the run), and how many of them were
    # deferrals (a provider was unavailable): they count towards no limit (max_attempts
    # subtracts them; a deferral gives its delivery back, so `deliveries` excludes them).
    usage: dict[str, Any] | None = None
    deferrals: int = 0
    agent_version: str | None = None  # the version the run started with
    replay_of: str | None = None  # the run this one replays (`runs replay`)

    @property
    def counted_attempt(self) -> int:
        """This attempt's number among those that count towards max_attempts."""
        return self.attempt - self.deferrals


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned: whether the attempt still holds the run, and any cancel
    request aimed at the run (it travels back on the statement the beat runs anyway)."""

    current: bool
    cancel_requested: str | None = None
