"""Durable steps: `ctx.step(name, fn, *args)` records what `fn` returned, once.

An LLM agent's work is a chain of slow, billed, non-deterministic calls. When its attempt
dies (a worker killed, a redelivery, a retry after an error) the next attempt must not pay
for the calls that already succeeded, nor see different answers to them and decide
differently. So each completed step's result is written to the run's journal (by the worker:
fenced like the final commit), and a later attempt of the same run gets the recorded result
instead of calling `fn` again.

Steps are addressed by their call order and checked by name: the n-th `ctx.step` of an
attempt is matched with the n-th record. A name that differs from the record means the code
changed or decides its steps non-deterministically; replaying would hand one step's answer
to another, so it is an error naming both, never a silent re-run.

At-least-once: a step interrupted after `fn` returned but before its record committed runs
again on the next attempt. Make the effects of a step idempotent, or put them in the outbox.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from agents._errors import AgentError, NonRetryable
from agents.values import NotSerialisable, json_problem

# The default size limit of one recorded step result (the worker applies its setting).
MAX_STEP_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One completed step of a run, as the journal keeps it.

    `usage` is what the step reported through `ctx.usage` while it ran (tokens, cost_usd,
    tool_calls): a replay charges none of it again.
    """

    seq: int
    name: str
    result: Any
    attempt: int = 1
    usage: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "attempt": self.attempt,
            "result": self.result,
            "usage": dict(self.usage),
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "duration_s": self.duration_s,
        }


class StepJournal(Protocol):
    """Where a run's steps are kept. The worker's journal writes to the database, fenced;
    `agents.testing.AgentEnvironment` keeps them in memory."""

    def recorded(self) -> Sequence[StepRecord]:
        """The steps earlier attempts of this run completed, in call order."""
        ...

    def record(self, step: StepRecord, run_usage: dict[str, Any]) -> None:
        """Persist a completed step with the run's usage so far; raise `StepFencedOut` when
        a newer attempt holds the run (nothing was written)."""
        ...


class StepError(AgentError):
    """Base for misuse of `ctx.step`."""


class StepDiverged(StepError, NonRetryable):
    """The n-th step of this attempt is not the n-th recorded step: replaying would hand one
    step's answer to another. Not retried: every attempt would diverge the same way."""


class StepTooLarge(StepError, NotSerialisable):
    """A step returned more than the journal may hold (ends the run failed/not_serialisable)."""


class StepFencedOut(StepError):
    """A newer attempt holds the run: this attempt's step was not recorded; stop."""


class MemoryJournal:
    """A journal in memory: for tests and `nightowl agents run`, seeded with the steps a
    simulated earlier attempt completed."""

    def __init__(self, recorded: Sequence[StepRecord] = ()) -> None:
        self._recorded = list(recorded)
        self.written: list[StepRecord] = []
        self.usage: dict[str, Any] = {}

    def recorded(self) -> Sequence[StepRecord]:
        return list(self._recorded)

    def record(self, step: StepRecord, run_usage: dict[str, Any]) -> None:
        self.written.append(step)
        self.usage = dict(run_usage)


def as_records(steps: Sequence[StepRecord | tuple[str, Any]]) -> list[StepRecord]:
    """Seed records from `StepRecord`s or `(name, result)` pairs, numbered in order."""
    out: list[StepRecord] = []
    for seq, item in enumerate(steps, start=1):
        if isinstance(item, StepRecord):
            out.append(item)
        else:
            name, result = item
            out.append(StepRecord(seq=seq, name=name, result=result))
    return out


class StepCursor:
    """An attempt's position in its run's journal: replays recorded steps in order, then
    records new ones. Thread-safe: steps are numbered in the order their calls begin."""

    def __init__(self, journal: StepJournal, *, attempt: int, max_bytes: int = MAX_STEP_BYTES) -> None:
        self.journal = journal
        self.attempt = attempt
        self.max_bytes = max_bytes
        self._recorded = {r.seq: r for r in journal.recorded()}
        self._next = 0
        self._lock = threading.Lock()
        self.replayed = 0
        self.executed = 0

    @property
    def count(self) -> int:
        """How many steps this attempt has begun (replayed or run): the run's step count."""
        return self._next

    def begin(self, name: str) -> tuple[int, StepRecord | None]:
        """Claim the next step number; the record to replay, if this step has one."""
        if not isinstance(name, str) or not name:
            raise StepError(f"ctx.step needs a non-empty name, got {name!r}")
        with self._lock:
            index = self._next
            self._next += 1
        record = self._recorded.get(index + 1)
        if record is not None:
            if record.name != name:
                raise StepDiverged(
                    f"step {index + 1} of this run is {name!r}, but the recorded step {index + 1} is "
                    f"{record.name!r} (recorded by attempt {record.attempt}). The agent's steps must be "
                    "called in the same order on every attempt; if the code changed, start a new run "
                    "instead of retrying this one"
                )
            with self._lock:
                self.replayed += 1
            return index + 1, record
        return index + 1, None

    def check(self, name: str, result: Any) -> Any:
        """The result as it will be replayed: portable JSON within the size limit."""
        problem = json_problem(result, f"step {name!r} result")
        if problem is not None:
            raise NotSerialisable(
                f"{problem}. A step's result is recorded for replay: return dicts, lists, str, "
                "finite numbers, bool or None"
            )
        text = json.dumps(result)
        if len(text.encode()) > self.max_bytes:
            raise StepTooLarge(
                f"step {name!r} returned {len(text.encode())} bytes of JSON, over the limit of "
                f"{self.max_bytes} (NIGHTOWL_STEP_MAX_BYTES); record a summary or a reference "
                "(an id, a URL) instead of the whole payload"
            )
        return json.loads(text)  # the first attempt sees exactly what a replay will

    def commit(
        self,
        seq: int,
        name: str,
        result: Any,
        usage: dict[str, Any],
        *,
        started_at: datetime,
        run_usage: dict[str, Any],
    ) -> StepRecord:
        record = StepRecord(
            seq=seq,
            name=name,
            result=result,
            attempt=self.attempt,
            usage=usage,
            started_at=started_at,
            finished_at=datetime.now(UTC),
        )
        self.journal.record(record, run_usage)
        with self._lock:
            self.executed += 1
        return record
