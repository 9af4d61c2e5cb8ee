"""Durable steps: `ctx.step(name, fn, *args)` records what `fn` returned, once.

An LLM agent's work is a chain of slow, billed, non-deterministic calls. When its attempt
dies (a worker killed, a redelivery, a retry after an error) the next attempt must not pay
for the calls that already succeeded, nor see different answers to them and decide
differently. So each completed step's result is written to the run's journal (by the worker:
fenced like the final commit), and a later attempt of the same run gets the recorded result
instead of calling `fn` again.

Steps are addressed by name plus call order: the n-th completed call of a name is matched
with the n-th record of that name, and in a sequential agent each step must be the next one
recorded. A step that differs from the record means the code changed or decides its steps
non-deterministically; replaying would hand one step's answer to another, so it is an error
naming both, never a silent re-run. A call that raised takes no place in the record.

At-least-once: a step interrupted after `fn` returned but before its record committed runs
again on the next attempt. Make the effects of a step idempotent, or put them in the outbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from agents._errors import AgentError, NonRetryable
from agents.values import NotSerialisable, round_trip

# The default size limit of one recorded step result (the worker applies its setting).
MAX_STEP_BYTES = 256 * 1024
MAX_STEP_NAME = 128  # characters (steps.name is VARCHAR(128) on every database)


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
    occurrence: int = 1  # the n-th completed call of this name in the run

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
            "occurrence": self.occurrence,
        }


class StepJournal(Protocol):
    """Where a run's steps are kept. The worker's journal writes to the database, fenced;
    `agents.testing.AgentEnvironment` keeps them in memory."""

    def recorded(self) -> Sequence[StepRecord]:
        """The steps earlier attempts of this run completed, in call order."""
        ...

    def record(self, step: StepRecord, run_usage: Callable[[], dict[str, Any]]) -> None:
        """Persist a completed step with the run's usage so far (`run_usage()`, taken when
        the write happens, so a later snapshot is never overwritten by an earlier one);
        raise `StepFencedOut` when a newer attempt holds the run (nothing was written)."""
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

    def record(self, step: StepRecord, run_usage: Callable[[], dict[str, Any]]) -> None:
        self.written.append(step)
        self.usage = dict(run_usage())


def as_records(steps: Sequence[StepRecord | tuple[str, Any]]) -> list[StepRecord]:
    """Seed records from `StepRecord`s or `(name, result)` pairs, numbered in order (a pair's
    occurrence counts the earlier pairs of its name)."""
    out: list[StepRecord] = []
    seen: dict[str, int] = {}
    for seq, item in enumerate(steps, start=1):
        if isinstance(item, StepRecord):
            out.append(item)
        else:
            name, result = item
            seen[name] = seen.get(name, 0) + 1
            out.append(StepRecord(seq=seq, name=name, result=result, occurrence=seen[name]))
    return out


class StepCursor:
    """An attempt's place in its run's journal: replays recorded steps, records new ones.

    A step is identified by its name and its occurrence (the n-th call of that name that did
    not fail), so a call that raised takes no place in the record: an agent that catches an
    error and calls again gets the same place on its next attempt. Order is checked for a
    sequential agent (steps begun one at a time from the agent's own thread, no event
    loop): there, a step that is not the next one recorded is `StepDiverged`. Steps begun
    concurrently (async tasks, threads) are matched by name and occurrence only, so they
    need names of their own (`f"summarise:{doc_id}"`). Thread-safe.
    """

    def __init__(self, journal: StepJournal, *, attempt: int, max_bytes: int = MAX_STEP_BYTES) -> None:
        self.journal = journal
        self.attempt = attempt
        self.max_bytes = max_bytes
        records = sorted(journal.recorded(), key=lambda r: r.seq)
        self._recorded = {(r.name, r.occurrence): r for r in records}
        self._pending = [(r.name, r.occurrence) for r in records]  # not yet replayed, in order
        self._begun: dict[str, int] = {}  # per name: the occurrences taken so far
        self._in_flight = 0
        self._next_seq = max((r.seq for r in records), default=0) + 1
        self._calls = 0
        self._owner = threading.get_ident()
        self._lock = threading.Lock()
        self.replayed = 0
        self.executed = 0

    @property
    def count(self) -> int:
        """How many steps this attempt has begun (replayed, run or failed): the run's step
        count that `Budget(max_steps=)` limits."""
        return self._calls

    def begin(self, name: str) -> tuple[int, StepRecord | None]:
        """Take this step's occurrence; the record to replay, if it has one."""
        _check_name(name)
        with self._lock:
            occurrence = self._begun.get(name, 0) + 1
            key = (name, occurrence)
            record = self._recorded.get(key)
            if self._sequential():
                self._check_order(key, record)
            self._begun[name] = occurrence
            self._calls += 1
            if record is not None:
                self._pending.remove(key)
                self.replayed += 1
            else:
                self._in_flight += 1
        return occurrence, record

    def _sequential(self) -> bool:
        if self._in_flight or threading.get_ident() != self._owner:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    def _check_order(self, key: tuple[str, int], record: StepRecord | None) -> None:
        if not self._pending or self._pending[0] == key:
            return
        expected = self._recorded[self._pending[0]]
        name, occurrence = key
        which = f"{name!r}" if occurrence == 1 else f"{name!r} (call {occurrence} of that name)"
        if record is None:
            what = f"step {which} is not in this run's record, but the next recorded step is"
        else:
            what = f"step {which} was recorded after"
        raise StepDiverged(
            f"{what} {expected.name!r} (step {expected.seq}, recorded by attempt {expected.attempt}). "
            "The agent's steps must be called in the same order on every attempt; if the code "
            "changed, start a new run instead of retrying this one"
        )

    def failed(self, name: str, occurrence: int) -> None:
        """The step's function raised: the call takes no place in the record."""
        with self._lock:
            self._in_flight -= 1
            if self._begun.get(name) == occurrence:
                self._begun[name] = occurrence - 1

    def check(self, name: str, result: Any) -> Any:
        """The result as it will be replayed: portable JSON within the size limit."""
        kept, size = round_trip(result, f"step {name!r} result", "A step's result is recorded for replay")
        if size > self.max_bytes:
            raise StepTooLarge(
                f"step {name!r} returned {size} bytes of JSON, over the limit of "
                f"{self.max_bytes} (NIGHTOWL_STEP_MAX_BYTES); record a summary or a reference "
                "(an id, a URL) instead of the whole payload"
            )
        return kept

    def commit(
        self,
        name: str,
        occurrence: int,
        result: Any,
        usage: dict[str, Any],
        *,
        started_at: datetime,
        run_usage: Callable[[], dict[str, Any]],
    ) -> StepRecord:
        """Record a completed step (numbered in the order steps complete)."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        record = StepRecord(
            seq=seq,
            name=name,
            result=result,
            attempt=self.attempt,
            usage=usage,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            occurrence=occurrence,
        )
        try:
            self.journal.record(record, run_usage)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self.executed += 1
        return record


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise StepError(f"ctx.step needs a non-empty name, got {name!r}")
    if len(name) > MAX_STEP_NAME:
        raise StepError(
            f"step name {name[:40]!r}... is {len(name)} characters, over {MAX_STEP_NAME}: name the "
            "step for what it does (put the arguments in the call, not the name)"
        )
