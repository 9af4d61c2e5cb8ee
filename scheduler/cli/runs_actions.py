"""`nightowl runs retry|cancel|replay`: on one run by id, or on every run a filter matches
(`--status --agent --trigger --since`), counted and listed first, confirmed unless `--yes`,
and only listed with `--dry-run`. The person on call re-runs last night's failures with one
command, and sees what it will touch before it touches anything."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from agents import NightowlError
from scheduler.cli._common import (
    EXIT_FINDINGS,
    JsonOpt,
    TriggersOpt,
    echo,
    fail,
    iso,
    print_json,
    print_table,
    publisher_for,
    redis_for,
    registry_for,
    settings_for,
    store_for,
)
from scheduler.core.settings import Settings
from scheduler.core.vocabulary import RunStatus
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from triggers import Registry, RegistryLoadError

BULK_LIMIT = 10_000  # a filter matching more is refused: narrow it (or run it again)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

RunIdArg = Annotated[str | None, typer.Argument(help="One run's id (or select runs with the options).")]
StatusOpt = Annotated[str | None, typer.Option(help=f"Runs of this status ({', '.join(RunStatus)}).")]
AgentOpt = Annotated[str | None, typer.Option(help="Runs of this agent.")]
TriggerOpt = Annotated[str | None, typer.Option("--trigger", help="Runs of this trigger.")]
SinceOpt = Annotated[
    str | None, typer.Option(help="Runs created within this long: 90s, 30m, 12h, 2d, 1h30m.")
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="List the runs it would act on; change nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `2d`, `1w`, `1h30m` (a bare number is seconds), up to 100 years."""
    cleaned = text.strip().lower()
    bad = typer.BadParameter(
        f"{text!r} is not a duration; write e.g. 30m, 12h, 2d or 1h30m", param_hint="--since"
    )
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _DURATION.findall(cleaned)
        if not parts or _DURATION.sub("", cleaned).strip():
            raise bad from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 <= seconds <= 100 * 365 * 86400:  # refuses inf and nan too
        raise bad
    return timedelta(seconds=seconds)


def _select(
    store: Store,
    run_id: str | None,
    status: str | None,
    agent: str | None,
    trigger: str | None,
    since: str | None,
) -> tuple[list[Run], bool]:
    """The runs to act on, and whether they came from a filter (then they are confirmed)."""
    filtered = any(v is not None for v in (status, agent, trigger, since))
    if run_id is not None:
        if filtered:
            raise typer.BadParameter("give a run id or filters, not both", param_hint="RUN_ID")
        run = store.get_run(run_id)
        if run is None:
            fail(f"no run with id {run_id!r}; list runs with `nightowl runs list`")
        return [run], False
    if not filtered:
        raise typer.BadParameter(
            "give a run id, or select runs with --status, --agent, --trigger or --since", param_hint="RUN_ID"
        )
    if status is not None and status not in tuple(RunStatus):
        raise typer.BadParameter(f"{status!r}; use one of {', '.join(RunStatus)}", param_hint="--status")
    after = datetime.now(UTC) - parse_duration(since) if since is not None else None
    runs = store.list_runs(status=status, agent=agent, trigger=trigger, since=after, limit=BULK_LIMIT + 1)
    if len(runs) > BULK_LIMIT:
        fail(f"more than {BULK_LIMIT} runs match; narrow the selection (--since, --agent, --trigger)")
    return runs, True


def _confirm(verb: str, runs: list[Run], dry_run: bool, yes: bool, json_: bool) -> bool:
    """Show what matches; True when the action should go ahead. Under `--json` the listing
    is stdout's answer only for a dry run; otherwise the count still goes to stderr, so a
    prompt never asks about an unknown number of runs."""
    if json_ and not dry_run:
        typer.echo(f"{len(runs)} run(s) match", err=True)
    if not json_ or dry_run:
        rows = [
            {
                "id": r.id,
                "trigger": r.trigger,
                "agent": r.agent,
                "status": r.status,
                "created_at": iso(r.created_at),
            }
            for r in runs
        ]
        if json_:
            print_json(rows)
        else:
            typer.echo(f"{len(runs)} run(s) match:", err=True)
            if runs:
                print_table(rows, ["id", "trigger", "agent", "status", "created_at"])
    if dry_run or not runs:
        if dry_run and not json_:
            typer.echo(f"dry run: nothing was {verb}", err=True)
        return False
    if yes:
        return True
    if not sys.stdin.isatty():
        fail(f"{len(runs)} run(s) would be {verb}; pass --yes to go ahead without a terminal")
    return typer.confirm(f"{verb.capitalize()} {len(runs)} run(s)?", default=False, err=True)


def _act(
    verb: str,
    runs: list[Run],
    bulk: bool,
    dry_run: bool,
    yes: bool,
    json_: bool,
    one: Callable[[Run], dict[str, Any]],
) -> None:
    """Act on each run; a run that cannot be acted on is reported, the rest go on."""
    if bulk and not _confirm(verb, runs, dry_run, yes, json_):
        return
    done: list[dict[str, Any]] = []
    refused = 0
    for run in runs:
        try:
            done.append(one(run))
        except NightowlError as exc:
            if not bulk:
                raise
            refused += 1
            echo(f"run {run.id}: {exc}", err=True)
    if json_:
        print_json(done if bulk else done[0])
    else:
        for d in done:
            echo(d.pop("_line"))
        if bulk:
            typer.echo(f"{len(done)} run(s) {verb}" + (f", {refused} refused" if refused else ""), err=True)
    for d in done:
        d.pop("_line", None)
    if refused:
        raise typer.Exit(EXIT_FINDINGS)


def _registry_or_none(settings: Settings) -> Registry | None:
    """The registry when the trigger modules load (a replay then runs the current version)."""
    if not settings.triggers:
        return None
    try:
        return registry_for(settings)
    except RegistryLoadError:
        return None


def retry_runs(
    run_id: RunIdArg = None,
    status: StatusOpt = None,
    agent: AgentOpt = None,
    trigger: TriggerOpt = None,
    since: SinceOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Give dead, failed or timed-out runs one more attempt (the same run, its attempts go on)."""
    from scheduler.ops import runs as operations

    settings = settings_for(triggers)
    store = store_for(settings)
    runs, bulk = _select(store, run_id, status, agent, trigger, since)
    publisher = publisher_for(settings)

    def one(run: Run) -> dict[str, Any]:
        d = operations.retry(store, publisher, run.id, datetime.now(UTC))
        line = f"run {d.run_id} queued for attempt {d.attempt + 1}"
        return {"run_id": d.run_id, "attempt": d.attempt + 1, "_line": line}

    try:
        _act("retried", runs, bulk, dry_run, yes, json_, one)
    finally:
        publisher.close()


def cancel_runs(
    run_id: RunIdArg = None,
    status: StatusOpt = None,
    agent: AgentOpt = None,
    trigger: TriggerOpt = None,
    since: SinceOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Cancel runs: at once if not started, cooperatively (then terminated) if running."""
    from scheduler.ops import runs as operations

    settings = settings_for(triggers)
    store = store_for(settings)
    runs, bulk = _select(store, run_id, status, agent, trigger, since)
    client = redis_for(settings)

    def one(run: Run) -> dict[str, Any]:
        what = operations.cancel(store, client, settings.redis_prefix, run.id, datetime.now(UTC))
        return {"run_id": run.id, "result": what, "_line": f"run {run.id}: {what}"}

    try:
        _act("cancelled", runs, bulk, dry_run, yes, json_, one)
    finally:
        client.close()


def replay_runs(
    run_id: RunIdArg = None,
    payload: Annotated[
        str | None, typer.Option(help="JSON to replace the event's payload with (manual and cron events).")
    ] = None,
    status: StatusOpt = None,
    agent: AgentOpt = None,
    trigger: TriggerOpt = None,
    since: SinceOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run again as new runs: the same event, a fresh idempotency key, replay_of the original
    (the agent sees ctx.replay_of). The originals stay as they are."""
    from scheduler.ops import runs as operations

    data: Any = operations.KEEP_PAYLOAD
    if payload is not None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    settings = settings_for(triggers)
    store = store_for(settings)
    runs, bulk = _select(store, run_id, status, agent, trigger, since)
    registry = _registry_or_none(settings)
    publisher = publisher_for(settings, registry)

    def one(run: Run) -> dict[str, Any]:
        r = operations.replay(store, publisher, run.id, datetime.now(UTC), payload=data, registry=registry)
        return {
            "run_id": r.run_id,
            "replay_of": r.replay_of,
            "_line": f"run {r.run_id} replays {r.replay_of}",
        }

    try:
        _act("replayed", runs, bulk, dry_run, yes, json_, one)
    finally:
        publisher.close()
