"""`nightowl triggers pause|resume`, `agents pause|resume` and `pause|resume --all`: the
kill switch. What a pause does is scheduler/core/pauses.py's; this names it and prints
{name, paused, reason} per name (`--json`), or a line each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    loaded_registry,
    print_json,
    settings_for,
    store_for,
)
from scheduler.core.pauses import ALL, MissedOnPause, PauseScope, PendingOnPause
from scheduler.core.settings import Settings
from scheduler.ops import pauses as operations
from scheduler.ops.pauses import PauseChange
from triggers import Registry

NamesArg = Annotated[list[str] | None, typer.Argument(help="Names to pause or resume.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every one, including ones deployed later.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why: recorded and shown in listings.", show_default=False)
]
MissedOpt = Annotated[
    MissedOnPause,
    typer.Option(
        "--missed",
        help="A cron trigger's slots while paused: skip (ledger entries skipped/paused) or "
        "run-latest-on-resume (the newest slot runs once, on resume).",
    ),
]
SkipPendingOpt = Annotated[
    bool,
    typer.Option(
        "--skip-pending",
        help="End the agent's held runs skipped/paused instead of letting them wait for "
        "(or start on) resume.",
    ),
]
CancelRunningOpt = Annotated[
    bool, typer.Option("--cancel-running", help="Also cancel the agent's running runs (cooperatively).")
]


def _registry(triggers: str | None) -> tuple[Registry, Settings]:
    settings = settings_for(triggers)
    return loaded_registry(settings), settings


def _names(names: list[str] | None, all_: bool) -> list[str]:
    if all_ and names:
        raise typer.BadParameter("give names or --all, not both", param_hint="--all")
    if not all_ and not names:
        raise typer.BadParameter("name what to pause or resume, or pass --all", param_hint="NAMES")
    return [ALL] if all_ else list(names or [])


def _report(changes: list[PauseChange], json_: bool) -> None:
    if json_:
        print_json([c.as_json() for c in changes])
        return
    for c in changes:
        what = f"every {c.scope.value}" if c.name == ALL else f"{c.scope.value} {c.name}"
        if c.under_all:
            own = "resumed" if c.changed else "was not paused on its own"
            state = f"{own}, and stays paused by `pause --all` (resume it with `resume --all`)"
            extra = f"; {c.runs} held run(s) skipped" if c.runs else ""
        elif c.paused:
            state = "paused" if c.changed else "was already paused"
            extra = f"; {c.runs} running run(s) asked to cancel" if c.runs else ""
        else:
            state = "resumed" if c.changed else "was not paused"
            extra = f"; {c.runs} held run(s) let go" if c.runs else ""
        reason = f" ({c.reason})" if c.reason else ""
        typer.echo(f"{what} {state}{reason}{extra}")


def _pause(
    scope: PauseScope,
    names: list[str],
    triggers: str | None,
    *,
    reason: str | None = None,
    missed: MissedOnPause = MissedOnPause.SKIP,
    pending: PendingOnPause = PendingOnPause.WAIT,
    cancel_running: bool = False,
) -> list[PauseChange]:
    registry, settings = _registry(triggers)
    store = store_for(settings)
    try:
        return operations.pause(
            store,
            registry,
            scope,
            names,
            datetime.now(UTC),
            reason=reason,
            missed=missed,
            pending=pending,
            cancel_running=cancel_running,
        )
    finally:
        store.engine.dispose()


def _resume(
    scope: PauseScope, names: list[str], triggers: str | None, *, skip_pending: bool = False
) -> list[PauseChange]:
    registry, settings = _registry(triggers)
    store = store_for(settings)
    try:
        return operations.resume(store, registry, scope, names, datetime.now(UTC), skip_pending=skip_pending)
    finally:
        store.engine.dispose()


def pause_triggers(
    names: NamesArg = None,
    all_: AllOpt = False,
    reason: ReasonOpt = None,
    missed: MissedOpt = MissedOnPause.SKIP,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Pause triggers, fleet-wide within one tick. A cron trigger's slots become skipped/paused
    ledger entries (or, with --missed run-latest-on-resume, the newest runs on resume); a
    db_change trigger's cursor stops, so rows changed while paused run after resume; a metric
    or queue_depth trigger keeps evaluating and fires nothing."""
    _report(_pause(PauseScope.TRIGGER, _names(names, all_), triggers, reason=reason, missed=missed), json_)


def resume_triggers(
    names: NamesArg = None, all_: AllOpt = False, triggers: TriggersOpt = None, json_: JsonOpt = False
) -> None:
    """Resume triggers (--all: every paused one)."""
    _report(_resume(PauseScope.TRIGGER, _names(names, all_), triggers), json_)


def pause_agents(
    names: NamesArg = None,
    all_: AllOpt = False,
    reason: ReasonOpt = None,
    cancel_running: CancelRunningOpt = False,
    skip_pending: SkipPendingOpt = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Pause agents, fleet-wide within a second: their new and queued runs wait
    (waiting_for=paused, no attempt taken, never stuck) and start on resume; with
    --skip-pending they end skipped/paused instead."""
    pending = PendingOnPause.SKIP if skip_pending else PendingOnPause.WAIT
    changes = _pause(
        PauseScope.AGENT,
        _names(names, all_),
        triggers,
        reason=reason,
        pending=pending,
        cancel_running=cancel_running,
    )
    _report(changes, json_)


def resume_agents(
    names: NamesArg = None,
    all_: AllOpt = False,
    skip_pending: SkipPendingOpt = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Resume agents: the runs their pause held start now (or, with --skip-pending, end
    skipped/paused)."""
    _report(_resume(PauseScope.AGENT, _names(names, all_), triggers, skip_pending=skip_pending), json_)


def pause_all(
    all_: Annotated[
        bool, typer.Option("--all", help="Required: pause every trigger and every agent.")
    ] = False,
    reason: ReasonOpt = None,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The kill switch: pause every trigger and every agent (`resume --all` undoes it)."""
    if not all_:
        raise typer.BadParameter(
            "`nightowl pause` pauses everything and needs --all; pause one with "
            "`nightowl triggers pause NAME` or `nightowl agents pause NAME`",
            param_hint="--all",
        )
    changes = _pause(PauseScope.TRIGGER, [ALL], triggers, reason=reason)
    changes += _pause(PauseScope.AGENT, [ALL], triggers, reason=reason)
    _report(changes, json_)


def resume_all(
    all_: Annotated[
        bool, typer.Option("--all", help="Required: resume every trigger and every agent.")
    ] = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Resume every paused trigger and agent."""
    if not all_:
        raise typer.BadParameter(
            "`nightowl resume` resumes everything and needs --all; resume one with "
            "`nightowl triggers resume NAME` or `nightowl agents resume NAME`",
            param_hint="--all",
        )
    changes = _resume(PauseScope.TRIGGER, [ALL], triggers)
    changes += _resume(PauseScope.AGENT, [ALL], triggers)
    _report(changes, json_)
