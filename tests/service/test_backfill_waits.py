"""A backfill waiting for its own active runs (scheduler/ops/backfill.py): a run pruned while
it waits ends the wait instead of looping forever, and runs held by a paused agent are said
once, not silently waited on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.backfill import GONE, Backfill, Reprocess, cron_spec, plan, slots
from scheduler.storage._sql import runs_t
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from tests.helpers import registry_of

MODULE = "tests.fixtures.exec_triggers"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _backfill(
    settings: Settings, store: Store, sleep: Callable[[float], None], held: list[int]
) -> list[str | None]:
    registry = registry_of(MODULE)
    spec, cron = cron_spec(registry, "x-replayable")
    plans = plan(store, spec, slots(cron, datetime(2024, 1, 1, tzinfo=UTC), NOW, NOW), Reprocess.NONE)
    publisher = Publisher(create_app(settings, registry))
    try:
        done = Backfill(
            store,
            publisher,
            registry,
            spec,
            max_active=1,
            sleep=sleep,
            on_held=held.append,
        ).run(plans)
    finally:
        publisher.close()
    return [p.status for p in done]


def test_a_run_pruned_while_the_backfill_waits_ends_its_wait(settings: Settings, store: Store) -> None:
    def prune_them(_seconds: float) -> None:  # no worker: the runs stay queued until pruned
        with store.engine.begin() as conn:
            conn.execute(sa.delete(runs_t))

    assert _backfill(settings, store, prune_them, []) == [GONE, GONE, GONE]


def test_runs_held_by_a_paused_agent_are_reported_once_then_awaited(settings: Settings, store: Store) -> None:
    calls = 0

    def pause_then_finish(_seconds: float) -> None:
        nonlocal calls
        calls += 1
        with store.engine.begin() as conn:
            if calls < 5:  # the agent is paused: its run waits (and the backfill with it)
                conn.execute(sa.update(runs_t).values(status="waiting", waiting_for="paused"))
            else:  # resumed, and the run ran
                conn.execute(sa.update(runs_t).values(status="succeeded", waiting_for=None))

    held: list[int] = []
    assert _backfill(settings, store, pause_then_finish, held) == ["succeeded"] * 3
    assert held == [1]  # the first slot's wait, said once (later slots never wait on a pause)
