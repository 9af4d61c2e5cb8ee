"""`nightowl runs list|show`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
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
from scheduler.core.vocabulary import TERMINAL_STATUSES, RunStatus
from scheduler.storage.models import Attempt, Run
from scheduler.storage.store import Store

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
        "progress_at": iso(a.progress_at),
        "traceback": a.traceback,
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
    from scheduler.ops import runs as operations

    report_terminal(operations.wait(store, run_id, timeout), json_)


def _last_heartbeat(run: Run, attempts: list[Attempt]) -> dict[str, Any] | None:
    """{note, details, at}: the agent's latest ctx.heartbeat, and when (its attempt's
    progress time)."""
    at = next((a.progress_at for a in reversed(attempts) if a.progress_at is not None), None)
    beat = run.last_heartbeat or {}
    if not beat and at is None:
        return None
    return {"note": beat.get("note"), "details": beat.get("details") or {}, "at": iso(at)}


def show_data(store: Store, run: Run) -> dict[str, Any]:
    """The `runs show --json` object (DESIGN's shape)."""
    attempts = store.attempts_of(run.id)
    return run_summary(run) | {
        "event": run.event,
        "result": run.result,
        "error": run.error,
        "attempts": [attempt_dict(a) for a in attempts],
        "usage": run.usage,
        "steps": [step_dict(s) for s in store.steps_of(run.id)],
        "last_heartbeat": _last_heartbeat(run, attempts),
        "waiting_for": run.waiting_for,
        "not_before": iso(run.not_before),
        "deliveries": run.deliveries,
        "replay_of": run.replay_of,
    }


def _text(value: Any) -> str:
    """A value as a person reads it: JSON for structures, never a Python repr."""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return "-" if value is None else str(value)


def _age(at: str | None, now: datetime) -> str:
    if at is None:
        return ""
    seconds = (now - datetime.fromisoformat(at)).total_seconds()
    return f" ({seconds:.0f}s ago)" if seconds >= 0 else f" (in {-seconds:.0f}s)"


@app.command("logs")
def logs_of_run(
    run_id: str,
    attempt: Annotated[int | None, typer.Option(min=1, help="Only this attempt's lines.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """The agent's ctx.log lines (INFO and above), per attempt: scrubbed, at most 1,000 lines
    per attempt, written with each heartbeat (so --follow lags a heartbeat), pruned with the
    run."""
    store = store_for(settings_for(triggers))
    if store.get_run(run_id) is None:
        fail(f"no run with id {run_id!r}; list runs with `nightowl runs list`")
    last: tuple[int, int] | None = None
    printed: list[dict[str, Any]] = []
    while True:
        run = store.get_run(run_id)
        ended = run is None or run.status in TERMINAL_STATUSES
        for line in store.logs_of(run_id, attempt=attempt, after=last):
            last = (line.attempt, line.seq)
            item = {
                "attempt": line.attempt,
                "seq": line.seq,
                "at": iso(line.at),
                "level": line.level,
                "message": line.message,
            }
            if json_:
                printed.append(item)
            else:
                echo(f"[attempt {line.attempt} {line.at:%H:%M:%S} {line.level}] {line.message}")
        if not follow or ended:
            break
        time.sleep(0.5)
    if json_:
        print_json(printed)


@app.command("show")
def show_run(run_id: str, json_: JsonOpt = False, triggers: TriggersOpt = None) -> None:
    """One run: its event, result or error, what it waits for and when it goes next, its last
    heartbeat, its steps and usage, and each attempt with its traceback."""
    store = store_for(settings_for(triggers))
    run = store.get_run(run_id)
    if run is None:
        fail(f"no run with id {run_id!r}; list runs with `nightowl runs list`")
    data = show_data(store, run)
    if json_:
        print_json(data)
        return
    now = datetime.now(UTC)
    beat = data["last_heartbeat"]
    lines = [
        ("id", run.id),
        ("trigger -> agent", f"{run.trigger} -> {run.agent} (version {run.agent_version or '-'})"),
        ("status", f"{run.status}/{run.terminal_reason}" if run.terminal_reason else run.status),
        ("origin", f"{run.origin or 'live'}" + (f", replays {run.replay_of}" if run.replay_of else "")),
        ("idempotency_key", run.idempotency_key),
        ("scheduled_for", data["scheduled_for"]),
        ("started_at", data["started_at"]),
        ("finished_at", data["finished_at"]),
        ("attempt", f"{run.attempt} ({run.deliveries} deliveries, {run.deferrals} deferrals)"),
    ]
    if run.status == RunStatus.WAITING:
        lines.append(
            (
                "waiting_for",
                f"{run.waiting_for}, next attempt at {data['not_before']}{_age(data['not_before'], now)}",
            )
        )
    if beat is not None:
        lines.append(
            ("last_heartbeat", f"{beat['note'] or '-'} {_text(beat['details'])}{_age(beat['at'], now)}")
        )
    lines += [("usage", _text(run.usage)), ("event", _text(run.event))]
    lines.append(
        ("result", _text(run.result)) if run.status == RunStatus.SUCCEEDED else ("error", _text(run.error))
    )
    for key, value in lines:
        echo(f"{key:16} {value}")
    typer.echo("steps:" if data["steps"] else "steps: none recorded")
    if data["steps"]:
        print_table(
            data["steps"], ["seq", "name", "attempt", "duration_s", "tokens", "cost_usd", "tool_calls"]
        )
    typer.echo("attempts:")
    print_table(
        data["attempts"],
        ["number", "status", "reason", "error_class", "agent_version", "worker", "started_at", "finished_at"],
    )
    for a in data["attempts"]:
        if a["traceback"]:
            echo(f"\nattempt {a['number']} traceback:")
            echo("  " + a["traceback"].rstrip().replace("\n", "\n  "))
