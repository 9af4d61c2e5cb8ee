"""Overlap policies: at insert time (fake clock) and across a real worker (real time)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.fixtures.overlap_triggers import gauge_keys
from tests.helpers import T0, WorkerProcess, fire_then_drain, make_service, registry_of

MODULE = "tests.fixtures.overlap_triggers"


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("ov-skip", {"queued": 1, "skipped": 2}),
        ("ov-buffer-one", {"queued": 2, "skipped": 1}),
        ("ov-allow", {"queued": 3}),
        ("ov-per-key", {"queued": 3}),
        ("ov-cancel-other", {"queued": 3}),
    ],
)
def test_insert_time_policy(settings: Settings, store: Store, trigger: str, expected: dict[str, int]) -> None:
    # Given a per-second trigger whose runs nobody picks up yet
    clock = FakeClock(T0)
    svc = make_service(settings, registry_of(MODULE, [trigger]), clock)
    svc.tick()
    # When three slots fire
    for _ in range(3):
        clock.advance(1)
        svc.tick()
    # Then the policy decided which firings became runs and which were skipped
    runs = store.list_runs()
    assert Counter(r.status for r in runs) == expected
    assert {r.terminal_reason for r in runs if r.status == "skipped"} <= {"overlap"}


def test_catchup_runs_queue_behind_each_other(settings: Settings, store: Store) -> None:
    from triggers import CronTrigger

    registry = registry_of(MODULE, ["ov-skip"])
    source = registry.triggers["ov-skip"].source
    assert isinstance(source, CronTrigger)
    source.catchup = "all"  # as if declared with catchup="all"
    try:
        clock = FakeClock(T0)
        svc = make_service(settings, registry, clock)
        svc.tick()
        clock.advance(5)  # five slots due in one evaluation
        svc.tick()
    finally:
        source.catchup = "latest"
    runs = store.list_runs()
    assert len(runs) == 5 and {r.status for r in runs} == {"queued"}
    assert sorted(r.overlap or "" for r in runs) == ["skip", "wait", "wait", "wait", "wait"]


@pytest.mark.parametrize(
    ("trigger", "max_inside", "check"),
    [
        ("ov-skip", 1, lambda c: c["succeeded"] >= 1 and c["skipped"] >= 2),
        ("ov-buffer-one", 1, lambda c: c["succeeded"] >= 2 and c["skipped"] >= 1),
        ("ov-allow", 2, lambda c: c["succeeded"] >= 3 and c["skipped"] == 0),
        ("ov-cancel-other", 1, lambda c: c["cancelled"] >= 1 and c["skipped"] == 0),
        # cron firings carry no row key, so they all share one: one at a time, none skipped
        ("ov-per-key", 1, lambda c: c["succeeded"] >= 3 and c["skipped"] == 0),
    ],
)
def test_policy_with_a_real_worker(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
    trigger: str,
    max_inside: int,
    check: Callable[[Counter[str]], bool],
) -> None:
    # Real time, real worker: on PostgreSQL only (the index that enforces this is covered on
    # both backends by tests/contract/test_storage_contract.py).
    settings, store = pg_settings, pg_store
    # Given a worker with room for four runs, and a per-second trigger whose agent takes 3 s
    start_worker(MODULE, pool="threads", concurrency=4)
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(settings, registry_of(MODULE, [trigger]), clock)

    # When it fires for five seconds, then everything drains
    fire_then_drain(svc, clock, store, 5.0)
    counts = Counter(r.status for r in store.list_runs(limit=100))
    inside_key, peak_key = gauge_keys(trigger, prefix)
    peak = int(redis_client.get(peak_key) or 0)
    # Then concurrency and statuses match the policy
    if max_inside == 1:
        assert peak == 1, counts
    else:
        assert peak >= max_inside, counts
    assert check(counts), counts
    assert int(redis_client.get(inside_key) or 0) == 0
    if trigger == "ov-cancel-other":
        cancelled = [r for r in store.list_runs(limit=100) if r.status == "cancelled"]
        assert {r.terminal_reason for r in cancelled} == {"cancel_other"}
        assert all(r.result == {"stopped_early": True} for r in cancelled)


def test_agent_concurrency_cap_holds_across_workers(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given two workers with room for two runs each, and an agent capped at one
    start_worker(MODULE, pool="threads", concurrency=2)
    start_worker(MODULE, pool="threads", concurrency=2)
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(pg_settings, registry_of(MODULE, ["capped"]), clock)

    # When it fires every second for four seconds (at least three slots, whatever the phase)
    fire_then_drain(svc, clock, pg_store, 4.0)
    # Then every run succeeded, never two at once
    runs = pg_store.list_runs()
    assert len(runs) >= 3 and {r.status for r in runs} == {"succeeded"}
    assert int(redis_client.get(gauge_keys("capped", prefix)[1]) or 0) == 1
