"""Backfill a cron trigger over a past range: the Airflow `dags backfill` a user reaches for
after an outage or a fixed bug.

Each slot of the range is looked up under the key live firing uses (`cron:<name>:<slot>`):
- missing (never fired, or skipped by a catch-up policy or a pause): a run is created under
  that very key, so a backfill can never duplicate a live run, and a live scheduler firing
  the same slot at the same moment makes one run, not two;
- present: left alone, or with `reprocess` (`failed`: any that did not succeed; `all`) a
  replay of it is made (a new run, `replay_of` the old one).
Backfill runs carry `origin=backfill` and no overlap policy (its own runs must not skip
each other); they are throttled instead, at most `max_active` at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from agents import CronTick, event_to_json
from scheduler.core.publish import Publisher, dispatch
from scheduler.core.values import Dispatch, NewRun
from scheduler.core.vocabulary import TERMINAL_STATUSES, RunOrigin, RunStatus, WaitingFor
from scheduler.ops.runs import OperationError, replay
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from triggers import CronTrigger, Registry, TriggerSpec, cron_key

MAX_SLOTS = 10_000
GONE = "gone"  # the status reported for a run pruned or deleted while the backfill waited
_EPSILON = timedelta(microseconds=1)  # --from is inclusive; iter_after is strict


class Reprocess(StrEnum):
    NONE = "none"
    FAILED = "failed"
    ALL = "all"


class Action(StrEnum):
    CREATE = "create"  # no run: one is made under the live key
    REPLAY = "replay"  # a run exists and is reprocessed
    SKIP = "skip"  # a run exists and is left alone (or is still active)


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """One slot: what a backfill does with it, the run it found and the run it made."""

    slot: datetime
    action: Action
    existing: str | None = None  # the status of the run the slot already has
    existing_id: str | None = None
    run_id: str | None = None  # the run made (create, replay)
    status: str | None = None  # that run's status when the backfill ended

    def as_json(self) -> dict[str, object]:
        return {
            "slot": self.slot.isoformat(),
            "action": self.action.value,
            "run_id": self.run_id or self.existing_id,
            "existing": self.existing,
            "status": self.status,
        }


def cron_spec(registry: Registry, name: str) -> tuple[TriggerSpec, CronTrigger]:
    spec = registry.triggers.get(name)
    if spec is None:
        raise OperationError(
            f"no trigger named {name!r} (known: {', '.join(sorted(registry.triggers)) or 'none'})"
        )
    if not isinstance(spec.source, CronTrigger):
        raise OperationError(f"trigger {name!r} is a {spec.kind} trigger; backfill is for cron triggers")
    return spec, spec.source


def slots(cron: CronTrigger, start: datetime, end: datetime, now: datetime) -> list[datetime]:
    """The slots in [start, end], none in the future, at most MAX_SLOTS."""
    if end < start:
        raise OperationError(f"--to {end.isoformat()} is before --from {start.isoformat()}")
    if end > now:
        raise OperationError(f"--to {end.isoformat()} is in the future; backfill reaches up to now")
    out: list[datetime] = []
    for slot in cron.expr.iter_after(start - _EPSILON):
        if slot > end:
            break
        if len(out) >= MAX_SLOTS:
            raise OperationError(f"more than {MAX_SLOTS} slots in the range; backfill it in parts")
        out.append(slot)
    return out


def _action(run: Run | None, reprocess: Reprocess) -> Action:
    if run is None:
        return Action.CREATE
    if run.status not in TERMINAL_STATUSES:
        return Action.SKIP  # still active: it will finish (or be retried) by itself
    if reprocess is Reprocess.ALL or (reprocess is Reprocess.FAILED and run.status != RunStatus.SUCCEEDED):
        return Action.REPLAY
    return Action.SKIP


def plan(store: Store, spec: TriggerSpec, found: list[datetime], reprocess: Reprocess) -> list[SlotPlan]:
    """What a backfill would do with each slot (`--dry-run` prints this)."""
    runs = store.runs_by_keys([cron_key(spec.name, s) for s in found])
    out = []
    for s in found:
        run = runs.get(cron_key(spec.name, s))
        out.append(
            SlotPlan(
                s,
                _action(run, reprocess),
                existing=run.status if run else None,
                existing_id=run.id if run else None,
            )
        )
    return out


@dataclass
class Backfill:
    """Carries a plan out, at most `max_active` of its runs at a time."""

    store: Store
    publisher: Publisher
    registry: Registry
    spec: TriggerSpec
    max_active: int = 4
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    on_done: Callable[[SlotPlan], None] = lambda _p: None
    # told once each time every active run is held by a pause (the backfill waits for resume)
    on_held: Callable[[int], None] = lambda _n: None

    def run(self, plans: list[SlotPlan]) -> list[SlotPlan]:
        if self.max_active < 1:
            raise OperationError("--max-active must be at least 1")
        out = list(plans)
        active: dict[str, int] = {}  # run id -> index in out
        for i, p in enumerate(out):
            if p.action is Action.SKIP:
                self.on_done(p)
                continue
            self._wait_below(self.max_active, active, out)
            out[i] = made = self._start(p)
            if made.run_id is None:  # the live scheduler made it first: nothing of ours
                self.on_done(made)
            else:
                active[made.run_id] = i
        self._wait_below(1, active, out)
        return out

    def _start(self, p: SlotPlan) -> SlotPlan:
        now = self.now()
        if p.action is Action.REPLAY:
            assert p.existing_id is not None
            made = replay(
                self.store,
                self.publisher,
                p.existing_id,
                now,
                registry=self.registry,
                origin=RunOrigin.BACKFILL,
            )
            return replace(p, run_id=made.run_id)
        agent = self.registry.agent_for(self.spec)
        event = CronTick(trigger=self.spec.name, scheduled_for=p.slot, fired_at=now)
        new = NewRun(
            idempotency_key=cron_key(self.spec.name, p.slot),
            trigger=self.spec.name,
            agent=agent.name,
            queue=agent.queue,
            event=event_to_json(event),
            logical_time=p.slot,
            agent_version=agent.version,
            origin=RunOrigin.BACKFILL,
        )
        inserted = self.store.commit_tick([new], [], [], now)
        if not inserted:
            run = self.store.runs_by_keys([new.idempotency_key]).get(new.idempotency_key)
            return replace(
                p,
                action=Action.SKIP,
                existing=run.status if run else None,
                existing_id=run.id if run else None,
                status=run.status if run else None,
            )
        # A broker failure leaves it pending: the scheduler's sweeper publishes it.
        with contextlib.suppress(Exception):
            dispatch(
                self.store, self.publisher, [Dispatch(new.id, new.agent, new.queue, new.trigger, 0)], now
            )
        return replace(p, run_id=new.id)

    def _wait_below(self, limit: int, active: dict[str, int], out: list[SlotPlan]) -> None:
        interval = 0.05
        held = False
        while len(active) >= limit:
            statuses = self.store.statuses_of(list(active))
            for run_id in list(active):
                status, _ = statuses.get(run_id, (GONE, None))  # pruned or deleted: done
                if status in TERMINAL_STATUSES or status == GONE:
                    i = active.pop(run_id)
                    out[i] = replace(out[i], status=status)
                    self.on_done(out[i])
            paused = [r for r in active if statuses.get(r, ("", None))[1] == WaitingFor.PAUSED]
            if paused and len(paused) == len(active) and not held:
                self.on_held(len(paused))
            held = bool(paused) and len(paused) == len(active)
            if len(active) >= limit:
                self.sleep(interval)
                interval = min(interval * 2, 0.5)
