"""The `runs`, `triggers` and `agents` command groups, assembled from the modules that hold
their commands (imported only when one of them runs: scheduler/cli/commands.py)."""

from __future__ import annotations

from scheduler.cli import agents as agents_cmd
from scheduler.cli import agents_list, backfill_cmd, pause_cmd, runs, runs_actions, triggers_cmd

runs.app.command("retry")(runs_actions.retry_runs)
runs.app.command("cancel")(runs_actions.cancel_runs)
runs.app.command("replay")(runs_actions.replay_runs)
runs_app = runs.app

agents_cmd.app.command("list")(agents_list.list_agents)
agents_cmd.app.command("pause")(pause_cmd.pause_agents)
agents_cmd.app.command("resume")(pause_cmd.resume_agents)
agents_app = agents_cmd.app

triggers_cmd.app.command("pause")(pause_cmd.pause_triggers)
triggers_cmd.app.command("resume")(pause_cmd.resume_triggers)
triggers_cmd.app.command("backfill")(backfill_cmd.backfill)
triggers_app = triggers_cmd.app
