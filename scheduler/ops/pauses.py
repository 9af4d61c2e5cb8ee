"""Pause and resume, for the CLI and the Python client: names checked against the
registry, who did it recorded, an agent's running runs cancelled on request.

The effect is the fleet's (scheduler/core/pauses.py): this only writes the row (and, on an
agent's resume, lets its held runs go in the same transaction).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from scheduler.core.pauses import ALL, MissedOnPause, PauseRecord, Pauses, PauseScope, PendingOnPause
from scheduler.core.vocabulary import Reason, RunStatus
from scheduler.ops.runs import OperationError
from scheduler.storage.store import Store
from triggers import Registry


@dataclass(frozen=True, slots=True)
class PauseChange:
    """One name after a pause or a resume (the `--json` shape: name, paused, reason)."""

    scope: PauseScope
    name: str
    paused: bool
    reason: str | None = None
    changed: bool = True  # False: it was already in that state
    runs: int = 0  # runs cancelled (pause --cancel-running) or released/skipped (resume)
    under_all: bool = False  # resumed on its own but still paused by `*` (pause --all)

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "paused": self.paused, "reason": self.reason}


def who() -> str:
    """`user@host`, recorded with a pause (and a manual fire)."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _known(registry: Registry, scope: PauseScope) -> set[str]:
    return set(registry.triggers) if scope is PauseScope.TRIGGER else set(registry.agents)


def _check(registry: Registry, scope: PauseScope, names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(names))
    if not wanted:
        raise OperationError(f"name a {scope.value} to pause or resume, or pass --all")
    known = _known(registry, scope)
    unknown = [n for n in wanted if n != ALL and n not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise OperationError(f"no {scope.value} named {', '.join(map(repr, unknown))} (known: {listed})")
    return wanted


def pause(
    store: Store,
    registry: Registry,
    scope: PauseScope,
    names: Iterable[str],
    now: datetime,
    *,
    reason: str | None = None,
    missed: MissedOnPause = MissedOnPause.SKIP,
    pending: PendingOnPause = PendingOnPause.WAIT,
    cancel_running: bool = False,
) -> list[PauseChange]:
    """Pause triggers or agents (`ALL`: every one, including ones deployed later)."""
    wanted = _check(registry, scope, names)
    before = store.pauses()
    changes = []
    for name in wanted:
        was = before.records.get((scope, name))
        record = store.pause(
            PauseRecord(scope, name, now, reason=reason, paused_by=who(), missed=missed, pending=pending)
        )
        cancelled = 0
        if cancel_running and scope is PauseScope.AGENT:
            running = store.active_runs_of(None if name == ALL else [name], (RunStatus.RUNNING,))
            cancelled = len(store.request_cancel(running, Reason.BY_USER))
        changes.append(PauseChange(scope, name, True, record.reason, changed=was is None, runs=cancelled))
    return changes


def resume(
    store: Store,
    registry: Registry,
    scope: PauseScope,
    names: Iterable[str],
    now: datetime,
    *,
    skip_pending: bool = False,
) -> list[PauseChange]:
    """Resume triggers or agents; an agent's held runs start (or end `skipped/paused`).

    `ALL` resumes the `*` pause and every name paused on its own (a name no longer
    deployed included: its pause would otherwise outlive it unseen)."""
    wanted = _check(registry, scope, names)
    if ALL in wanted:
        paused = {n for (s, n) in store.pauses().records if s is scope}
        wanted = [ALL, *sorted(paused - {ALL}), *(n for n in wanted if n != ALL and n not in paused)]
    changes = []
    for name in wanted:
        record, moved = store.resume(scope, name, now, skip_pending=skip_pending)
        changes.append(
            PauseChange(
                scope, name, False, record.reason if record else None, changed=record is not None, runs=moved
            )
        )
    everything = store.pauses().records.get((scope, ALL))
    if everything is not None:  # a name resumed under `pause --all` is still paused by it
        changes = [
            replace(c, paused=True, reason=everything.reason, under_all=True) if c.name != ALL else c
            for c in changes
        ]
    return changes


def paused_names(pauses: Pauses, scope: PauseScope, names: Iterable[str]) -> dict[str, PauseRecord]:
    """Which of `names` are paused now (by their own pause or by `*`)."""
    find = pauses.trigger if scope is PauseScope.TRIGGER else pauses.agent
    found = {n: find(n) for n in names}
    return {n: r for n, r in found.items() if r is not None}
