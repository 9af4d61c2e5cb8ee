"""Durable steps, run-wide usage and provider deferrals in storage, on SQLite and PostgreSQL,
on both attempt plans."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents import ProviderUnavailable, StepRecord
from scheduler.core.verdict import SUCCEEDED, deferred
from scheduler.core.vocabulary import AttemptStatus, RunStatus, WaitingFor
from scheduler.storage.dialect import Dialect
from scheduler.storage.retention import prune
from scheduler.storage.store import Plan, Store
from tests.contract.test_storage_contract import EACH_PLAN, RETRY, T0, new_run


@pytest.fixture
def plan_store(store: Store, plan: Plan) -> Store:
    dialect = Dialect.for_engine(store.engine)
    if plan is Plan.TRANSACTION:
        dialect = dialect.without_single_statement()
    return Store(store.engine, dialect=dialect)


def step(seq: int, name: str, result: object, attempt: int = 1, tokens: int = 0) -> StepRecord:
    return StepRecord(
        seq=seq,
        name=name,
        result=result,
        attempt=attempt,
        usage={"tokens": tokens, "cost_usd": 0.0, "tool_calls": 0},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
    )


@EACH_PLAN
def test_a_recorded_step_and_the_runs_usage_reach_the_next_attempt(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("k1")], [], [], T0)
    first = plan_store.begin_attempt(run.id, "w1", None, T0, agent="a", agent_version="v1")
    assert first is not None and first.usage is None and first.deferrals == 0
    usage = {"tokens": 120, "cost_usd": 0.25, "tool_calls": 1}
    assert plan_store.record_step(
        first, step(1, "ask", {"a": 1}, tokens=120), run_usage=usage, attempt_usage=usage
    )
    assert plan_store.finish(first, RETRY, now=T0, error="boom", usage=usage, attempt_usage=usage)
    second = plan_store.begin_attempt(
        run.id, "w2", None, T0 + timedelta(minutes=1), agent="a", agent_version="v2"
    )
    assert second is not None
    assert second.usage == usage and second.agent_version == "v1"  # the version it started with
    (recorded,) = plan_store.steps_of(run.id)
    assert (recorded.seq, recorded.name, recorded.result, recorded.attempt) == (1, "ask", {"a": 1}, 1)
    assert recorded.usage["tokens"] == 120 and recorded.finished_at == T0 + timedelta(seconds=2)
    versions = [(a.number, a.agent_version, a.usage) for a in plan_store.attempts_of(run.id)]
    assert versions == [(1, "v1", usage), (2, "v2", None)]


def test_a_stale_attempt_records_no_step(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    old = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    new = store.begin_attempt(run.id, "w2", None, T0, agent="a")  # a takeover: a newer fence
    assert old is not None and new is not None
    assert not store.record_step(old, step(1, "ask", "stale"), run_usage={"tokens": 9}, attempt_usage={})
    assert store.steps_of(run.id) == []
    assert store.record_step(new, step(1, "ask", "fresh"), run_usage={"tokens": 1}, attempt_usage={})
    assert [s.result for s in store.steps_of(run.id)] == ["fresh"]
    loaded = store.get_run(run.id)
    assert loaded is not None and loaded.usage == {"tokens": 1}


def test_a_beat_persists_the_runs_usage(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    started = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert started is not None
    usage = {"tokens": 5000, "cost_usd": 1.5, "tool_calls": 3}
    assert store.beat(started, T0, timedelta(seconds=60), None, usage=usage, attempt_usage=usage).current
    loaded = store.get_run(run.id)
    assert loaded is not None and loaded.usage == usage
    (attempt,) = store.attempts_of(run.id)
    assert attempt.usage == usage


@EACH_PLAN
def test_a_deferral_waits_for_the_provider_and_is_not_counted(plan_store: Store) -> None:
    (run,) = plan_store.commit_tick([new_run("k1")], [], [], T0)
    started = plan_store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert started is not None
    outcome = deferred(ProviderUnavailable("api.example", 30.0))
    assert outcome.retry_in is not None and timedelta(seconds=30) <= outcome.retry_in <= timedelta(seconds=45)
    assert plan_store.finish(started, outcome, now=T0) == RunStatus.WAITING
    loaded = plan_store.get_run(run.id)
    assert loaded is not None
    assert (loaded.status, loaded.waiting_for, loaded.deferrals) == (
        RunStatus.WAITING,
        WaitingFor.PROVIDER_UNAVAILABLE,
        1,
    )
    assert loaded.not_before == T0 + outcome.retry_in
    (attempt,) = plan_store.attempts_of(run.id)
    assert attempt.status == AttemptStatus.DEFERRED
    again = plan_store.begin_attempt(run.id, "w1", None, T0 + outcome.retry_in, agent="a")
    assert again is not None and (again.attempt, again.deferrals, again.counted_attempt) == (2, 1, 1)
    assert again.deliveries == 1


def test_retention_deletes_a_runs_steps_with_it(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    started = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert started is not None
    assert store.record_step(started, step(1, "ask", "x"), run_usage={}, attempt_usage={})
    assert store.finish(started, SUCCEEDED, now=T0)
    pruned = prune(store.engine, T0 + timedelta(days=1))
    assert pruned.runs == 1
    assert store.steps_of(run.id) == []


def test_a_step_write_retried_after_its_commit_landed_counts_as_written(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    started = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert started is not None
    record = step(1, "ask", "x")
    assert store.record_step(started, record, run_usage={}, attempt_usage={})
    # the connection broke after COMMIT: the retry finds its own row, not an error
    assert store.record_step(started, record, run_usage={}, attempt_usage={})
    assert len(store.steps_of(run.id)) == 1


def test_a_deferral_gives_its_delivery_back_so_a_revived_run_is_guarded_again(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    for _ in range(3):
        started = store.begin_attempt(run.id, "w1", None, T0 + timedelta(hours=1), agent="a")
        assert started is not None and started.deliveries == 1
        assert store.finish(started, deferred(ProviderUnavailable("p", 0.0)), now=T0)
    loaded = store.get_run(run.id)
    assert loaded is not None and (loaded.deliveries, loaded.deferrals, loaded.attempt) == (0, 3, 3)
