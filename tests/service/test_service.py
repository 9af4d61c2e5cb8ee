"""The scheduler service against real Redis and both databases, with a fake clock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import ROOT, T0, Cli, child_env, make_service, queue_length, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"


def test_tick_inserts_and_publishes_one_message_per_firing(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    # Given a per-second trigger that the scheduler has seen once
    clock = FakeClock(T0)
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    assert svc.tick().inserted == 0  # a new trigger starts from now
    # When three seconds pass, one tick at a time
    for _ in range(3):
        clock.advance(1)
        svc.tick()
    # Then three runs exist, each queued with exactly one message
    runs = store.list_runs()
    assert sorted(r.idempotency_key for r in runs) == [
        "cron:every-second:2026-03-01T12:00:01Z",
        "cron:every-second:2026-03-01T12:00:02Z",
        "cron:every-second:2026-03-01T12:00:03Z",
    ]
    assert {r.status for r in runs} == {"queued"}
    assert queue_length(redis_client, prefix) == 3
    assert store.load_trigger_states()["every-second"][1] == 4  # created + 3 CAS writes


def test_two_replicas_fire_each_slot_exactly_once(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    # Given two scheduler replicas on the same clock, ticking in turn
    clock = FakeClock(T0)
    registry = registry_of(MODULE, ["every-second"])
    a = make_service(settings, registry, clock, owner="replica-a")
    b = make_service(settings, registry, clock, owner="replica-b")
    for _ in range(10):
        a.tick()
        b.tick()
        clock.advance(1)
    assert a.is_leader != b.is_leader
    # When the leader goes away and the standby takes over
    leader, standby = (a, b) if a.is_leader else (b, a)
    leader.resign()
    for _ in range(10):
        standby.tick()
        leader_report = leader.tick()  # the old leader may come back: it must not double-fire
        clock.advance(1)
    assert standby.is_leader and not leader_report.leader
    standby.tick()
    # Then every slot has exactly one run and one message
    keys = [r.idempotency_key for r in store.list_runs(limit=1000)]
    assert len(keys) == len(set(keys)) == 20
    assert queue_length(redis_client, prefix) == 20


CRASHING_SCHEDULER = textwrap.dedent("""
    import os
    from datetime import timedelta
    from scheduler.worker.app import create_app
    from scheduler.core.clock import FakeClock
    from scheduler.core.publish import Publisher
    from scheduler.core.settings import Settings
    from tests.helpers import T0
    from tests.helpers import make_service, registry_of

    class DiesBeforePublishing(Publisher):
        def publish(self, dispatches):
            os._exit(137)  # killed after the runs committed, before any message left

    settings = Settings()
    clock = FakeClock(T0)
    registry = registry_of("tests.fixtures.e2e_triggers", ["every-second"])
    svc = make_service(settings, registry, clock, leader_ttl=1.0,
                       publisher=DiesBeforePublishing(create_app(settings, registry)))
    svc.tick()
    clock.advance(1)
    svc.tick()
    raise SystemExit("unreachable: the publisher should have killed the process")
""")


def test_sweeper_publishes_runs_of_a_scheduler_killed_before_publishing(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    # Given a scheduler process that dies between committing runs and publishing them
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_SCHEDULER],
        cwd=ROOT,
        env=child_env(settings, MODULE),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 137, proc.stderr
    (run,) = store.list_runs()
    # The claim commits before the publish: `queued`, and no message anywhere.
    assert run.status == "queued"
    assert queue_length(redis_client, prefix) == 0
    # When a new scheduler takes over (after the dead one's lease expires) and sweeps
    clock = FakeClock(T0 + timedelta(seconds=1))
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    wait_for(svc.hold_leadership, timeout=5, message="the dead leader's lease to expire")
    assert svc.sweep() == 0  # inside requeue_lost_after: a live publisher may be busy
    clock.advance(svc.sweeper.requeue_lost_after.total_seconds() + 1)
    assert svc.sweep() == 1  # the lost-message check: queued, and no message in the broker
    clock.advance(svc.sweeper.requeue_lost_after.total_seconds())
    assert svc.sweep() == 0  # its message is there now
    # Then the pending run was published exactly once
    assert queue_length(redis_client, prefix) == 1
    loaded = store.get_run(run.id)
    assert loaded is not None and loaded.status == "queued"


def test_runs_of_a_removed_agent_end_failed_unknown_agent(
    settings: Settings, store: Store, redis_client: redis.Redis, prefix: str
) -> None:
    # Given a pending run of an agent that a later deploy removed
    from scheduler.storage.store import NewRun

    (run,) = store.commit_tick(
        [
            NewRun(
                idempotency_key="cron:gone:2026-03-01T12:00:00Z",
                trigger="gone",
                agent="retired",
                queue="agents",
                event={
                    "kind": "cron",
                    "trigger": "gone",
                    "scheduled_for": T0.isoformat(),
                    "fired_at": T0.isoformat(),
                },
                logical_time=T0,
                agent_version="v0",
            )
        ],
        [],
        [],
        T0,
    )
    clock = FakeClock(T0 + timedelta(minutes=1))
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    assert svc.hold_leadership()
    # When the sweeper finds it
    assert svc.sweep() == 0
    # Then it ends failed/unknown_agent instead of being published to a task nobody has
    loaded = store.get_run(run.id)
    assert loaded is not None and (loaded.status, loaded.terminal_reason) == ("failed", "unknown_agent")
    assert queue_length(redis_client, prefix) == 0


def test_triggers_list_all_reports_orphaned_state(settings: Settings, store: Store, cli: Cli) -> None:
    # Given state persisted for a trigger that the current modules no longer define
    from scheduler.storage.store import StateWrite

    store.commit_tick([], [StateWrite("renamed-away", "cron", {"version": 1}, 0, None)], [], T0)
    out = cli("triggers", "list", "--all", "--json", env=child_env(settings, MODULE))
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["renamed-away"]["state"] == "orphaned"
    assert rows["every-second"]["state"] == "new"


def test_a_burst_of_due_triggers_goes_out_in_a_small_first_chunk_then_full_ones(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,200 triggers due in one tick: the first 50 runs are committed and published before
    the rest are evaluated, then chunks of 500; every firing lands exactly once."""
    from scheduler.core.publish import Publisher
    from scheduler.storage.store import Dispatch
    from scheduler.worker.app import create_app

    (tmp_path / "burst_triggers.py").write_text(
        textwrap.dedent("""
        from agents import agent
        from triggers import cron

        @agent("noop")
        def noop(ctx, event):
            return None

        for i in range(1200):
            cron("0 * * * *", agent=noop, name=f"t{i}")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_of("burst_triggers")
    batches: list[int] = []

    class Recording(Publisher):
        def publish(self, dispatches: Sequence[Dispatch]) -> None:
            batches.append(len(dispatches))
            super().publish(dispatches)

    clock = FakeClock(T0 - timedelta(seconds=30))
    svc = make_service(settings, registry, clock, publisher=Recording(create_app(settings, registry)))
    svc.tick()
    clock.set(T0 + timedelta(milliseconds=1))
    report = svc.tick()
    assert report.inserted == 1200
    assert batches == [50, 500, 500, 150]
    runs = store.list_runs(limit=2000)
    assert len(runs) == 1200 and {r.status for r in runs} == {"queued"}
    assert len({r.idempotency_key for r in runs}) == 1200
    assert queue_length(redis_client, prefix) == 1200
    assert {rev for _, rev in store.load_trigger_states().values()} == {2}  # created, then CAS
    # A second tick in the same hour fires nothing more
    clock.advance(1)
    assert svc.tick().inserted == 0
