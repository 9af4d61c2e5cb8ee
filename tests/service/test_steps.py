"""Durable steps, run-wide budgets and provider deferrals through the real executor, on both
databases: what a retry replays, what a runaway costs, and that an outage never kills a run.

(tests/process/test_steps_processes.py kills real worker processes between steps.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa

from scheduler.core.settings import Settings
from scheduler.storage.store import Store, runs_t
from scheduler.worker.executor import Executor
from tests.fixtures.step_agents import calls_key
from tests.helpers import fire_run, registry_of

MODULE = "tests.fixtures.step_agents"


def make_due(store: Store, run_id: str) -> None:
    """Time passes: a waiting run's not_before is reached (the executor runs on real time)."""
    with store.engine.begin() as conn:
        conn.execute(sa.update(runs_t).where(runs_t.c.id == run_id).values(not_before=datetime.now(UTC)))


def calls(client: redis.Redis, run_id: str) -> int:
    """The real calls the run's steps made (in-process: the agents' module has no prefix)."""
    return int(client.get(calls_key(run_id)) or 0)


def test_a_retry_replays_the_recorded_steps_and_calls_only_the_new_one(
    settings: Settings,
    store: Store,
    executor: Callable[..., Executor],
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    registry = registry_of(MODULE, ["t-two-steps-then-fail"])
    run_id = fire_run(settings, store, MODULE, "t-two-steps-then-fail")
    worker = executor(registry)
    assert worker.execute("two-steps-then-fail", run_id) == "retry"
    assert calls(redis_client, run_id) == 2
    make_due(store, run_id)
    assert worker.execute("two-steps-then-fail", run_id) == "succeeded"
    # Then steps 1 and 2 were replayed (the same answers, no call), step 3 called once
    assert calls(redis_client, run_id) == 3
    run = store.get_run(run_id)
    assert run is not None and run.result is not None
    assert [(s["step"], s["call"], s["attempt"]) for s in run.result["steps"]] == [
        ("fetch", 1, 1),
        ("summarise", 2, 1),
        ("publish", 3, 2),
    ]
    assert [(s.seq, s.name, s.attempt) for s in store.steps_of(run_id)] == [
        (1, "fetch", 1),
        (2, "summarise", 1),
        (3, "publish", 2),
    ]
    # And the usage is the run's: the replayed steps cost nothing the second time
    assert run.usage == {"tokens": 300, "cost_usd": pytest.approx(0.3), "tool_calls": 0, "steps": 3}
    attempts = store.attempts_of(run_id)
    assert [a.usage for a in attempts] == [
        {"tokens": 300, "cost_usd": pytest.approx(0.3), "tool_calls": 0},
        {"tokens": 0, "cost_usd": 0.0, "tool_calls": 0},
    ]


def test_a_runaway_that_crashes_and_retries_is_stopped_by_the_run_wide_budget(
    settings: Settings,
    store: Store,
    executor: Callable[..., Executor],
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    registry = registry_of(MODULE, ["t-runaway"])
    run_id = fire_run(settings, store, MODULE, "t-runaway")
    worker = executor(registry)
    outcomes = []
    for _ in range(50):
        outcomes.append(worker.execute("runaway", run_id))
        if outcomes[-1] != "retry":
            break
        make_due(store, run_id)
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.terminal_reason) == ("budget_exceeded", "tokens")
    # 1000 tokens allowed, 100 per call: the 11th call crossed it, and nothing ran after it
    assert calls(redis_client, run_id) == 11
    assert run.usage is not None and run.usage["tokens"] == 1100
    assert outcomes == ["retry", "retry", "retry", "budget_exceeded"]


def test_an_unavailable_provider_defers_the_run_without_counting_attempts(
    settings: Settings,
    store: Store,
    executor: Callable[..., Executor],
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    # Given an agent allowed one attempt and one delivery, whose provider is out 3 times
    registry = registry_of(MODULE, ["t-provider-down"])
    run_id = fire_run(settings, store, MODULE, "t-provider-down")
    worker = executor(registry)
    for _ in range(3):
        assert worker.execute("provider-down", run_id) == "deferred"
        run = store.get_run(run_id)
        assert run is not None and (run.status, run.waiting_for) == ("waiting", "provider_unavailable")
        make_due(store, run_id)
    # Then it is neither dead nor poisoned, and succeeds when the provider is back
    assert worker.execute("provider-down", run_id) == "succeeded"
    run = store.get_run(run_id)
    assert run is not None and run.deferrals == 3 and run.attempt == 4
    assert [a.status for a in store.attempts_of(run_id)] == ["deferred"] * 3 + ["succeeded"]
    assert calls(redis_client, run_id) == 1  # the step before the outage ran once


def test_a_step_that_diverges_from_the_record_fails_naming_both(
    settings: Settings, store: Store, executor: Callable[..., Executor]
) -> None:
    registry = registry_of(MODULE, ["t-steps-diverge"])
    run_id = fire_run(settings, store, MODULE, "t-steps-diverge")
    worker = executor(registry)
    assert worker.execute("steps-diverge", run_id) == "retry"
    make_due(store, run_id)
    assert worker.execute("steps-diverge", run_id) == "failed"
    run = store.get_run(run_id)
    assert run is not None and run.terminal_reason == "non_retryable"
    assert "'step-of-attempt-2'" in (run.error or "") and "'step-of-attempt-1'" in (run.error or "")


def test_runs_over_the_agents_spend_cap_wait_for_the_window_to_turn(
    settings: Settings, store: Store, executor: Callable[..., Executor], redis_client: redis.Redis
) -> None:
    # Given an agent capped at 1000 tokens a day across the fleet, 600 tokens a run
    registry = registry_of(MODULE, ["t-capped"])
    worker = executor(registry)
    for _ in range(2):  # 600, then 1200: the cap is reached
        assert worker.execute("capped", fire_run(settings, store, MODULE, "t-capped")) == "succeeded"
    # When a third run is delivered
    third = fire_run(settings, store, MODULE, "t-capped")
    assert worker.execute("capped", third) == "parked"
    # Then it waits for the next UTC day, and no attempt (and no call) was spent on it
    run = store.get_run(third)
    assert run is not None and (run.status, run.waiting_for) == ("waiting", "spend_cap")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert run.not_before == tomorrow
    assert store.attempts_of(third) == [] and calls(redis_client, third) == 0
