"""`nightowl triggers list|show|next|validate`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
import typer

from scheduler.cli._common import (
    EXIT_FINDINGS,
    JsonOpt,
    TriggersOpt,
    fail,
    iso,
    loaded_registry,
    print_json,
    print_table,
    registry_for,
    settings_for,
    store_for,
)
from scheduler.core.pauses import NO_PAUSES, PauseRecord
from scheduler.ops.doctor import visibility_problems
from scheduler.storage.models import TriggerState
from scheduler.storage.store import missed_t
from triggers import CronTrigger, Registry, RegistryLoadError, TriggerSpec, TriggerStatus

app = typer.Typer(help="Inspect and check trigger definitions.", no_args_is_help=True)


def _state_label(row: TriggerState | None) -> str:
    if row is None:
        return "new"
    return TriggerStatus.alert_of(row.state).value  # `source_failing` has its own column


def trigger_summary(
    spec: TriggerSpec, row: TriggerState | None, pause: PauseRecord | None = None
) -> dict[str, Any]:
    """The `triggers list --json` object (URLs are masked by each kind's `describe`)."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "agent": spec.agent_name,
        "state": _state_label(row),
        "next_evaluation": iso(row.next_evaluation) if row else None,
        "source_failing": bool(row.source_failing) if row else False,
        "paused": pause is not None,
    }


def _load(triggers: str | None) -> tuple[Registry, Any]:
    settings = settings_for(triggers)
    return loaded_registry(settings), settings


@app.command("validate")
def validate(triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Import the trigger modules and check every definition (no database needed)."""
    settings = settings_for(triggers)
    if not settings.triggers:
        raise typer.BadParameter(
            "no trigger modules: pass --triggers or set NIGHTOWL_TRIGGERS", param_hint="--triggers"
        )
    try:
        registry = registry_for(settings)
        problems = visibility_problems(registry, settings.visibility_timeout)
    except RegistryLoadError as exc:
        problems = exc.problems
    if problems:
        if json_:
            print_json({"ok": False, "problems": problems})
        else:
            for problem in problems:
                typer.echo(problem, err=True)
            typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(EXIT_FINDINGS)
    empty = [
        m
        for m in registry.modules
        if not any(t.location.module == m for t in registry.triggers.values())
        and not any(a.location.module == m for a in registry.agents.values())
    ]
    for m in empty:
        typer.echo(
            f"warning: module {m!r} defines no trigger and no agent (is it the module you meant?)", err=True
        )
    if json_:
        print_json(
            {
                "ok": True,
                "agents": sorted(registry.agents),
                "triggers": sorted(registry.triggers),
                "warnings": [f"module {m!r} defines no trigger and no agent" for m in empty],
            }
        )
    else:
        typer.echo(
            f"ok: {len(registry.triggers)} trigger(s), {len(registry.agents)} agent(s) "
            f"in {', '.join(registry.modules)}"
        )


@app.command("list")
def list_triggers(
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Include orphaned state of removed or renamed triggers.")
    ] = False,
) -> None:
    """Every trigger with its kind, agent, state and next evaluation."""
    registry, settings = _load(triggers)
    rows_by_name: dict[str, TriggerState] = {}
    pauses = NO_PAUSES
    if settings.database_url is not None:
        store = store_for(settings)
        rows_by_name, pauses = store.trigger_rows(), store.pauses()
    rows = [
        trigger_summary(spec, rows_by_name.get(name), pauses.trigger(name))
        for name, spec in sorted(registry.triggers.items())
    ]
    if all_:
        for name, row in sorted(rows_by_name.items()):
            if name not in registry.triggers:
                rows.append(
                    {
                        "name": name,
                        "kind": row.kind,
                        "agent": None,
                        "state": "orphaned",
                        "next_evaluation": None,
                        "source_failing": row.source_failing,
                        "paused": pauses.trigger(name) is not None,
                    }
                )
    if json_:
        print_json(rows)
    else:
        shown = [r | {"paused": _paused_cell(pauses.trigger(r["name"]))} for r in rows]
        print_table(shown, ["name", "kind", "agent", "state", "next_evaluation", "source_failing", "paused"])


def _paused_cell(pause: PauseRecord | None) -> str:
    if pause is None:
        return "no"
    return f"yes: {pause.reason}" if pause.reason else "yes"


def _cron(registry: Registry, name: str) -> tuple[TriggerSpec, CronTrigger]:
    spec = registry.triggers.get(name)
    if spec is None:
        fail(f"no trigger named {name!r}; known: {', '.join(sorted(registry.triggers)) or 'none'}")
    if not isinstance(spec.source, CronTrigger):
        fail(f"trigger {name!r} is a {spec.kind} trigger; `next` previews cron triggers only")
    return spec, spec.source


@app.command("next")
def next_fires(
    name: str,
    count: Annotated[int, typer.Option(min=1, max=10_000)] = 5,
    after: Annotated[str | None, typer.Option(help="ISO 8601 instant (default: now).")] = None,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Preview the next fire times of a cron trigger, in its zone, jitter not applied."""
    registry, _ = _load(triggers)
    _, cron = _cron(registry, name)
    start = datetime.now(UTC)
    if after:
        try:
            start = datetime.fromisoformat(after)
        except ValueError:
            raise typer.BadParameter(f"{after!r} is not ISO 8601", param_hint="--after") from None
        if start.tzinfo is None:
            raise typer.BadParameter("give an offset, e.g. 2026-10-25T00:00:00+02:00", param_hint="--after")
    times = [t.astimezone(cron.expr.zone).isoformat() for t in cron.next_slots(start, count)]
    if json_:
        print_json(times)
    else:
        for t in times:
            typer.echo(t)


@app.command("show")
def show(name: str, triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """One trigger: its definition, persisted state and missed-slot ledger."""
    registry, settings = _load(triggers)
    spec = registry.triggers.get(name)
    if spec is None:
        fail(f"no trigger named {name!r}")
    row = None
    pause: PauseRecord | None = None
    missed: list[dict[str, Any]] = []
    if settings.database_url is not None:
        store = store_for(settings)
        row = store.trigger_rows().get(name)
        pause = store.pauses().trigger(name)
        with store.engine.connect() as conn:
            for m in conn.execute(
                sa.select(missed_t).where(missed_t.c.trigger == name).order_by(missed_t.c.first_slot)
            ):
                missed.append(
                    {
                        "first": iso(m.first_slot),
                        "last": iso(m.last_slot),
                        "count": m.count,
                        "reason": m.reason,
                    }
                )
    data = trigger_summary(spec, row, pause) | {
        "pause_reason": pause.reason if pause else None,
        "paused_since": iso(pause.paused_at) if pause else None,
        "paused_by": pause.paused_by if pause else None,
        "defined_at": str(spec.location),
        "overlap": spec.overlap,
        "settings": spec.source.describe(),
        "stored_state": row.state if row else None,
        "missed": missed,
    }
    if json_:
        print_json(data)
    else:
        for key, value in data.items():
            typer.echo(f"{key:16} {value}")
