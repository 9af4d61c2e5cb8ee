"""Helpers every CLI command shares: options, settings, output, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from scheduler.core.scrub import register_registry, scrub_text, scrub_value
from scheduler.core.settings import Settings
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store

if TYPE_CHECKING:
    import redis

    from scheduler.core.publish import Publisher
    from triggers import Registry

EXIT_OK = 0
EXIT_FINDINGS = 1  # findings, refusals, failed operations
EXIT_USAGE = 2  # usage or internal errors

TriggersOpt = Annotated[
    str | None,
    typer.Option(
        "--triggers",
        "-t",
        help="Trigger modules, comma-separated (default: NIGHTOWL_TRIGGERS)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def settings_for(triggers: str | None = None, *, dev_env_file: bool = True, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line values on top.

    Long-running services pass `dev_env_file=False`: they run only on URLs
    someone set on purpose, never on a `nightowl dev` leftover.
    """
    if triggers:
        from triggers import split_modules

        overrides["triggers"] = split_modules(triggers)
    if not dev_env_file:
        overrides["_env_file"] = None
    return Settings(**overrides)


def registry_for(settings: Settings) -> Registry:
    """The user's trigger modules, loaded (imported here: only the commands that need the
    modules pay for them)."""
    from triggers import load

    registry = load(settings.triggers)
    register_registry(registry)  # the modules' own database, broker and sink URLs
    return registry


def loaded_registry(settings: Settings) -> Registry:
    """The registry, or each problem of the trigger modules on stderr and exit 1 (what every
    command that needs the modules does when they do not load)."""
    from triggers import RegistryLoadError

    try:
        return registry_for(settings)
    except RegistryLoadError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(EXIT_FINDINGS) from None


def store_for(settings: Settings) -> Store:
    return Store(make_engine(settings.require_database_url()))


def publisher_for(settings: Settings, registry: Registry | None = None) -> Publisher:
    """A publisher on the configured broker (closing it is the caller's job). Celery is
    imported here, by the commands that publish, not by every command."""
    from scheduler.core.celery import broker_app
    from scheduler.core.publish import Publisher

    return Publisher(broker_app(settings, registry))


def redis_for(settings: Settings) -> redis.Redis:
    import redis

    return redis.Redis.from_url(settings.require_redis_url())


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, as every listing prints times."""
    return None if value is None else value.astimezone(UTC).isoformat()


def echo(text: str, *, err: bool = False) -> None:
    """Print a line of a listing, scrubbed: stored errors and alert messages may quote a URL
    (rows written before a secret was registered, or by code that did not scrub)."""
    typer.echo(scrub_text(text), err=err)


def print_json(data: Any) -> None:
    echo(json.dumps(scrub_value(data), indent=2, default=str))


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain aligned table (no colours: output is often piped into other tools)."""
    if not rows:
        typer.echo("(none)")
        return
    cells = [[("" if r.get(c) is None else scrub_text(str(r.get(c)))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def fail(message: str, code: int = EXIT_FINDINGS) -> NoReturn:
    echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[str], None]]:
    """A progress bar (rich) on stderr for a long operation; yields `advance(label)`.

    Drawn only when stderr is a terminal: piped output, logs and `--json` stay clean, and
    a cron job's mail does not fill with bar redraws.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if total <= 0 or not console.is_terminal:
        yield lambda _label: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=f"{description} {label}")

        yield advance


def parse_instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 instant with an offset (`--slot`, `--from`), or a usage error naming it."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not ISO 8601 (e.g. 2026-03-01T03:00:00Z)", param_hint=option
        ) from None
    if at.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no offset; add Z or +02:00", param_hint=option)
    return at.astimezone(UTC)


def report_terminal(run: Any, json_: bool) -> None:
    """A run that ended, as `fire --wait` and `runs wait` print it; exits 1 unless it
    succeeded (the shell's `&&` then means "the agent succeeded")."""
    data = {
        "run_id": run.id,
        "idempotency_key": run.idempotency_key,
        "status": run.status,
        "terminal_reason": run.terminal_reason,
        "result": run.result,
        "error": run.error,
    }
    if json_:
        print_json(data)
    else:
        reason = f"/{run.terminal_reason}" if run.terminal_reason else ""
        detail = json.dumps(run.result, default=str) if run.status == "succeeded" else (run.error or "")
        echo(f"{run.id} {run.status}{reason} {detail}".rstrip())
    if run.status != "succeeded":
        raise typer.Exit(EXIT_FINDINGS)
