"""`nightowl deadletters list`."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli._common import JsonOpt, TriggersOpt, iso, print_json, print_table, settings_for, store_for

app = typer.Typer(help="Messages that could not be processed.", no_args_is_help=True)


@app.command("list")
def list_dead_letters(
    limit: Annotated[int, typer.Option(min=1)] = 50,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Dead letters, newest first: reason, task, id, payload (truncated)."""
    rows = [
        {
            "id": d.id,
            "reason": d.reason,
            "task_name": d.task_name,
            "task_id": d.task_id,
            "payload": d.payload,
            "details": d.details,
            "created_at": iso(d.created_at),
        }
        for d in store_for(settings_for(triggers)).list_dead_letters(limit)
    ]
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "reason", "task_name", "task_id", "created_at"])
