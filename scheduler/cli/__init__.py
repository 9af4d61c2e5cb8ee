"""The `nightowl` command line. Exit codes: 0 ok, 1 findings/refusals/failures, 2 usage/internal."""

from __future__ import annotations

import sys
import traceback

import typer

from scheduler.cli.commands import LazyGroup

app = typer.Typer(
    name="nightowl",
    help="Run AI agents in the background: triggers, Celery workers, watchdogs, outbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LazyGroup,
    # Plain help at the top level: rich's help would import every command to describe it.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Run AI agents in the background: triggers, Celery workers, watchdogs, outbox."""


def main() -> None:
    """Console-script entry point: map our errors to exit codes."""
    try:
        app()
    except Exception as exc:
        # Imported here, not at start: `nightowl --help` must not pay for them.
        from agents import NightowlError
        from scheduler.cli._common import EXIT_FINDINGS, EXIT_USAGE
        from scheduler.core.scrub import scrub_text
        from scheduler.core.service_errors import service_error

        if isinstance(exc, NightowlError):
            typer.echo(scrub_text(f"error: {exc}"), err=True)
            sys.exit(EXIT_FINDINGS)
        message = service_error(exc)
        if message is not None:
            typer.echo(scrub_text(f"error: {message}"), err=True)
            sys.exit(EXIT_FINDINGS)
        sys.stderr.write(scrub_text(traceback.format_exc()))
        sys.exit(EXIT_USAGE)
