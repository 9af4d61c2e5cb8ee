"""The `runs`, `triggers` and `agents` command groups, each assembled from the modules that
hold its commands, and each imported only when one of its commands runs
(scheduler/cli/commands.py): `runs list` does not import the agents' test environment."""

from __future__ import annotations

import typer


def runs_app() -> typer.Typer:
    from scheduler.cli import runs, runs_actions

    if "retry" not in {c.name for c in runs.app.registered_commands}:
        runs.app.command("retry")(runs_actions.retry_runs)
        runs.app.command("cancel")(runs_actions.cancel_runs)
        runs.app.command("replay")(runs_actions.replay_runs)
    return runs.app


def agents_app() -> typer.Typer:
    from scheduler.cli import agents as agents_cmd
    from scheduler.cli import agents_list, pause_cmd

    if "list" not in {c.name for c in agents_cmd.app.registered_commands}:
        agents_cmd.app.command("list")(agents_list.list_agents)
        agents_cmd.app.command("pause")(pause_cmd.pause_agents)
        agents_cmd.app.command("resume")(pause_cmd.resume_agents)
    return agents_cmd.app


def triggers_app() -> typer.Typer:
    from scheduler.cli import backfill_cmd, pause_cmd, triggers_cmd

    if "pause" not in {c.name for c in triggers_cmd.app.registered_commands}:
        triggers_cmd.app.command("pause")(pause_cmd.pause_triggers)
        triggers_cmd.app.command("resume")(pause_cmd.resume_triggers)
        triggers_cmd.app.command("backfill")(backfill_cmd.backfill)
    return triggers_cmd.app
