"""Operator actions shared by the CLI and tests: fire, retry, cancel.

Each commits first and publishes right after through the one publish path
(`scheduler.core.publish.dispatch`), like the scheduler does, so a crash or a broker
outage between the two leaves a `pending` run the sweeper picks up.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from agents import CronTick, Event, ManualFire, event_to_json, json_problem
from scheduler.core.errors import RunNotFoundError, SchedulerError
from scheduler.core.overlap import overlap_for
from scheduler.core.publish import Publisher, dispatch
from scheduler.core.scrub import scrub_text
from scheduler.core.values import Dispatch, NewRun
from scheduler.core.vocabulary import RETRYABLE_STATUSES, TERMINAL_STATUSES, Reason, RunOrigin, RunStatus
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from triggers import CronTrigger, Registry


class OperationError(SchedulerError):
    """An operator action could not be carried out; the message says why."""


class TriggerPausedError(OperationError):
    """`fire` on a paused trigger without `force`: nothing was fired."""


@dataclass(frozen=True, slots=True)
class Fired:
    run_id: str
    idempotency_key: str
    status: RunStatus
    created: bool
    # False when the broker could not be reached: the run is recorded (`pending`) and the
    # scheduler's sweeper publishes it within seconds of the broker answering again.
    published: bool = True
    publish_error: str | None = None


def fire(
    store: Store,
    publisher: Publisher,
    registry: Registry,
    trigger: str,
    now: datetime,
    *,
    payload: Any = None,
    key: str | None = None,
    force: bool = False,
    slot: datetime | None = None,
) -> Fired:
    """A manual run of `trigger`'s agent, under its overlap policy and refused while the
    trigger is paused, unless `force`. A cron trigger's agent gets a `CronTick` marked
    manual (`scheduled_for` = `slot` or now), any other a `ManualFire`."""
    spec = registry.triggers.get(trigger)
    if spec is None:
        known = ", ".join(sorted(registry.triggers)) or "none"
        raise OperationError(f"no trigger named {trigger!r} (known: {known})")
    problem = json_problem(payload, "payload")
    if problem is not None:
        raise OperationError(f"the payload cannot be stored: {problem}")
    pause = None if force else store.pauses().trigger(trigger)
    if pause is not None:
        raise TriggerPausedError(
            f"trigger {trigger!r} is paused ({pause.describe()}); nothing fired. Resume it with "
            f"`nightowl triggers resume {trigger}`, or fire anyway with --force"
        )
    agent = registry.agent_for(spec)
    overlap, overlap_key = (None, None) if force else overlap_for(spec.overlap, trigger, None)
    idem = f"manual:{trigger}:{key or uuid.uuid4()}"
    if slot is not None and not isinstance(spec.source, CronTrigger):
        raise OperationError(f"--slot is for cron triggers; {trigger!r} is a {spec.kind} trigger")
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    # The event the trigger itself produces, so an agent typed `event: CronTick` works when
    # fired by hand; the other kinds' events describe a change in a source, so a ManualFire.
    event: Event = (
        CronTick(
            trigger=trigger,
            scheduled_for=slot or now,
            fired_at=now,
            manual=True,
            fired_by=by,
            payload=payload,
        )
        if isinstance(spec.source, CronTrigger)
        else ManualFire(trigger=trigger, payload=payload, fired_by=by)
    )
    run = NewRun(
        idempotency_key=idem,
        trigger=trigger,
        agent=agent.name,
        queue=agent.queue,
        event=event_to_json(event),
        logical_time=slot or now,
        agent_version=agent.version,
        overlap=overlap,
        overlap_key=overlap_key,
        origin=RunOrigin.MANUAL,
    )
    inserted = store.commit_tick([run], [], [], now)
    if not inserted:
        existing = next(r for r in store.list_runs(trigger=trigger, limit=1000) if r.idempotency_key == idem)
        return Fired(existing.id, idem, RunStatus(existing.status), created=False)
    (new,) = inserted
    if new.status != RunStatus.PENDING:
        return Fired(new.id, idem, RunStatus(new.status), created=True)
    try:
        sent = dispatch(store, publisher, [Dispatch(new.id, new.agent, new.queue, trigger, 0)], now)
    except Exception as exc:
        return Fired(
            new.id,
            idem,
            RunStatus.PENDING,
            created=True,
            published=False,
            publish_error=scrub_text(f"{type(exc).__name__}: {exc}"),
        )
    # Not claimed: a worker could not have it yet, so only the sweeper (it was pending past its
    # grace already) sent it; either way it is on its way.
    return Fired(new.id, idem, RunStatus.QUEUED if sent else RunStatus.PENDING, created=True)


def retry(store: Store, publisher: Publisher, run_id: str, now: datetime) -> Dispatch:
    """Give a dead, failed or timed-out run one more attempt."""
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status not in RETRYABLE_STATUSES:
        raise OperationError(
            f"run {run_id} is {run.status}; only {', '.join(RETRYABLE_STATUSES)} runs can be retried"
        )
    revived = store.revive(run_id, RETRYABLE_STATUSES)
    if revived is None:
        raise OperationError(f"run {run_id} changed while retrying; look at it again")
    # A broker failure leaves it `pending`: the sweeper publishes it once the broker answers.
    with contextlib.suppress(Exception):
        dispatch(store, publisher, [revived], now)
    return revived


def cancel(store: Store, client: redis.Redis, prefix: str, run_id: str, now: datetime) -> str:
    """Cancel a run: at once if it has not started, cooperatively if it is running."""
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status in TERMINAL_STATUSES:
        raise OperationError(f"run {run_id} already ended {run.status}")
    if store.cancel_unstarted(run_id, now):
        return "cancelled before it started"
    if not store.request_cancel([run_id], Reason.BY_USER):
        raise OperationError(f"run {run_id} ended while cancelling; look at it again")
    return (
        "cancel requested: the agent sees ctx.cancelled at its next heartbeat; a retry "
        "will not start; a prefork worker terminates it after the agent's cancel_grace"
    )


class WaitTimeoutError(OperationError):
    """`wait` gave up before the run ended (the run goes on)."""

    def __init__(self, run_id: str, status: str, timeout: float) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(
            f"run {run_id} is still {status} after {timeout:g}s (it goes on; "
            f"`nightowl runs wait {run_id}` waits again)"
        )


def wait(
    store: Store,
    run_id: str,
    timeout: float | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Run:
    """Block until the run is terminal and return it (WaitTimeoutError after `timeout`
    seconds; None: no limit). Polls the database, quickly at first (a no-op agent ends in
    milliseconds), then every half second."""
    deadline = None if timeout is None else monotonic() + timeout
    interval = 0.05
    while True:
        run = store.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        if run.status in TERMINAL_STATUSES:
            return run
        if deadline is not None and monotonic() >= deadline:
            raise WaitTimeoutError(run_id, run.status, timeout or 0.0)
        pause = interval if deadline is None else max(0.0, min(interval, deadline - monotonic()))
        sleep(pause)
        interval = min(interval * 2, 0.5)


KEEP_PAYLOAD: Any = object()  # replay's `payload` default: the event as it was


@dataclass(frozen=True, slots=True)
class Replayed:
    run_id: str
    replay_of: str
    published: bool = True


def replay(
    store: Store,
    publisher: Publisher,
    run_id: str,
    now: datetime,
    *,
    payload: Any = KEEP_PAYLOAD,
    registry: Registry | None = None,
    origin: RunOrigin = RunOrigin.REPLAY,
) -> Replayed:
    """A new run of the same agent with the same event (its payload replaced if given),
    `replay_of` the original and a fresh idempotency key, so it can never be mistaken for
    the original's redelivery. Not held back by the overlap policy: a replay is asked for.
    It runs the agent's current version when the registry knows the agent."""
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    event = dict(run.event or {})
    if payload is not KEEP_PAYLOAD:
        if event.get("kind") not in ("manual", "cron"):
            raise OperationError(
                f"run {run_id}'s event is a {event.get('kind')} event, which carries no payload; "
                "replay it without --payload"
            )
        problem = json_problem(payload, "payload")
        if problem is not None:
            raise OperationError(f"the payload cannot be stored: {problem}")
        event["payload"] = payload
        if event["kind"] == "cron":
            event.setdefault("manual", False)
    spec = registry.agents.get(run.agent) if registry is not None else None
    new = NewRun(
        idempotency_key=f"replay:{run_id}:{uuid.uuid4()}",
        trigger=run.trigger,
        agent=run.agent,
        queue=spec.queue if spec is not None else run.queue,
        event=event,
        logical_time=run.logical_time,
        agent_version=spec.version if spec is not None else run.agent_version,
        origin=origin,
        replay_of=run_id,
    )
    (inserted,) = store.commit_tick([new], [], [], now)
    try:
        dispatch(
            store,
            publisher,
            [Dispatch(inserted.id, inserted.agent, inserted.queue, inserted.trigger, 0)],
            now,
        )
    except Exception:
        return Replayed(inserted.id, run_id, published=False)  # the sweeper publishes it
    return Replayed(inserted.id, run_id)
