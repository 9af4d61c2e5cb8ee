"""`nightowl runs list|show`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agents import StepRecord, Usage
from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    echo,
    fail,
    iso,
    print_json,
    print_table,
    report_terminal,
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


def usage_by_agent(runs: list[Run]) -> list[dict[str, Any]]:
    """What the listed runs spent, summed per agent (the footer of `runs list`)."""
    totals: dict[str, tuple[int, Usage]] = {}
    for run in runs:
        count, usage = totals.get(run.agent, (0, Usage()))
        totals[run.agent] = (count + 1, usage.plus(Usage.from_dict(run.usage)))
    return [
        {
            "agent": agent,
            "runs": count,
            "tokens": usage.tokens,
            "cost_usd": round(usage.cost_usd, 6),
            "tool_calls": usage.tool_calls,
        }
        for agent, (count, usage) in sorted(totals.items())
    ]


def step_dict(step: StepRecord) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "name": step.name,
        "attempt": step.attempt,
        "duration_s": None if step.duration_s is None else round(step.duration_s, 3),
        "tokens": step.usage.get("tokens", 0),
        "cost_usd": step.usage.get("cost_usd", 0.0),
        "tool_calls": step.usage.get("tool_calls", 0),
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "result": step.result,
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
        "agent_version": a.agent_version,
        "usage": a.usage,
    }


@app.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help=f"One of: {', '.join(STATUSES)}")] = None,
    trigger: Annotated[str | None, typer.Option(help="Only runs of this trigger.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only runs of this agent.")] = None,
    version: Annotated[
        str | None, typer.Option(help="Only runs that started with this agent version.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Runs, newest first, then what they spent per agent."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"{status!r}; use one of {', '.join(STATUSES)}", param_hint="--status")
    store = store_for(settings_for(triggers))
    found = store.list_runs(status=status, trigger=trigger, agent=agent, version=version, limit=limit)
    rows = [run_summary(r) for r in found]
    if json_:
        print_json(rows)
        return
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
            "agent_version",
        ],
    )
    if rows:
        typer.echo("usage by agent (the runs above):")
        print_table(usage_by_agent(found), ["agent", "runs", "tokens", "cost_usd", "tool_calls"])


@app.command("wait")
def wait_run(
    run_id: str,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds (exit 1).")
    ] = None,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Block until a run ends and print it; exit 0 only if it succeeded, 1 when it ended
    otherwise or --timeout passed first."""
    store = store_for(settings_for(triggers))
    report_terminal(operations.wait(store, run_id, timeout), json_)


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
        "steps": [step_dict(s) for s in store.steps_of(run_id)],
        "waiting_for": run.waiting_for,
        "not_before": iso(run.not_before),
        "deliveries": run.deliveries,
    }
    if json_:
        print_json(data)
        return
    for key, value in data.items():
        if key not in {"attempts", "steps"}:
            echo(f"{key:16} {value}")
    typer.echo("attempts:")
    print_table(
        data["attempts"],
        ["number", "fence", "status", "reason", "agent_version", "worker", "started_at", "finished_at"],
    )
    typer.echo("steps:" if data["steps"] else "steps: none recorded")
    if data["steps"]:
        print_table(
            data["steps"], ["seq", "name", "attempt", "duration_s", "tokens", "cost_usd", "tool_calls"]
        )
