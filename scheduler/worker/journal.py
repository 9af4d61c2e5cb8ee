"""The worker's side of durable steps and run-wide usage.

`StoreJournal` is the `agents.StepJournal` of one attempt: it reads the steps earlier
attempts recorded and writes new ones through the store, fenced (a stale attempt's step is
refused and the agent stops with `StepFencedOut`). A connection error is retried for a
bounded time: a step whose record is lost runs again on the next attempt (at least once),
which costs an LLM call but never a wrong answer.

`UsageFeed` pushes what an attempt newly reported to the fleet's spend counter (for spend
caps) and to the metrics, as deltas, so a beat and the finish never count the same tokens
twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import redis
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from agents import SpendCap, StepFencedOut, StepRecord, Usage
from scheduler.core.steplog import StepFailures
from scheduler.core.values import StartedAttempt
from scheduler.storage.attempts import is_transient

log = logging.getLogger("nightowl.worker")
_SPEND_FAILURES = StepFailures(log)

T = TypeVar("T")

# How long a step's record keeps retrying through connection errors before the attempt fails.
STEP_RETRY_FOR = timedelta(seconds=20)


class StepWriter(Protocol):
    def steps_of(self, run_id: str) -> list[StepRecord]: ...

    def record_step(
        self,
        started: StartedAttempt,
        step: StepRecord,
        *,
        run_usage: dict[str, Any],
        attempt_usage: dict[str, Any],
    ) -> bool: ...


class StoreJournal:
    """An attempt's steps in the database: replayed in order, recorded fenced."""

    def __init__(
        self,
        store: StepWriter,
        started: StartedAttempt,
        attempt_usage: Callable[[], Usage],
        usage_lock: threading.Lock,
    ) -> None:
        self._store = store
        self._started = started
        self._attempt_usage = attempt_usage
        # Held with the beat's: each writes a usage snapshot taken under it, so an older
        # snapshot never lands after a newer one.
        self._usage_lock = usage_lock
        # A first attempt has nothing to replay: skip the query.
        self._recorded = _retried(lambda: store.steps_of(started.run_id)) if started.attempt > 1 else []

    def recorded(self) -> Sequence[StepRecord]:
        return list(self._recorded)

    def record(self, step: StepRecord, run_usage: Callable[[], dict[str, Any]]) -> None:
        def write() -> bool:
            with self._usage_lock:
                return self._store.record_step(
                    self._started, step, run_usage=run_usage(), attempt_usage=self._attempt_usage().as_dict()
                )

        if not _retried(write):
            raise StepFencedOut(
                f"step {step.seq} {step.name!r} of run {self._started.run_id} was not recorded: a newer "
                f"attempt holds the run (attempt {self._started.attempt} is fenced out); stopping"
            )


def _retried(call: Callable[[], T]) -> T:
    """`call()`, retried through connection errors for up to STEP_RETRY_FOR."""
    for try_ in Retrying(
        stop=stop_after_delay(STEP_RETRY_FOR.total_seconds()),
        wait=wait_exponential(multiplier=0.2, max=4),
        retry=retry_if_exception(is_transient),
        reraise=True,
    ):
        with try_:
            return call()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


class SpendMeter(Protocol):
    """The fleet's spend counter (scheduler.core.spend.SpendCounter)."""

    def add(self, agent: str, cap: SpendCap, now: datetime, tokens: int, cost_usd: float) -> None: ...

    def reached(self, agent: str, cap: SpendCap, now: datetime) -> tuple[str, datetime] | None: ...


UsageSink = Callable[[str, int, float], None]  # (agent, tokens, cost_usd): the metrics


class UsageFeed:
    """Sends an attempt's new usage, as deltas, to the spend counter and the metrics."""

    def __init__(
        self,
        agent: str,
        cap: SpendCap | None,
        meter: SpendMeter | None,
        sink: UsageSink | None,
        now: Callable[[], datetime],
    ) -> None:
        self._agent = agent
        self._cap = cap
        self._meter = meter
        self._sink = sink
        self._now = now
        self._sent = Usage()
        self._lock = threading.Lock()

    def push(self, usage: Usage) -> None:
        with self._lock:
            tokens = usage.tokens - self._sent.tokens
            cost = usage.cost_usd - self._sent.cost_usd
            if tokens <= 0 and cost <= 0:
                return
            self._sent = Usage(usage.tokens, usage.cost_usd, usage.tool_calls)
        if self._sink is not None:
            self._sink(self._agent, tokens, cost)
        if self._meter is None or self._cap is None:
            return
        try:
            self._meter.add(self._agent, self._cap, self._now(), tokens, cost)
        except redis.RedisError as exc:  # the cap is a guard rail: a blip must not fail a run
            _SPEND_FAILURES.failed("spend counter", exc)
        else:
            _SPEND_FAILURES.succeeded("spend counter")
