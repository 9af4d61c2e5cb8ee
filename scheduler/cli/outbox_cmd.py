"""`nightowl outbox status|retry`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    print_json,
    print_table,
    progress,
    registry_for,
    settings_for,
    store_for,
)
from scheduler.storage.outbox_store import STATUS_COUNTS, OutboxStore

RETRY_BATCH = 1000

app = typer.Typer(help="The outbox: writes waiting for, or delivered to, their sinks.", no_args_is_help=True)


@app.command("status")
def status(json_: JsonOpt = False, triggers: TriggersOpt = None) -> None:
    """Per sink: pending, claimed, delivered, dead, and the oldest pending row's age (relay lag)."""
    store = OutboxStore(store_for(settings_for(triggers)).engine)
    data = store.status(datetime.now(UTC))
    if json_:
        # DESIGN.md's shape: counts per sink, and the overall relay lag.
        ages = [c["oldest_pending_age_s"] for c in data.values() if c["oldest_pending_age_s"] is not None]
        print_json(
            {
                "sinks": {sink: {k: c[k] for k in STATUS_COUNTS} for sink, c in sorted(data.items())},
                "oldest_pending_age_s": max(ages) if ages else None,
            }
        )
        return
    rows = [{"sink": sink, **counts} for sink, counts in sorted(data.items())]
    print_table(rows, ["sink", *STATUS_COUNTS, "oldest_pending_age_s"])


@app.command("retry")
def retry(
    dead: Annotated[bool, typer.Option("--dead", help="Requeue rows marked dead.")] = False,
    sink: Annotated[str | None, typer.Option(help="Only this sink.")] = None,
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
) -> None:
    """Requeue dead rows (after fixing the sink) with their attempts reset."""
    if not dead:
        raise typer.BadParameter("say which rows: --dead", param_hint="--dead")
    store = OutboxStore(store_for(settings_for(triggers)).engine)
    n = 0
    with progress(-(-store.count_dead(sink) // RETRY_BATCH), "requeueing dead rows") as advance:
        while batch := store.retry_dead(sink, datetime.now(UTC), limit=RETRY_BATCH):
            n += batch
            advance(f"{n} requeued")
    if json_:
        print_json({"requeued": n})
    else:
        typer.echo(f"requeued {n} dead row(s){f' of sink {sink}' if sink else ''}")


@app.command("upgrade-cache")
def upgrade_cache(json_: JsonOpt = False, triggers: TriggersOpt = None) -> None:
    """Convert every RedisCacheSink's keys left in the two-string format of earlier versions
    (`<prefix><key>` + `<prefix><key>:seq`) to one hash per key; safe to repeat, and to run
    while relays deliver (each key is converted in one Lua script)."""
    from scheduler.outbox import RedisCacheSink, registered_sinks, sink_for

    settings = settings_for(triggers)
    registry_for(settings)  # importing the trigger modules registers their sinks
    converted: dict[str, int] = {}
    for name in sorted(registered_sinks()):
        sink = sink_for(name)
        if isinstance(sink, RedisCacheSink):
            sink.bind(settings.source_defaults())
            converted[name] = sink.upgrade_keys()
    if json_:
        print_json({"converted": converted})
    elif not converted:
        typer.echo("no RedisCacheSink is registered in the trigger modules")
    else:
        for name, n in converted.items():
            typer.echo(f"{name}: converted {n} key(s) to the hash format")
