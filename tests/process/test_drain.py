"""Graceful drain: SIGTERM stops a worker taking work; running agents get NIGHTOWL_SHUTDOWN_GRACE
to finish, and what does not finish goes back to the queue and resumes from its last progress.

PostgreSQL only (real-time process tests)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import (
    WorkerProcess,
    fire_run,
    follow_real_time,
    make_service,
    marks,
    registry_of,
    wait_for,
)

MODULE = "tests.fixtures.stall_agents"


def test_sigterm_lets_a_running_agent_finish_within_the_grace(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(MODULE, pool="prefork", NIGHTOWL_SHUTDOWN_GRACE="6")
    run_id = fire_run(pg_settings, pg_store, MODULE, "x-plodder")
    wait_for(lambda: marks(redis_client, prefix, run_id), message="the agent to start")
    # When the deploy sends SIGTERM mid-run
    worker.proc.send_signal(signal.SIGTERM)
    # Then the agent finishes its 3 seconds and the worker exits by itself (not killed)
    assert worker.proc.wait(timeout=30) >= 0
    run = pg_store.get_run(run_id)
    assert run is not None and (run.status, run.attempt) == ("succeeded", 1)


def test_what_does_not_finish_in_the_grace_is_handed_back_and_resumes(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    first = start_worker(MODULE, pool="prefork", NIGHTOWL_SHUTDOWN_GRACE="0.5")
    run_id = fire_run(pg_settings, pg_store, MODULE, "x-plodder")
    wait_for(
        lambda: (pg_store.get_run(run_id) or object()).last_heartbeat,  # type: ignore[attr-defined]
        message="a saved progress heartbeat",
    )
    # When SIGTERM comes with a grace shorter than the agent's remaining work
    first.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    first.proc.wait(timeout=30)
    assert time.monotonic() - started < 15
    # Then the message went back to the broker and another worker completes the run, resuming
    start_worker(MODULE)
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(pg_settings, registry_of(MODULE), clock)

    def finished() -> bool:
        follow_real_time(clock)
        svc.sweep()
        run = pg_store.get_run(run_id)
        return run is not None and run.status == "succeeded"

    wait_for(finished, timeout=40, interval=0.3, message="the handed-back run to succeed")
    run = pg_store.get_run(run_id)
    assert run is not None and run.result is not None
    assert run.result["attempt"] == 2 and isinstance(run.result["resumed_from_step"], int)
