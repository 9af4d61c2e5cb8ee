"""What `AgentEnvironment` records of a run (`Captured`), and the probes that record it."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from agents._context import Usage
from agents._events import Event, event_to_json
from agents._steps import StepCursor, StepJournal, StepRecord
from agents.outbox import OutboxWrite

# The statuses a simulated cancel ends in (a budget's is `budget_exceeded/<limit>`).
CANCELLED = "cancelled"
TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class Captured:
    """One attempt of an agent under `AgentEnvironment`, as the worker would have seen it.

    `status` is the attempt's outcome as the worker names it: `succeeded`, `failed`,
    `cancelled`, `timed_out`, `budget_exceeded/<limit>` or `waiting/provider_unavailable`
    (the breaker was open: the worker defers the run). A cancel outranks what the agent
    did after it, as in the worker: an agent that returns after its timeout is `timed_out`.
    `result` is the value as stored (JSON round-tripped); `error` the exception the agent
    raised (or that its result raised: `NotSerialisable`), never raised by `run` itself.
    `steps` are the steps this attempt recorded, `replayed` how many it got from the
    seeded record; `usage` is this attempt's spend and `run_usage` adds `usage_before`.
    """

    agent: str
    event: Event
    status: str
    result: Any
    error: BaseException | None
    heartbeats: list[tuple[str | None, dict[str, Any]]]
    outbox: list[OutboxWrite]
    usage: Usage
    run_usage: Usage
    steps: list[StepRecord]
    replayed: int
    logs: list[str]
    duration_s: float

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def last_heartbeat(self) -> dict[str, Any] | None:
        """The latest heartbeat as the next attempt gets it in `ctx.previous_heartbeat`."""
        if not self.heartbeats:
            return None
        note, details = self.heartbeats[-1]
        return {"note": note, "details": dict(details)}

    def raise_error(self) -> Captured:
        """Raise `error` when the agent raised one; otherwise return this capture, so a test
        that expects success can write `env.run(agent).raise_error().result`."""
        if self.error is not None:
            raise self.error
        return self

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: what `nightowl agents run --json` prints."""
        return {
            "agent": self.agent,
            "status": self.status,
            "event": event_to_json(self.event),
            "result": self.result,
            "error": None if self.error is None else _error_dict(self.error),
            "heartbeats": [{"note": note, "details": details} for note, details in self.heartbeats],
            "outbox": [{"sink": w.sink, "key": w.key, "value": w.value} for w in self.outbox],
            "usage": self.usage.as_dict(),
            "run_usage": self.run_usage.as_dict(),
            "steps": [step.as_dict() for step in self.steps],
            "replayed": self.replayed,
            "logs": list(self.logs),
            "duration_s": round(self.duration_s, 6),
        }


def _error_dict(error: BaseException) -> dict[str, str]:
    return {
        "type": type(error).__qualname__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(type(error), error, _from_the_agent(error))),
    }


_OURS = os.path.dirname(os.path.abspath(__file__))
_ASYNCIO = os.path.dirname(os.path.abspath(asyncio.__file__))


def _from_the_agent(error: BaseException) -> TracebackType | None:
    """The traceback without its leading frames of the environment and of asyncio: the
    first frame shown is the agent's (or the one that raised, when none is)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        where = os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename))
        if where != _OURS and not where.startswith(_ASYNCIO):
            break
        tb = tb.tb_next
    return tb


class CancelFlag(threading.Event):
    """`ctx.cancelled`'s flag, noting when it was first set, by whichever cause (the
    environment's simulated cancel or timeout, or the context crossing its budget): the
    grace before the environment stops waiting counts from then, as the worker's does."""

    def __init__(self) -> None:
        super().__init__()
        self.set_at: float | None = None

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


class Probe:
    """The heartbeat sink and the cancel switch of one run: heartbeats in order, and the
    cause of the first cancel the environment made (None when the budget made it)."""

    def __init__(self, cancel_at_heartbeat: int | None) -> None:
        self.flag = CancelFlag()
        self.cause: str | None = None
        self.heartbeats: list[tuple[str | None, dict[str, Any]]] = []
        self._cancel_at = cancel_at_heartbeat
        self._lock = threading.Lock()

    def cancel(self, cause: str) -> None:
        with self._lock:
            if self.flag.is_set():  # an earlier cause (the budget, a cancel) stands
                return
            self.cause = cause
            self.flag.set()

    def heartbeat(self, note: str | None, details: dict[str, Any]) -> None:
        with self._lock:
            self.heartbeats.append((note, dict(details)))
            count = len(self.heartbeats)
        if count == self._cancel_at:
            self.cancel(CANCELLED)


class CancellingCursor(StepCursor):
    """A step cursor that cancels the run when step `cancel_at` begins (replayed or not),
    so the agent sees `ctx.cancelled` inside that step."""

    def __init__(
        self,
        journal: StepJournal,
        *,
        attempt: int,
        max_bytes: int,
        cancel_at: int | None,
        on_cancel: Callable[[], None],
    ) -> None:
        super().__init__(journal, attempt=attempt, max_bytes=max_bytes)
        self._cancel_at = cancel_at
        self._on_cancel = on_cancel

    def begin(self, name: str) -> tuple[int, StepRecord | None]:
        occurrence, record = super().begin(name)
        if self.count == self._cancel_at:  # the N-th step this attempt begins
            self._on_cancel()
        return occurrence, record


class _Lines(logging.Handler):
    """Keeps each record as `LEVEL message` (with its traceback) and hands it on to the
    `nightowl.testing` logger when logging is configured and its level lets the record
    through (so pytest's caplog, or the user's handlers, see the agent's lines; an
    unconfigured process prints nothing twice)."""

    def __init__(self, lines: list[str], forward_to: logging.Logger) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self._lines = lines
        self._forward = forward_to

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
        if self._forward.isEnabledFor(record.levelno) and self._forward.hasHandlers():
            self._forward.handle(record)


def capturing_logger(lines: list[str]) -> logging.Logger:
    """A logger of one run, capturing every level into `lines`. Not registered with
    `logging.getLogger` (the registry keeps every logger it makes forever), so nothing of a
    run outlives it and two runs never share lines."""
    logger = logging.Logger("nightowl.testing.agent", logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_Lines(lines, logging.getLogger("nightowl.testing")))
    return logger
