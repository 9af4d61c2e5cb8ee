"""Issue 12's faults whose cause is a worker process's: a database outage met at delivery,
and an agent whose process keeps dying (real worker processes, real PostgreSQL and Redis)."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.runs import fire
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Dispatch, NewRun, Store
from scheduler.worker.app import create_app
from tests.fixtures.reliability_triggers import calls_key
from tests.helpers import (
    WorkerProcess,
    database_refusing,
    follow_real_time,
    make_service,
    make_watchdog,
    registry_of,
    run_of,
    wait_for,
)

MODULE = "tests.fixtures.reliability_triggers"


# -- 1. queued with no message -----------------------------------------------------------


def test_a_database_outage_at_delivery_hands_messages_back(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    registry = registry_of(MODULE, ["r-counts"])
    worker = start_worker(MODULE)
    publisher = Publisher(create_app(pg_settings, registry))
    # Given five runs recorded and claimed (`queued`) whose messages reach the worker while
    # PostgreSQL refuses every connection
    now = datetime.now(UTC)
    runs = pg_store.commit_tick(
        [
            NewRun(
                idempotency_key=f"manual:r-counts:{uuid.uuid4()}",
                trigger="r-counts",
                agent="counts",
                queue="agents",
                event={"kind": "manual", "trigger": "r-counts", "payload": None, "fired_by": "test"},
                logical_time=now,
                agent_version="v",
            )
            for _ in range(5)
        ],
        [],
        [],
        now,
    )
    dispatches = pg_store.claim_for_publish(
        [Dispatch(r.id, r.agent, r.queue, r.trigger, 0) for r in runs], now, timedelta(0)
    )
    fired = [d.run_id for d in dispatches]
    assert len(fired) == 5
    pg_store.engine.dispose()
    try:
        with database_refusing(pg_settings):
            publisher.publish(dispatches)
            time.sleep(4)  # the worker meets the outage with every delivery
    finally:
        publisher.close()
    # Then, with no sweeper running, every run still completes once: the deliveries that met
    # the outage went back to the queue instead of being acked away.
    for run_id in fired:
        wait_for(
            functools.partial(_succeeded, pg_store, run_id),
            timeout=40,
            interval=0.2,
            message=f"run {run_id} to succeed",
        )
        assert redis_client.get(calls_key(run_id, pg_settings.redis_prefix)) == b"1"
    out = worker.output()
    assert "goes back to the queue" in out
    assert out.count("Traceback") == 0, out[-3000:]


# -- 5. max_attempts when redeliveries take over ------------------------------------------------


def test_an_agent_whose_process_keeps_dying_ends_dead_and_alerted(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess]
) -> None:
    registry = registry_of(MODULE, ["r-dies"])
    start_worker(MODULE, pool="prefork", concurrency=1)
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(pg_settings, registry, clock)
    publisher = Publisher(create_app(pg_settings, registry))
    try:
        fired = fire(pg_store, publisher, registry, "r-dies", clock.now())
    finally:
        publisher.close()

    def ended() -> bool:
        follow_real_time(clock)
        svc.hold_leadership()
        svc.sweep()
        run = pg_store.get_run(fired.run_id)
        return run is not None and run.finished_at is not None

    wait_for(ended, timeout=60, interval=0.2, message="the run to end")
    run = pg_store.get_run(fired.run_id)
    assert run is not None and (run.status, run.terminal_reason) == ("dead", "attempts_exhausted")
    assert [a.status for a in pg_store.attempts_of(run.id)] == ["stalled", "stalled", "failed"]
    dog = make_watchdog(pg_settings, registry, FakeClock(datetime.now(UTC)))
    dog.check()
    assert [(a.kind, a.run_id) for a in AlertStore(pg_store.engine).history() if a.kind == "run_dead"] == [
        ("run_dead", run.id)
    ]


def _succeeded(store: Store, run_id: str) -> bool:
    return run_of(store, run_id) == ("succeeded", None)
