"""Which module holds each `nightowl` command, so `nightowl X` imports only what X needs.

The CLI's top level lists commands from this table (name, module, what, help) without
importing them: `nightowl --help`, `runs list` or `status` start without loading Celery,
Alembic, the services or the user's trigger modules unless the command itself needs them.
tests/unit/test_cli_imports.py checks which modules a read-only command imports.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperGroup


@dataclass(frozen=True, slots=True)
class Entry:
    module: str
    attribute: str
    help: str
    group: bool = False  # a typer app of subcommands (`runs`), not one command


COMMANDS: dict[str, Entry] = {
    "dev": Entry("scheduler.cli.services", "dev", "Everything in one process tree on the embedded default."),
    "scheduler": Entry("scheduler.cli.services", "scheduler", "Evaluate triggers and dispatch runs."),
    "worker": Entry("scheduler.cli.services", "worker", "A Celery worker for scheduler.celery_app."),
    "watchdog": Entry("scheduler.cli.services", "watchdog", "Stalls, late runs, failing sources; alerts."),
    "relay": Entry("scheduler.cli.services", "relay", "Deliver outbox rows to their sinks."),
    "flower": Entry("scheduler.cli.flower_cmd", "flower", "Flower, with authentication off loopback."),
    "status": Entry("scheduler.cli.status_cmd", "status", "Leaders, workers, queues, running runs, alerts."),
    "doctor": Entry("scheduler.cli.doctor_cmd", "doctor", "Check Celery, timeouts, pools, database, Redis."),
    "fire": Entry("scheduler.cli.fire", "fire", "Run a trigger's agent now."),
    "pause": Entry("scheduler.cli.pause_cmd", "pause_all", "Pause every trigger and agent (--all)."),
    "resume": Entry("scheduler.cli.pause_cmd", "resume_all", "Resume every trigger and agent (--all)."),
    "runs": Entry(
        "scheduler.cli.groups", "runs_app", "Inspect, wait for, retry, cancel and replay runs.", True
    ),
    "triggers": Entry(
        "scheduler.cli.groups", "triggers_app", "Inspect, check, pause and backfill triggers.", True
    ),
    "agents": Entry("scheduler.cli.groups", "agents_app", "List, run, pause and resume agents.", True),
    "alerts": Entry("scheduler.cli.alerts_cmd", "app", "Alerts: list and acknowledge.", True),
    "outbox": Entry("scheduler.cli.outbox_cmd", "app", "Outbox status and retries.", True),
    "deadletters": Entry(
        "scheduler.cli.deadletters_cmd", "app", "Messages that could not be processed.", True
    ),
    "db": Entry("scheduler.cli.services", "db_app", "Database migrations.", True),
}


# Typer vendors its own click (typer._click): its types are used through typer's objects only.
def _command(name: str, entry: Entry) -> Any:
    target: Any = getattr(importlib.import_module(entry.module), entry.attribute)
    if entry.group and not isinstance(target, typer.Typer):
        target = target()  # scheduler/cli/groups.py assembles the group when asked
    if entry.group:
        group = typer.main.get_group(target)
        group.name = name
        return group
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(target)
    return typer.main.get_command(single)


class LazyGroup(TyperGroup):
    """A top-level group whose commands are imported when invoked, and listed from COMMANDS."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = COMMANDS.get(cmd_name)
        return None if entry is None else _command(cmd_name, entry)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, COMMANDS[name].help) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
