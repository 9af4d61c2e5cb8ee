"""The Python client: what the CLI does, from code, without assembling a Store, a Publisher
and a Registry by hand.

    from scheduler.client import Client

    with Client.from_settings() as client:
        ref = client.fire("nightly-digest")
        result = client.wait(ref.run_id, timeout=300)   # raises RunFailed, RunDead, ...
        print(result.result)

`AsyncClient` has the same methods as coroutines (each runs the sync call on a thread: the
database and broker drivers underneath are synchronous). Settings come from the environment
(NIGHTOWL_DATABASE_URL, NIGHTOWL_REDIS_URL, NIGHTOWL_TRIGGERS), as for the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from scheduler.core.errors import RunNotFoundError, SchedulerError
from scheduler.core.pauses import ALL, MissedOnPause, PauseScope, PendingOnPause
from scheduler.core.publish import Publisher
from scheduler.core.scrub import register_registry
from scheduler.core.settings import Settings
from scheduler.core.vocabulary import TERMINAL_STATUSES, RunStatus
from scheduler.ops import pauses as pause_ops
from scheduler.ops import runs as run_ops
from scheduler.ops.pauses import PauseChange
from scheduler.ops.runs import WaitTimeoutError
from scheduler.storage.engine import make_engine
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from triggers import Registry, load

Scope = Literal["trigger", "agent"]

__all__ = [
    "AsyncClient",
    "Client",
    "PauseChange",
    "Result",
    "RunBudgetExceeded",
    "RunCancelled",
    "RunDead",
    "RunFailed",
    "RunInfo",
    "RunNotFoundError",
    "RunNotSucceeded",
    "RunRef",
    "RunSkipped",
    "RunTimedOut",
    "WaitTimeoutError",
]


@dataclass(frozen=True, slots=True)
class RunRef:
    """A run `fire` recorded: it will run (or is the active run an earlier fire with the same
    key made, `created=False`)."""

    run_id: str
    idempotency_key: str
    status: str
    created: bool
    published: bool


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as `runs show` describes it (the fields code usually needs)."""

    id: str
    trigger: str | None
    agent: str
    status: str
    terminal_reason: str | None
    idempotency_key: str
    attempt: int
    scheduled_for: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    usage: dict[str, Any] | None
    waiting_for: str | None
    replay_of: str | None
    origin: str | None

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        return cls(
            id=run.id,
            trigger=run.trigger,
            agent=run.agent,
            status=run.status,
            terminal_reason=run.terminal_reason,
            idempotency_key=run.idempotency_key,
            attempt=run.attempt,
            scheduled_for=run.logical_time,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            result=run.result,
            error=run.error,
            usage=run.usage,
            waiting_for=run.waiting_for,
            replay_of=run.replay_of,
            origin=run.origin,
        )


@dataclass(frozen=True, slots=True)
class Result:
    """A run that succeeded: its result and what it spent."""

    run_id: str
    result: Any
    attempt: int
    usage: dict[str, Any] | None
    run: RunInfo


class RunNotSucceeded(SchedulerError):
    """`wait` found the run ended, and not `succeeded`; `run` says how."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        reason = f"/{run.terminal_reason}" if run.terminal_reason else ""
        detail = f": {run.error}" if run.error else ""
        super().__init__(f"run {run.id} ended {run.status}{reason}{detail}")


class RunFailed(RunNotSucceeded):
    """`failed` (error, non_retryable, poison, not_serialisable, unknown_agent)."""


class RunTimedOut(RunNotSucceeded):
    """`timed_out` (soft or hard)."""


class RunDead(RunNotSucceeded):
    """`dead`: its attempts were exhausted."""


class RunCancelled(RunNotSucceeded):
    """`cancelled` (by_user, cancel_other)."""


class RunSkipped(RunNotSucceeded):
    """`skipped` (overlap, missed, paused)."""


class RunBudgetExceeded(RunNotSucceeded):
    """`budget_exceeded` (tokens, cost_usd, tool_calls, max_steps)."""


_ERRORS: dict[str, type[RunNotSucceeded]] = {
    RunStatus.FAILED: RunFailed,
    RunStatus.TIMED_OUT: RunTimedOut,
    RunStatus.DEAD: RunDead,
    RunStatus.CANCELLED: RunCancelled,
    RunStatus.SKIPPED: RunSkipped,
    RunStatus.BUDGET_EXCEEDED: RunBudgetExceeded,
}


class Client:
    """Fire, wait for, list, pause and resume; one database engine and one broker
    connection, opened when first needed. Thread-safe like the Store under it."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self._registry = registry
        self._store: Store | None = None
        self._publisher: Publisher | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, triggers: Iterable[str] | None = None
    ) -> Client:
        """A client on the environment's settings (`triggers` overrides NIGHTOWL_TRIGGERS)."""
        settings = settings or Settings()
        if triggers is not None:
            settings = settings.model_copy(update={"triggers": list(triggers)})
        return cls(settings)

    # -- what it holds ------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """The trigger modules, loaded on first use (fire, pause and resume need them)."""
        if self._registry is None:
            if not self.settings.triggers:
                raise SchedulerError("no trigger modules: set NIGHTOWL_TRIGGERS or pass triggers=[...]")
            self._registry = load(self.settings.triggers)
            register_registry(self._registry)
        return self._registry

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(make_engine(self.settings.require_database_url()))
        return self._store

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            from scheduler.core.celery import broker_app

            self._publisher = Publisher(broker_app(self.settings, self.registry))
        return self._publisher

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._store is not None:
            self._store.engine.dispose()
            self._store = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------

    def fire(
        self,
        trigger: str,
        payload: Any = None,
        key: str | None = None,
        *,
        slot: datetime | None = None,
        force: bool = False,
    ) -> RunRef:
        """Run `trigger`'s agent now, as `nightowl fire` does (a cron trigger's agent gets a
        manual CronTick). Raises TriggerPausedError while it is paused unless `force`, and
        OperationError when nothing will run (the overlap policy skipped it, or `key` names
        a run that already ended)."""
        fired = run_ops.fire(
            self.store,
            self.publisher,
            self.registry,
            trigger,
            datetime.now(UTC),
            payload=payload,
            key=key,
            force=force,
            slot=slot,
        )
        if fired.status not in (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING):
            what = "its overlap policy skipped it" if fired.created else f"key {key!r} names a run that ended"
            raise run_ops.OperationError(f"nothing will run for {trigger!r}: {what} (run {fired.run_id})")
        return RunRef(fired.run_id, fired.idempotency_key, fired.status, fired.created, fired.published)

    def wait(self, run_id: str, timeout: float | timedelta | None = None) -> Result:
        """Block until the run ends. Returns its Result if it succeeded; raises the
        RunNotSucceeded subclass of its status otherwise, WaitTimeoutError after `timeout`
        and RunNotFoundError for an unknown id."""
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        run = RunInfo.of(run_ops.wait(self.store, run_id, seconds))
        if run.status != RunStatus.SUCCEEDED:
            raise _ERRORS.get(run.status, RunNotSucceeded)(run)
        return Result(run.id, run.result, run.attempt, run.usage, run)

    def get(self, run_id: str) -> RunInfo:
        """One run (RunNotFoundError when there is none)."""
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return RunInfo.of(run)

    def runs(
        self,
        *,
        status: str | None = None,
        trigger: str | None = None,
        agent: str | None = None,
        since: timedelta | datetime | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        """Runs, newest first, as `runs list` filters them."""
        after = datetime.now(UTC) - since if isinstance(since, timedelta) else since
        found = self.store.list_runs(status=status, trigger=trigger, agent=agent, since=after, limit=limit)
        return [RunInfo.of(r) for r in found]

    # -- pauses ---------------------------------------------------------------------------

    def pause(
        self,
        name: str | None = None,
        *,
        scope: Scope = "trigger",
        reason: str | None = None,
        missed: str = MissedOnPause.SKIP.value,
        skip_pending: bool = False,
        cancel_running: bool = False,
    ) -> list[PauseChange]:
        """Pause a trigger (or, `scope="agent"`, an agent); `name=None` (not "") pauses every
        one."""
        return pause_ops.pause(
            self.store,
            self.registry,
            PauseScope(scope),
            [ALL if name is None else name],
            datetime.now(UTC),
            reason=reason,
            missed=MissedOnPause(missed),
            pending=PendingOnPause.SKIP if skip_pending else PendingOnPause.WAIT,
            cancel_running=cancel_running,
        )

    def resume(
        self, name: str | None = None, *, scope: Scope = "trigger", skip_pending: bool = False
    ) -> list[PauseChange]:
        """Resume a trigger or an agent; `name=None` resumes every paused one."""
        return pause_ops.resume(
            self.store,
            self.registry,
            PauseScope(scope),
            [name or ALL],
            datetime.now(UTC),
            skip_pending=skip_pending,
        )


class AsyncClient:
    """`Client`'s methods as coroutines, for agents and services on an event loop."""

    def __init__(self, client: Client) -> None:
        self.sync = client

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, triggers: Iterable[str] | None = None
    ) -> AsyncClient:
        return cls(Client.from_settings(settings, triggers=triggers))

    async def fire(
        self,
        trigger: str,
        payload: Any = None,
        key: str | None = None,
        *,
        slot: datetime | None = None,
        force: bool = False,
    ) -> RunRef:
        return await asyncio.to_thread(self.sync.fire, trigger, payload, key, slot=slot, force=force)

    async def wait(self, run_id: str, timeout: float | timedelta | None = None) -> Result:
        """Polls on the event loop (each read on a thread), so cancelling it (asyncio.wait_for)
        stops it: no thread keeps polling, and the program can exit."""
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        interval = 0.05
        while True:
            run = await asyncio.to_thread(self.sync.store.get_run, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            if run.status in TERMINAL_STATUSES:
                info = RunInfo.of(run)
                if info.status != RunStatus.SUCCEEDED:
                    raise _ERRORS.get(info.status, RunNotSucceeded)(info)
                return Result(info.id, info.result, info.attempt, info.usage, info)
            if deadline is not None and loop.time() >= deadline:
                raise WaitTimeoutError(run_id, run.status, seconds or 0.0)
            await asyncio.sleep(interval)
            interval = min(interval * 2, 0.5)

    async def get(self, run_id: str) -> RunInfo:
        return await asyncio.to_thread(self.sync.get, run_id)

    async def runs(self, **filters: Any) -> list[RunInfo]:
        return await asyncio.to_thread(lambda: self.sync.runs(**filters))

    async def pause(self, name: str | None = None, **options: Any) -> list[PauseChange]:
        return await asyncio.to_thread(lambda: self.sync.pause(name, **options))

    async def resume(self, name: str | None = None, **options: Any) -> list[PauseChange]:
        return await asyncio.to_thread(lambda: self.sync.resume(name, **options))

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
