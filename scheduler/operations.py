"""Operator actions shared by the CLI and tests: fire, retry, cancel.

Each commits first and publishes right after, like the scheduler does, so a
crash between the two leaves a `pending` run the sweeper picks up.
"""

from __future__ import annotations

import getpass
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from agents import ManualFire, event_to_json
from scheduler.cancel import request_cancel
from scheduler.errors import RunNotFoundError, SchedulerError
from scheduler.publish import Publisher
from scheduler.service import overlap_for
from scheduler.storage.models import TERMINAL_STATUSES
from scheduler.storage.store import Dispatch, NewRun, Store
from triggers import Registry

RETRYABLE = ("dead", "failed", "timed_out")


class OperationError(SchedulerError):
    """An operator action could not be carried out; the message says why."""


@dataclass(frozen=True, slots=True)
class Fired:
    run_id: str
    idempotency_key: str
    status: str
    created: bool


def fire(store: Store, publisher: Publisher, registry: Registry, trigger: str, now: datetime,
         *, payload: Any = None, key: str | None = None, force: bool = False) -> Fired:
    """A manual run of `trigger`'s agent (`ManualFire` event), under its overlap policy
    unless `force`."""
    spec = registry.triggers.get(trigger)
    if spec is None:
        known = ", ".join(sorted(registry.triggers)) or "none"
        raise OperationError(f"no trigger named {trigger!r} (known: {known})")
    agent = registry.agent_for(spec)
    overlap, overlap_key = (None, None) if force else overlap_for(spec.overlap, trigger, None)
    idem = f"manual:{trigger}:{key or uuid.uuid4()}"
    event = ManualFire(trigger=trigger, payload=payload,
                       fired_by=f"{getpass.getuser()}@{socket.gethostname()}")
    run = NewRun(idempotency_key=idem, trigger=trigger, agent=agent.name, queue=agent.queue,
                 event=event_to_json(event), logical_time=now, agent_version=agent.version,
                 overlap=overlap, overlap_key=overlap_key)
    inserted = store.commit_tick([run], [], [], now)
    if not inserted:
        existing = next(r for r in store.list_runs(trigger=trigger, limit=1000)
                        if r.idempotency_key == idem)
        return Fired(existing.id, idem, existing.status, created=False)
    (new,) = inserted
    if new.status == "pending":
        publisher.publish([Dispatch(new.id, new.agent, new.queue, trigger, 0)])
        store.mark_queued([new.id], now)
        return Fired(new.id, idem, "queued", created=True)
    return Fired(new.id, idem, new.status, created=True)


def retry(store: Store, publisher: Publisher, run_id: str, now: datetime) -> Dispatch:
    """Give a dead, failed or timed-out run one more attempt."""
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status not in RETRYABLE:
        raise OperationError(f"run {run_id} is {run.status}; only {', '.join(RETRYABLE)} runs "
                             "can be retried")
    dispatch = store.revive(run_id, RETRYABLE)
    if dispatch is None:
        raise OperationError(f"run {run_id} changed while retrying; look at it again")
    publisher.publish([dispatch])
    store.mark_queued([run_id], now)
    return dispatch


def cancel(store: Store, client: redis.Redis, prefix: str, run_id: str, now: datetime) -> str:
    """Cancel a run: at once if it has not started, cooperatively if it is running."""
    run = store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status in TERMINAL_STATUSES:
        raise OperationError(f"run {run_id} already ended {run.status}")
    if store.cancel_unstarted(run_id, now):
        return "cancelled before it started"
    request_cancel(client, prefix, run_id, "by_user")
    return ("cancel requested: the agent sees ctx.cancelled; a prefork worker terminates it "
            "after the agent's cancel_grace")
