"""Workers that die or freeze mid-run: the run is delivered again and completes once.

Real worker processes, real signals, real Redis, both databases.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.dispatch.service import SchedulerService
from scheduler.storage.store import Dispatch, Store
from tests.fixtures.e2e_triggers import calls_key
from tests.helpers import WorkerProcess, follow_real_time, make_service, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"


def fire_slow(settings: Settings) -> tuple[SchedulerService, FakeClock, str]:
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    svc = make_service(settings, registry_of(MODULE, ["slow"]), clock)
    svc.tick()
    clock.advance(1)
    (run_id,) = [rid for _, rid in svc.tick().fired]
    return svc, clock, run_id


def sweep_until_finished(
    svc: SchedulerService, clock: FakeClock, store: Store, run_id: str, timeout: float = 30
) -> None:
    """Run the sweeper on the real time line until the run is terminal."""

    def step() -> bool:
        follow_real_time(clock)
        svc.sweep()
        run = store.get_run(run_id)
        return run is not None and run.finished_at is not None

    wait_for(step, timeout=timeout, interval=0.2, message=f"run {run_id} to finish")


def test_whole_worker_killed_mid_run_is_replaced_within_one_lease(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a worker running a 3-second agent whose lease lasts 2 seconds
    first = start_worker(MODULE)
    svc, clock, run_id = fire_slow(pg_settings)
    wait_for(lambda: redis_client.get(calls_key(run_id, prefix)), message="the agent to start")
    # When the whole worker is SIGKILLed mid-run and another worker is up
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    second = start_worker(MODULE)
    # Then the sweeper republishes once the lease expired, and the run completes once
    sweep_until_finished(svc, clock, pg_store, run_id)
    run = pg_store.get_run(run_id)
    assert run is not None and run.status == "succeeded"
    assert run.result == {"pid": second.proc.pid, "attempt": 2}
    assert [(a.number, a.status, a.reason) for a in pg_store.attempts_of(run_id)] == [
        (1, "stalled", "worker_lost"),
        (2, "succeeded", None),
    ]
    assert int(redis_client.get(calls_key(run_id, prefix)) or 0) == 2


def test_frozen_worker_is_fenced_out_when_it_wakes(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given two workers, one of which takes the run
    workers = [start_worker(MODULE), start_worker(MODULE)]
    svc, clock, run_id = fire_slow(settings)
    wait_for(lambda: store.attempts_of(run_id), message="the first attempt")
    (attempt,) = store.attempts_of(run_id)
    holder = next(w for w in workers if f"-{w.proc.pid}-" in (attempt.worker or ""))
    other = next(w for w in workers if w is not holder)
    # When the holder is frozen (SIGSTOP) past its lease, and the run is delivered again
    os.kill(holder.proc.pid, signal.SIGSTOP)
    try:
        sweep_until_finished(svc, clock, store, run_id)
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)
    # Then, once it wakes, the frozen worker's final write is fenced out
    wait_for(
        lambda: "fenced_out" in holder.output(), timeout=15, message="the woken worker to report fenced_out"
    )
    run = store.get_run(run_id)
    assert run is not None and run.status == "succeeded"
    assert run.result == {"pid": other.proc.pid, "attempt": 2}
    # (attempt 1 was closed as stalled by the takeover; its late commit does not rewrite it)
    assert [(a.number, a.status) for a in store.attempts_of(run_id)] == [(1, "stalled"), (2, "succeeded")]


def test_prefork_child_killed_mid_run_is_redelivered_and_completes_once(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a prefork worker running the 3-second agent in a pool process
    start_worker(MODULE, pool="prefork", concurrency=1)
    svc, clock, run_id = fire_slow(settings)
    wait_for(lambda: redis_client.get(calls_key(run_id, prefix)), message="the agent to start")
    (attempt,) = store.attempts_of(run_id)
    child_pid = int((attempt.worker or "").split("-")[-2])
    # When only that pool process is SIGKILLed (Celery requeues: task_reject_on_worker_lost)
    os.kill(child_pid, signal.SIGKILL)
    # Then the run is delivered again once its lease has expired, and completes once
    sweep_until_finished(svc, clock, store, run_id)
    run = store.get_run(run_id)
    assert run is not None and run.status == "succeeded"
    assert run.result is not None and run.result["pid"] != child_pid
    assert [a.status for a in store.attempts_of(run_id)] == ["stalled", "succeeded"]
    assert int(redis_client.get(calls_key(run_id, prefix)) or 0) == 2


def test_the_same_message_five_times_runs_the_agent_once(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given two workers with four threads each
    start_worker(MODULE, pool="threads", concurrency=4)
    start_worker(MODULE, pool="threads", concurrency=4)
    svc, clock, run_id = fire_slow(pg_settings)
    # When the same agent.<name>(run_id) message is published four more times at once
    dispatch = Dispatch(run_id, "slow", "agents", "slow", 0)
    svc.publisher.publish([dispatch] * 4)
    sweep_until_finished(svc, clock, pg_store, run_id)
    # And once more after the run succeeded
    svc.publisher.publish([dispatch])
    time.sleep(1.0)
    # Then the agent body ran exactly once and one attempt exists
    assert int(redis_client.get(calls_key(run_id, prefix)) or 0) == 1
    run = pg_store.get_run(run_id)
    assert run is not None and run.status == "succeeded"
    assert [a.status for a in pg_store.attempts_of(run_id)] == ["succeeded"]
