"""`nightowl runs list|show`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    echo,
    fail,
    iso,
    print_json,
    print_table,
    publisher_for,
    redis_for,
    settings_for,
    store_for,
)
from scheduler.core.vocabulary import RunStatus
from scheduler.ops import runs as operations
from scheduler.storage.models import Attempt, Run

app = typer.Typer(help="Inspect runs.", no_args_is_help=True)

STATUSES = tuple(RunStatus)


def run_summary(run: Run) -> dict[str, Any]:
    """The `runs list --json` object, exactly as DESIGN.md specifies it."""
    return {
        "id": run.id,
        "trigger": run.trigger,
        "agent": run.agent,
        "status": run.status,
        "terminal_reason": run.terminal_reason,
        "idempotency_key": run.idempotency_key,
        "attempt": run.attempt,
        "scheduled_for": iso(run.logical_time),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "agent_version": run.agent_version,
    }


def attempt_dict(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "fence": a.fence,
        "status": a.status,
        "reason": a.reason,
        "error_class": a.error_class,
        "error": a.error_message,
        "worker": a.worker,
        "celery_task_id": a.celery_task_id,
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
        "heartbeat_at": iso(a.heartbeat_at),
    }


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help=f"One of: {', '.join(STATUSES)}")] = None,
    trigger: Annotated[str | None, typer.Option(help="Only runs of this trigger.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Runs, newest first."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"{status!r}; use one of {', '.join(STATUSES)}", param_hint="--status")
    store = store_for(settings_for(triggers))
    rows = [run_summary(r) for r in store.list_runs(status=status, trigger=trigger, limit=limit)]
    if json_:
        print_json(rows)
    else:
        print_table(
            rows,
            [
                "id",
                "trigger",
                "agent",
                "status",
                "terminal_reason",
                "attempt",
                "scheduled_for",
                "finished_at",
            ],
        )


@app.command("retry")
def retry_run(run_id: str, triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Give a dead, failed or timed-out run one more attempt."""
    settings = settings_for(triggers)
    store = store_for(settings)
    publisher = publisher_for(settings)
    try:
        d = operations.retry(store, publisher, run_id, datetime.now(UTC))
    finally:
        publisher.close()
    if json_:
        print_json({"run_id": d.run_id, "attempt": d.attempt + 1})
    else:
        typer.echo(f"run {d.run_id} queued for attempt {d.attempt + 1}")


@app.command("cancel")
def cancel_run(run_id: str, triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Cancel a run: at once if not started, cooperatively (then terminated) if running."""
    settings = settings_for(triggers)
    client = redis_for(settings)
    try:
        what = operations.cancel(
            store_for(settings), client, settings.redis_prefix, run_id, datetime.now(UTC)
        )
    finally:
        client.close()
    if json_:
        print_json({"run_id": run_id, "result": what})
    else:
        typer.echo(f"run {run_id}: {what}")


@app.command("show")
def show_run(run_id: str, json_: JsonOpt = False, triggers: TriggersOpt = None) -> None:
    """One run with its event, result, error, attempts and usage."""
    store = store_for(settings_for(triggers))
    run = store.get_run(run_id)
    if run is None:
        fail(f"no run with id {run_id!r}; list runs with `nightowl runs list`")
    data = run_summary(run) | {
        "event": run.event,
        "result": run.result,
        "error": run.error,
        "attempts": [attempt_dict(a) for a in store.attempts_of(run_id)],
        "usage": run.usage,
    }
    if json_:
        print_json(data)
        return
    for key, value in data.items():
        if key != "attempts":
            echo(f"{key:16} {value}")
    typer.echo("attempts:")
    print_table(
        data["attempts"], ["number", "fence", "status", "reason", "worker", "started_at", "finished_at"]
    )
