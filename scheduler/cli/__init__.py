"""The `nightowl` command line. Exit codes: 0 ok, 1 findings/refusals/failures, 2 usage/internal."""

from __future__ import annotations

import sys
import traceback

import typer

from agents import NightowlError
from scheduler.cli import agents as agents_cmd
from scheduler.cli import (
    agents_list,
    alerts_cmd,
    backfill_cmd,
    deadletters_cmd,
    doctor_cmd,
    fire,
    flower_cmd,
    outbox_cmd,
    pause_cmd,
    runs,
    runs_actions,
    services,
    status_cmd,
    triggers_cmd,
)
from scheduler.cli._common import EXIT_FINDINGS, EXIT_USAGE
from scheduler.core.scrub import scrub_text
from scheduler.core.service_errors import service_error

app = typer.Typer(
    name="nightowl",
    help="Run AI agents in the background: triggers, Celery workers, watchdogs, outbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs.app.command("retry")(runs_actions.retry_runs)
runs.app.command("cancel")(runs_actions.cancel_runs)
runs.app.command("replay")(runs_actions.replay_runs)
app.add_typer(runs.app, name="runs")
app.add_typer(triggers_cmd.app, name="triggers")
app.add_typer(services.db_app, name="db")
app.add_typer(deadletters_cmd.app, name="deadletters")
app.add_typer(alerts_cmd.app, name="alerts")
app.add_typer(outbox_cmd.app, name="outbox")
agents_cmd.app.command("list")(agents_list.list_agents)
agents_cmd.app.command("pause")(pause_cmd.pause_agents)
agents_cmd.app.command("resume")(pause_cmd.resume_agents)
triggers_cmd.app.command("pause")(pause_cmd.pause_triggers)
triggers_cmd.app.command("backfill")(backfill_cmd.backfill)
triggers_cmd.app.command("resume")(pause_cmd.resume_triggers)
app.add_typer(agents_cmd.app, name="agents")
app.command("scheduler")(services.scheduler)
app.command("worker")(services.worker)
app.command("watchdog")(services.watchdog)
app.command("relay")(services.relay)
app.command("flower")(flower_cmd.flower)
app.command("dev")(services.dev)
app.command("fire")(fire.fire)
app.command("doctor")(doctor_cmd.doctor)
app.command("status")(status_cmd.status)
app.command("pause")(pause_cmd.pause_all)
app.command("resume")(pause_cmd.resume_all)


def main() -> None:
    """Console-script entry point: map our errors to exit codes."""
    try:
        app()
    except NightowlError as exc:
        typer.echo(scrub_text(f"error: {exc}"), err=True)
        sys.exit(EXIT_FINDINGS)
    except Exception as exc:
        message = service_error(exc)
        if message is not None:
            typer.echo(scrub_text(f"error: {message}"), err=True)
            sys.exit(EXIT_FINDINGS)
        sys.stderr.write(scrub_text(traceback.format_exc()))
        sys.exit(EXIT_USAGE)
