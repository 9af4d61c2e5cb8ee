"""The `runs`, `triggers` and `agents` command groups, each assembled from the modules that
hold its commands, and each imported only when one of its commands runs
(scheduler/cli/commands.py): `runs list` does not import the agents' test environment."""

from __future__ import annotations

import importlib

import typer

# group module -> the commands other modules add to it: (name, module, function)
_EXTRA: dict[str, tuple[tuple[str, str, str], ...]] = {
    "runs": (
        ("retry", "runs_actions", "retry_runs"),
        ("cancel", "runs_actions", "cancel_runs"),
        ("replay", "runs_actions", "replay_runs"),
    ),
    "agents": (
        ("list", "agents_list", "list_agents"),
        ("pause", "pause_cmd", "pause_agents"),
        ("resume", "pause_cmd", "resume_agents"),
    ),
    "triggers_cmd": (
        ("pause", "pause_cmd", "pause_triggers"),
        ("resume", "pause_cmd", "resume_triggers"),
        ("backfill", "backfill_cmd", "backfill"),
    ),
}


def _assembled(module: str) -> typer.Typer:
    app: typer.Typer = importlib.import_module(f"scheduler.cli.{module}").app
    have = {c.name for c in app.registered_commands}
    for name, where, function in _EXTRA[module]:
        if name not in have:  # once per process (in-process CLI tests run many commands)
            app.command(name)(getattr(importlib.import_module(f"scheduler.cli.{where}"), function))
    return app


def runs_app() -> typer.Typer:
    return _assembled("runs")


def agents_app() -> typer.Typer:
    return _assembled("agents")


def triggers_app() -> typer.Typer:
    return _assembled("triggers_cmd")
