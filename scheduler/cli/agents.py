"""`nightowl agents run NAME [--event JSON]`: one attempt of an agent in this process, under
`agents.testing.AgentEnvironment`, and what it captured. No broker, database or worker: the
outbox writes, heartbeats, steps and usage are printed, nothing is delivered or stored."""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agents import AgentSpec, Event
from agents.testing import EVENT_KINDS, AgentEnvironment, Captured, event_for, logical_time_of, manual_fire
from scheduler.cli._common import (
    EXIT_FINDINGS,
    JsonOpt,
    TriggersOpt,
    fail,
    loaded_registry,
    print_json,
    settings_for,
)
from scheduler.core.scrub import scrub_text
from scheduler.outbox import registered_sinks
from triggers import Registry

app = typer.Typer(help="Run and inspect agents.", no_args_is_help=True)

EventOpt = Annotated[
    str | None,
    typer.Option(
        "--event",
        help='JSON: {"kind": KIND, field: value, ...} builds that event (see above); anything else '
        "is a ManualFire payload.",
        show_default=False,
    ),
]
# The kinds whose event names the trigger (the others name their table, queue or metric).
_NAMED_KINDS = {"cron", "cron_tick", "manual", "manual_fire"}


@app.command("run")
def run(name: str, event: EventOpt = None, triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Run agent NAME once, in this process, and print what the test environment captured:
    status, result or error, heartbeats, outbox writes (not delivered), steps, usage, log lines.

    The agent gets a real AgentContext with its own budget, timeout and cancel_grace, and the
    outbox sinks the trigger modules register, as a worker would give it.

    --event JSON:
      {"kind": "cron", ...}    an event of that kind: cron, db_change, queue_depth, metric or
                               manual (or cron_tick, row_change, metric_alert, manual_fire).
                               Fields not given take the test defaults (agents.testing), times
                               default to now; the `event` object of `runs show --json` is
                               accepted as it is.
      any other JSON value     the payload of a ManualFire (wrap a payload that has a "kind"
                               key: {"kind": "manual", "payload": ...}).
      no --event               the default event of the agent's trigger kind (its first trigger
                               by name), a ManualFire when no trigger runs it.

    Exit codes: 0 the attempt succeeded; 1 it did not, the agent is unknown or the trigger
    modules are invalid; 2 usage (bad JSON, an invalid event).
    """
    registry = _registry(triggers)
    spec = registry.agents.get(name)
    if spec is None:
        fail(f"no agent named {name!r}; agents: {', '.join(sorted(registry.agents)) or 'none'}")
    now = datetime.now(UTC)
    trigger = _trigger_of(registry, spec)
    received = _event(event, trigger, now)
    env = AgentEnvironment(
        logical_time=logical_time_of(received) or now,
        trigger=getattr(received, "trigger", None) or (trigger[0] if trigger else "cli"),
        run_id=f"cli-{uuid.uuid4().hex[:12]}",
        sinks=registered_sinks(),  # the trigger modules registered them on import
        timeout=spec.timeout,
    )
    captured = env.run(spec, received)
    if json_:
        print_json(captured.as_dict())
    else:
        _print(captured)
    if not captured.succeeded:
        raise typer.Exit(EXIT_FINDINGS)


def _registry(triggers: str | None) -> Registry:
    settings = settings_for(triggers)
    if not settings.triggers:
        raise typer.BadParameter(
            "no trigger modules: pass --triggers or set NIGHTOWL_TRIGGERS", param_hint="--triggers"
        )
    return loaded_registry(settings)


def _trigger_of(registry: Registry, spec: AgentSpec) -> tuple[str, str] | None:
    """The (name, kind) of the first trigger, by name, that runs this agent."""
    for trigger_name, trigger in sorted(registry.triggers.items()):
        if trigger.agent_name == spec.name:
            return trigger_name, trigger.kind
    return None


def _event(text: str | None, trigger: tuple[str, str] | None, now: datetime) -> Event:
    """The event `--event` describes (see `run`'s help)."""
    trigger_name = trigger[0] if trigger else "cli"
    fired_by = f"{getpass.getuser()}@{socket.gethostname()}"
    if text is None:
        kind = trigger[1] if trigger and trigger[1] in EVENT_KINDS else "manual"
        data: Any = {"kind": kind}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--event") from None
    if not (isinstance(data, dict) and "kind" in data):
        return manual_fire(trigger=trigger_name, payload=data, fired_by=fired_by)
    fields = dict(data)
    kind = str(fields.pop("kind"))
    if kind in _NAMED_KINDS:
        fields.setdefault("trigger", trigger_name)
    if kind in {"manual", "manual_fire"}:
        fields.setdefault("fired_by", fired_by)
    try:
        return event_for(kind, at=now, **fields)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(str(exc), param_hint="--event") from None


def _json(value: Any) -> str:
    return escape(scrub_text(json.dumps(value, default=str)))


def _print(captured: Captured) -> None:
    """The capture as text (rich colours on a terminal, plain when piped)."""
    out = Console(highlight=False, soft_wrap=True)
    data = captured.as_dict()
    colour = "green" if captured.succeeded else "red"
    status = f"[{colour}]{escape(captured.status)}[/]"
    out.print(f"[bold]{escape(captured.agent)}[/]  {status}  {captured.duration_s:.3f}s")
    out.print(f"[dim]event[/]   {_json(data['event'])}")
    if captured.error is None:
        out.print(f"[dim]result[/]  {_json(captured.result)}")
    else:
        error = data["error"]
        out.print(f"[dim]error[/]   [red]{escape(scrub_text(error['type'] + ': ' + error['message']))}[/]")
        out.print(f"[dim]{escape(scrub_text(error['traceback'].rstrip()))}[/]")
    beats = [f"{_json(h['note'])}  {_json(h['details'])}" for h in data["heartbeats"]]
    _section(out, "heartbeats", beats)
    writes = [f"{escape(w['sink'])}  {_json(w['key'])}  {_json(w['value'])}" for w in data["outbox"]]
    _section(out, "outbox", writes)
    steps = [f"{s.seq}  {escape(s.name)}  {s.duration_s or 0:.3f}s  {_json(s.usage)}" for s in captured.steps]
    _section(out, "steps", steps, f"  {captured.replayed} replayed")
    out.print(f"[dim]usage[/]   {_json(data['usage'])}  [dim]run[/] {_json(data['run_usage'])}")
    _section(out, "logs", [escape(scrub_text(line)) for line in captured.logs])


def _section(out: Console, title: str, lines: list[str], note: str = "") -> None:
    out.print(f"[dim]{title}[/] ({len(lines)}){note}")
    for line in lines:
        out.print(f"  {line}")
