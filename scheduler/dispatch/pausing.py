"""What a paused trigger's evaluation commits, and what its resume releases. Pure.

A clock trigger (cron) keeps coming due while paused, so the watchdog's "late" check and
the ledger stay exact: each slot becomes a `skipped/paused` ledger entry, or, with
`missed=run-latest-on-resume`, the newest slot is held in the trigger's own state (under
PAUSED_SLOT, a key the kind never sees) and fires on the first evaluation after resume,
under the key live firing would have used. Holding it in the state means it commits with
the same compare-and-set as everything else a tick writes: two schedulers cannot both
release it, and a crash cannot lose it.

A polling trigger that is paused fires nothing from its evaluation (metric, queue_depth:
their episode state keeps tracking the source); one that consumes its source (db_change)
is not evaluated at all (scheduler/dispatch/service.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents import event_from_json, event_to_json
from scheduler.core.pauses import MissedOnPause, PauseRecord
from scheduler.core.vocabulary import Reason
from triggers import Evaluation, Firing, MissedGap

PAUSED_SLOT = "paused_slot"


def split_held(state: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the state the kind sees, the held firing or None)."""
    if not state or PAUSED_SLOT not in state:
        return state, None
    inner = {k: v for k, v in state.items() if k != PAUSED_SLOT}
    return inner, state[PAUSED_SLOT]


def _held(firing: Firing) -> dict[str, Any]:
    return {
        "key": firing.idempotency_key,
        "logical_time": firing.logical_time.isoformat(),
        "event": event_to_json(firing.event),
        "overlap_key": firing.overlap_key,
    }


def _firing(held: dict[str, Any]) -> Firing:
    return Firing(
        held["key"],
        datetime.fromisoformat(held["logical_time"]),
        event_from_json(held["event"]),
        held.get("overlap_key"),
    )


def while_paused(
    ev: Evaluation, pause: PauseRecord, held: dict[str, Any] | None, *, polls: bool
) -> Evaluation:
    """The evaluation a paused trigger commits: its firings become ledger entries (clock
    kinds) or nothing (polling kinds); `held` is what the state held before."""
    if polls:
        return Evaluation([], ev.state, ev.next_at, ev.missed)
    state = dict(ev.state)
    skipped = [f.logical_time for f in ev.firings]
    if held is not None:
        state[PAUSED_SLOT] = held
    if pause.missed is MissedOnPause.RUN_LATEST and ev.firings:
        newest = max(ev.firings, key=lambda f: f.logical_time)
        skipped.remove(newest.logical_time)
        if held is not None:  # superseded by a newer slot: it is skipped after all
            skipped.append(datetime.fromisoformat(held["logical_time"]))
        state[PAUSED_SLOT] = _held(newest)
    # Slots a catch-up policy dropped in this same evaluation were skipped by the pause too.
    gaps = [MissedGap(g.first, g.last, g.count, reason=Reason.PAUSED) for g in ev.missed]
    if skipped:
        gaps.append(MissedGap(min(skipped), max(skipped), len(skipped), reason=Reason.PAUSED))
    return Evaluation([], state, ev.next_at, gaps)


def on_resume(ev: Evaluation, held: dict[str, Any] | None) -> Evaluation:
    """An unpaused evaluation, with the slot a run-latest pause held fired first."""
    if held is None:
        return ev
    return Evaluation([_firing(held), *ev.firings], ev.state, ev.next_at, ev.missed)
