"""`nightowl fire TRIGGER [--payload JSON] [--key K] [--force]`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from scheduler import operations
from scheduler.cli._common import (
    EXIT_FINDINGS,
    JsonOpt,
    TriggersOpt,
    print_json,
    publisher_for,
    registry_for,
    settings_for,
    store_for,
)


def fire(
    trigger: str,
    payload: Annotated[str | None, typer.Option(help="JSON handed to the agent as "
                                                "ManualFire.payload")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency: firing twice with the same key "
                                            "makes one run")] = None,
    force: Annotated[bool, typer.Option(help="Ignore the trigger's overlap policy")] = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run a trigger's agent now; prints the run id. Obeys the overlap policy unless --force."""
    data: Any = None
    if payload is not None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    settings = settings_for(triggers)
    registry = registry_for(settings)
    publisher = publisher_for(settings, registry)
    try:
        fired = operations.fire(store_for(settings), publisher, registry, trigger,
                                datetime.now(UTC), payload=data, key=key, force=force)
    finally:
        publisher.close()
    out = {"run_id": fired.run_id, "idempotency_key": fired.idempotency_key}
    if json_:
        print_json(out)
    else:
        typer.echo(fired.run_id)
    if not fired.created:
        typer.echo(f"note: {fired.idempotency_key} was fired before; that run is {fired.status}",
                   err=True)
    elif fired.status == "skipped":
        typer.echo(f"skipped: trigger {trigger!r} has a run in progress and its overlap policy "
                   "says skip; use --force to run anyway", err=True)
        raise typer.Exit(EXIT_FINDINGS)
