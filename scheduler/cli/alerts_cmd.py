"""`nightowl alerts list`: the alert history, newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli._common import JsonOpt, TriggersOpt, iso, print_json, print_table, settings_for, store_for
from scheduler.core.vocabulary import AlertState
from scheduler.storage.alert_store import AlertStore

app = typer.Typer(help="Alerts the watchdog and scheduler raised.", no_args_is_help=True)


@app.command("list")
def list_alerts(
    limit: Annotated[int, typer.Option(min=1)] = 50,
    kind: Annotated[str | None, typer.Option(help="run_stalled, run_dead, run_late, ...")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved")] = None,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Every alert event: kind, state, what it is about, and how each channel took it."""
    if state is not None and state not in tuple(AlertState):
        raise typer.BadParameter("use firing or resolved", param_hint="--state")
    store = AlertStore(store_for(settings_for(triggers)).engine)
    rows = [
        {
            "id": a.id,
            "kind": a.kind,
            "severity": a.severity,
            "state": a.state,
            "dedupe_key": a.dedupe_key,
            "episode": a.episode,
            "run_id": a.run_id,
            "trigger": a.trigger,
            "agent": a.agent,
            "attempt": a.attempt,
            "message": a.message,
            "details": a.details,
            "channels": a.channels,
            "created_at": iso(a.created_at),
            "sent_at": iso(a.sent_at) if a.sent_at else None,
        }
        for a in store.history(limit=limit, kind=kind, state=state)
    ]
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "created_at", "kind", "state", "trigger", "run_id", "message"])
