"""The whole path with a real Celery worker process on real Redis, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.storage.store import Dispatch, Store
from tests.fixtures.e2e_triggers import calls_key
from tests.helpers import WorkerProcess, make_service, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"


def real_now() -> datetime:
    # Worker processes stamp times with the real clock; start the fake one there too.
    return datetime.now(UTC).replace(microsecond=0)


def foreign_keys(client: redis.Redis) -> set[str]:
    """Keys outside every test's or benchmark's own prefix."""
    return {
        k.decode()
        for k in client.scan_iter(count=1000)
        if not k.decode().startswith(("nightowl-test-", "bench-"))
    }


def prefixed_keys(client: redis.Redis, prefix: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=f"{prefix}*", count=1000)}


def finished(store: Store, run_id: str) -> object:
    run = store.get_run(run_id)
    return run is not None and run.finished_at is not None


def test_cron_fires_and_agent_runs_once_in_a_real_worker(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a worker process and a scheduler on a fake clock
    foreign_before = foreign_keys(redis_client)
    worker = start_worker(MODULE)
    clock = FakeClock(real_now())
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    svc.tick()
    # When the next second comes due
    clock.advance(1)
    report = svc.tick()
    (run_id,) = [rid for _, rid in report.fired]
    wait_for(lambda: finished(store, run_id), message=f"run {run_id}\n{worker.output()[-2000:]}")
    # Then the run succeeded with the agent's result, and the agent ran exactly once
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.terminal_reason, run.attempt) == ("succeeded", None, 1)
    assert run.result == {
        "slot": run.logical_time.isoformat() if run.logical_time else None,
        "attempt": 1,
        "fence": 1,
    }
    assert run.last_heartbeat == {"note": "working", "details": {"step": 1}}
    assert int(redis_client.get(calls_key(run_id, prefix)) or 0) == 1
    # And a replayed message (a second scheduler, a visibility-timeout redelivery) is dropped
    Publisher(svc.publisher.app).publish([Dispatch(run_id, "echo", "agents", "every-second", 1)])
    wait_for(
        lambda: "already succeeded; duplicate delivery dropped" in worker.output(),
        message="the duplicate delivery to be dropped",
    )
    assert int(redis_client.get(calls_key(run_id, prefix)) or 0) == 1
    (attempt,) = store.attempts_of(run_id)
    assert attempt.status == "succeeded" and attempt.fence == 1
    # And every Redis key the scheduler, the worker and kombu wrote carries our prefix
    assert foreign_keys(redis_client) - foreign_before == set()
    assert any(k.startswith(f"{prefix}_kombu.binding.") for k in prefixed_keys(redis_client, prefix))


def test_results_failures_and_retries_end_in_the_right_state(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(MODULE, pool="threads", concurrency=2)
    clock = FakeClock(real_now())
    svc = make_service(settings, registry_of(MODULE, ["bad-result", "failing", "async"]), clock)
    svc.tick()
    clock.advance(1)
    fired = dict(svc.tick().fired)
    assert set(fired) == {"bad-result", "failing", "async"}

    # A result JSON cannot carry fails the run, naming the agent's file:line and the type.
    wait_for(lambda: finished(store, fired["bad-result"]), message=worker.output()[-2000:])
    bad = store.get_run(fired["bad-result"])
    assert bad is not None and (bad.status, bad.terminal_reason) == ("failed", "not_serialisable")
    assert bad.error is not None and "e2e_triggers.py:" in bad.error and "set" in bad.error

    # Async agents run on an event loop inside the worker.
    wait_for(lambda: finished(store, fired["async"]), message=worker.output()[-2000:])
    ok = store.get_run(fired["async"])
    assert ok is not None and ok.result == {"async": True, "trigger": "async"}

    # A failing agent is retried through the database (`waiting` + the sweeper), then dead.
    def failing_status() -> str | None:
        run = store.get_run(fired["failing"])
        return None if run is None else run.status

    wait_for(lambda: failing_status() == "waiting", message=worker.output()[-2000:])
    clock.advance(settings.pending_grace + timedelta(seconds=1))
    wait_for(lambda: svc.sweep() == 1, message="the sweeper to republish the retry")
    wait_for(lambda: finished(store, fired["failing"]), message=worker.output()[-2000:])
    dead = store.get_run(fired["failing"])
    assert dead is not None
    assert (dead.status, dead.terminal_reason, dead.attempt) == ("dead", "attempts_exhausted", 2)
    assert [(a.number, a.status, a.error_class) for a in store.attempts_of(dead.id)] == [
        (1, "failed", "RuntimeError"),
        (2, "failed", "RuntimeError"),
    ]
    assert int(redis_client.get(calls_key(dead.id, prefix)) or 0) == 2
