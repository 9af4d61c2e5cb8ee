"""`nightowl triggers backfill NAME --from ISO --to ISO`: what scheduler/ops/backfill.py
does, with a dry run, a progress bar on a terminal, and one {slot, action, run_id} per slot."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import typer

from scheduler.cli._common import (
    EXIT_FINDINGS,
    JsonOpt,
    TriggersOpt,
    echo,
    loaded_registry,
    parse_instant,
    print_json,
    print_table,
    progress,
    publisher_for,
    settings_for,
    store_for,
)
from scheduler.ops.backfill import Action, Backfill, Reprocess, SlotPlan, cron_spec, plan, slots


def backfill(
    name: str,
    from_: Annotated[
        str, typer.Option("--from", help="The first slot's earliest time (ISO 8601, inclusive).")
    ],
    to: Annotated[
        str, typer.Option("--to", help="The last slot's latest time (ISO 8601, inclusive; not after now).")
    ],
    reprocess: Annotated[
        Reprocess,
        typer.Option(
            help="Slots that already have a run: none (leave them), failed (replay those that "
            "did not succeed), all."
        ),
    ] = Reprocess.NONE,
    max_active: Annotated[int, typer.Option(min=1, help="At most this many backfill runs at once.")] = 4,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the slots and what would happen to each.")
    ] = False,
    triggers: TriggersOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run a cron trigger's past slots. A slot with no run gets one under the key live firing
    uses (a backfill never duplicates a live run); with --reprocess a slot that has one gets
    a replay (replay_of). Backfill runs carry origin=backfill and are throttled by
    --max-active instead of the trigger's overlap policy. Waits until its runs end; exits 1
    when one of them did not succeed."""
    start, end = parse_instant(from_, "--from"), parse_instant(to, "--to")
    assert start is not None and end is not None
    settings = settings_for(triggers)
    registry = loaded_registry(settings)
    spec, cron = cron_spec(registry, name)
    store = store_for(settings)
    plans = plan(store, spec, slots(cron, start, end, datetime.now(UTC)), reprocess)
    if dry_run:
        _report(plans, json_, "would")
        return
    publisher = publisher_for(settings, registry)
    try:
        with progress(len(plans), f"backfill {name}") as advance:
            done = Backfill(
                store,
                publisher,
                registry,
                spec,
                max_active=max_active,
                on_done=lambda p: advance(p.slot.isoformat()),
                on_held=lambda n: echo(
                    f"{n} backfill run(s) wait: their agent is paused; they start once it is "
                    "resumed (`nightowl agents resume NAME`, or `resume --all` after a "
                    "`pause --all`; Ctrl-C leaves them queued)",
                    err=True,
                ),
            ).run(plans)
    finally:
        publisher.close()
    _report(done, json_, "did")
    made = [p for p in done if p.action is not Action.SKIP]
    if any(p.status != "succeeded" for p in made):
        raise typer.Exit(EXIT_FINDINGS)


def _report(plans: list[SlotPlan], json_: bool, tense: str) -> None:
    if json_:
        print_json([p.as_json() for p in plans])
        return
    rows = [p.as_json() for p in plans]
    columns = ["slot", "action", "existing", "run_id"] + (["status"] if tense == "did" else [])
    print_table(rows, columns)
    counts = Counter(p.action.value for p in plans)
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "no slots in the range"
    ended = Counter(p.status for p in plans if p.action is not Action.SKIP and p.status)
    tail = f"; runs ended: {', '.join(f'{n} {s}' for s, n in sorted(ended.items()))}" if ended else ""
    echo(
        f"{len(plans)} slot(s): {summary}{tail}"
        + (" (dry run: nothing was run)" if tense == "would" else ""),
        err=True,
    )
