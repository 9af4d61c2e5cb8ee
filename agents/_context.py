"""`AgentContext`: what an agent sees of its run.

The worker runtime (or a test) injects the heartbeat sink, the
outbox buffer and the logger, so this package never imports the scheduler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents._budget import Budget
from agents.outbox import (
    OutboxBuffer,
)
from agents.values import check_json, finite_details


@dataclass
class Usage:
    """Accumulated resource use of one attempt, recorded on the run."""

    tokens: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "cost_usd": self.cost_usd, "tool_calls": self.tool_calls}


HeartbeatSink = Callable[[str | None, dict[str, Any]], None]


def _drop_heartbeat(note: str | None, details: dict[str, Any]) -> None:
    """Default sink for contexts built without a runtime."""


@dataclass(kw_only=True)
class AgentContext:
    """The run an agent is executing, and the verbs it may use.

    `logical_time` is the time the trigger meant (the cron slot), never the
    wall clock at execution, so a retried 09:00 digest still covers 09:00.
    """

    run_id: str
    idempotency_key: str
    attempt: int
    logical_time: datetime | None
    trigger: str | None
    agent: str
    fence: int
    deadline: datetime | None
    log: logging.LoggerAdapter[logging.Logger]
    outbox: OutboxBuffer
    previous_heartbeat: dict[str, Any] | None = None
    _heartbeat_sink: HeartbeatSink = field(default=_drop_heartbeat, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _usage: Usage = field(default_factory=Usage, repr=False)
    _budget: Budget | None = field(default=None, repr=False)
    _over_budget: str | None = field(default=None, repr=False)
    _warned_details: bool = field(default=False, repr=False)

    def heartbeat(self, note: str | None = None, **details: Any) -> None:
        """Report progress. Cheap and non-blocking: the latest value wins.

        Details that cannot be stored (NaN, infinities, NUL characters, non-JSON types)
        are dropped, with one warning per attempt: a bad number must not fail the beat.
        """
        kept, dropped = finite_details(details)
        if note is not None and "\x00" in note:
            note, dropped = note.replace("\x00", ""), [*dropped, "note contains a NUL character"]
        if dropped and not self._warned_details:
            self._warned_details = True
            self.log.warning(
                "heartbeat details dropped (not storable as JSON): %s; further "
                "drops in this attempt are not logged",
                "; ".join(dropped),
            )
        self._heartbeat_sink(note, kept)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled, timed out or went over its budget: stop at the
        next safe point."""
        return self._cancel.is_set()

    @property
    def over_budget(self) -> str | None:
        """The budget limit this attempt went past (`tokens`, `cost_usd`, `tool_calls`)."""
        return self._over_budget

    def usage(self, tokens: int = 0, cost_usd: float = 0.0, tool_calls: int = 0) -> None:
        """Add to this attempt's token, cost and tool-call counters; past the agent's
        budget, `cancelled` becomes True at once."""
        check_json([tokens, cost_usd, tool_calls], "usage")
        self._usage.tokens += tokens
        self._usage.cost_usd += cost_usd
        self._usage.tool_calls += tool_calls
        if self._budget is not None and self._over_budget is None:
            over = self._budget.exceeded(self._usage.tokens, self._usage.cost_usd, self._usage.tool_calls)
            if over is not None:
                self._over_budget = over
                self._cancel.set()
                self.log.warning("over budget (%s): %s", over, self._usage.as_dict())

    @property
    def usage_totals(self) -> Usage:
        """What `usage()` has accumulated so far."""
        return self._usage
