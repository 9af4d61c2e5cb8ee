"""`nightowl fire TRIGGER [--payload JSON] [--key K] [--force]`: stdout holds the id of a run
that will happen, and nothing else; the exit code says whether one will (see `--help`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    fail,
    parse_instant,
    print_json,
    publisher_for,
    registry_for,
    report_terminal,
    settings_for,
    store_for,
)
from scheduler.core.settings import Settings
from scheduler.core.vocabulary import ACTIVE_STATUSES, RunStatus
from scheduler.ops import runs as operations
from scheduler.storage.store import Store
from triggers import Registry


def fire(
    trigger: str,
    payload: Annotated[
        str | None,
        typer.Option(help="JSON handed to the agent as event.payload (ManualFire, or a manual CronTick)"),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Idempotency: firing twice with the same key makes one run")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Ignore the trigger's overlap policy, and fire even while it is paused")
    ] = False,
    slot: Annotated[
        str | None,
        typer.Option(help="Cron triggers: the slot the CronTick stands for (ISO 8601; default now)"),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Block until the run ends; print its result; exit 0 only if it succeeded"
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="With --wait: give up after this many seconds (exit 1)")
    ] = None,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run a trigger's agent now; prints the run id. Obeys the overlap policy unless --force.

    Standard output holds only the id of a run that will happen (with --json:
    {run_id, idempotency_key}); notes go to standard error.

    With --wait it blocks until the run ends and prints it ({run_id, idempotency_key,
    status, terminal_reason, result, error} with --json); the exit code is then 0 only
    for `succeeded`, and 1 when it ended otherwise or --timeout passed first.

    Exit codes:
    0  a run is recorded and will run: a new one, or the active run that an
       earlier fire with the same --key made. A broker that cannot be reached
       is a note: the run stays recorded and the scheduler publishes it once
       the broker answers.
    1  nothing will run: the trigger is paused, the overlap policy skipped it, or
       --key names a run that already ended (standard output is empty); or the
       database failed.
    2  usage.
    """
    at = parse_instant(slot, "--slot")
    data: Any = None
    if payload is not None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    settings = settings_for(triggers)
    registry = registry_for(settings)
    publisher = publisher_for(settings, registry)
    store = store_for(settings)
    try:
        fired = operations.fire(
            store,
            publisher,
            registry,
            trigger,
            datetime.now(UTC),
            payload=data,
            key=key,
            force=force,
            slot=at,
        )
    finally:
        publisher.close()
    if fired.status not in ACTIVE_STATUSES:
        if fired.created:  # only the overlap policy ends a new manual run at once
            fail(
                f"skipped: trigger {trigger!r} has a run in progress and its overlap policy "
                "says skip, so nothing will run; use --force to run anyway"
            )
        fail(
            f"nothing to run: key {key!r} was fired before as run {fired.run_id}, which "
            f"already ended {fired.status}; fire with another --key to run again"
        )
    if not wait:
        if json_:
            print_json({"run_id": fired.run_id, "idempotency_key": fired.idempotency_key})
        else:
            typer.echo(fired.run_id)
    else:
        typer.echo(f"run {fired.run_id}: waiting for it to end", err=True)
    _notes(fired, trigger, key, registry, store, settings)
    if wait:
        report_terminal(operations.wait(store, fired.run_id, timeout), json_)


def _notes(
    fired: operations.Fired,
    trigger: str,
    key: str | None,
    registry: Registry,
    store: Store,
    settings: Settings,
) -> None:
    """What the operator should know about the run they fired (standard error)."""
    if not fired.created:
        typer.echo(f"note: key {key!r} was fired before; that run is {fired.status} (no new run)", err=True)
    elif fired.status == RunStatus.WAITING:
        typer.echo(
            f"note: trigger {trigger!r} has a run in progress; this one waits for it (overlap policy)",
            err=True,
        )
    spec = registry.triggers[trigger]
    agent_pause = store.pauses().agent(registry.agent_for(spec).name)
    if agent_pause is not None and fired.created:
        typer.echo(
            f"note: agent {registry.agent_for(spec).name!r} is paused ({agent_pause.describe()}); "
            "the run waits until it is resumed",
            err=True,
        )
    if not fired.published:
        setting = "NIGHTOWL_BROKER_URL" if settings.broker_url else "NIGHTOWL_REDIS_URL"
        typer.echo(
            f"note: the broker could not be reached ({fired.publish_error or 'no answer'}; "
            f"check {setting}); run {fired.run_id} "
            "is recorded and the scheduler publishes it once the broker answers",
            err=True,
        )
