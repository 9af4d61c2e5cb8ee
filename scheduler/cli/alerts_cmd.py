"""`nightowl alerts list [--open]` (the alert history, newest first) and `alerts ack ID`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    fail,
    iso,
    print_json,
    print_table,
    settings_for,
    store_for,
)
from scheduler.core.vocabulary import AlertState
from scheduler.ops.pauses import who
from scheduler.storage.alert_store import AlertStore

app = typer.Typer(help="Alerts the watchdog and scheduler raised.", no_args_is_help=True)


@app.command("list")
def list_alerts(
    limit: Annotated[int, typer.Option(min=1)] = 50,
    kind: Annotated[str | None, typer.Option(help="run_stalled, run_dead, run_late, ...")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved")] = None,
    open_: Annotated[
        bool,
        typer.Option("--open", help="Only episodes still open (firing, not resolved), acknowledged or not."),
    ] = False,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Every alert event: kind, state, what it is about, and how each channel took it."""
    if state is not None and state not in tuple(AlertState):
        raise typer.BadParameter("use firing or resolved", param_hint="--state")
    if open_ and state is not None:
        raise typer.BadParameter("--open lists firing episodes; drop --state", param_hint="--state")
    store = AlertStore(store_for(settings_for(triggers)).engine)
    found = store.open_alerts(limit, kind) if open_ else store.history(limit=limit, kind=kind, state=state)
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
            "acked_at": iso(a.acked_at),
            "acked_by": a.acked_by,
            "ack_reason": a.ack_reason,
        }
        for a in found
    ]
    if json_:
        print_json(rows)
    else:
        shown = [r | {"state": f"{r['state']} (acked)" if r["acked_at"] else r["state"]} for r in rows]
        print_table(shown, ["id", "created_at", "kind", "state", "trigger", "run_id", "message"])


@app.command("ack")
def ack_alert(
    alert_id: int,
    reason: Annotated[str | None, typer.Option(help="Why, or who is on it: recorded and shown.")] = None,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Acknowledge an alert's episode: it stays open until its cause ends (then resolves as
    usual) and sends no more reminders."""
    store = AlertStore(store_for(settings_for(triggers)).engine)
    try:
        row = store.ack(alert_id, who(), reason, datetime.now(UTC))
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    data = {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "run_id": row.run_id,
        "trigger": row.trigger,
        "agent": row.agent,
        "message": row.message,
        "acked_at": iso(row.acked_at),
        "acked_by": row.acked_by,
        "ack_reason": row.ack_reason,
    }
    if json_:
        print_json(data)
    else:
        typer.echo(
            f"alert {row.id} ({row.kind}) acknowledged by {row.acked_by}"
            + (f": {row.ack_reason}" if row.ack_reason else "")
            + "; it resolves when its cause ends"
        )
