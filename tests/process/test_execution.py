"""Terminal reasons with real worker processes: non-retryable, dead + retry, soft and hard
timeouts, cancel, poison; and the CLI verbs `fire`, `runs retry`, `runs cancel`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.models import Run
from scheduler.storage.store import NewRun, Store
from tests.helpers import Cli, WorkerProcess, follow_real_time, make_service, registry_of, wait_for

MODULE = "tests.fixtures.exec_triggers"


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def fire(cli: Cli, trigger: str, *extra: str) -> str:
    out = cli("fire", trigger, "--json", *extra)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["idempotency_key"].startswith(f"manual:{trigger}:")
    return str(data["run_id"])


def ended(store: Store, run_id: str, timeout: float = 30, sweep: Callable[[], object] | None = None) -> Run:
    def done() -> Run | None:
        if sweep is not None:
            sweep()
        run = store.get_run(run_id)
        return run if run is not None and run.finished_at is not None else None

    result = wait_for(done, timeout=timeout, interval=0.2, message=f"run {run_id} to end")
    assert isinstance(result, Run)
    return result


def real_sweeper(settings: Settings) -> Callable[[], object]:
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(settings, registry_of(MODULE, []), clock)

    def sweep() -> object:
        follow_real_time(clock)
        svc.hold_leadership()
        return svc.sweep()

    return sweep


def test_non_retryable_fails_at_once(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    run = ended(store, fire(cli, "x-refuses"))
    assert (run.status, run.terminal_reason, run.attempt) == ("failed", "non_retryable", 1)
    assert run.error is not None and "retrying cannot help" in run.error


def test_dead_run_is_revived_by_runs_retry(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    run_id = fire(cli, "x-gives-up")
    run = ended(store, run_id)
    assert (run.status, run.terminal_reason, run.attempt) == ("dead", "attempts_exhausted", 1)
    out = cli("runs", "retry", run_id)
    assert out.returncode == 0 and "attempt 2" in out.stdout, out.stderr
    run = ended(store, run_id)
    assert (run.status, run.attempt) == ("dead", 2)
    assert run.error == "RuntimeError: attempt 2 failed"
    (pending,) = store.commit_tick(
        [
            NewRun(
                idempotency_key="manual:x-gives-up:unsent",
                trigger="x-gives-up",
                agent="gives-up",
                queue="agents",
                event={"kind": "manual", "trigger": "x-gives-up", "fired_by": "t"},
                logical_time=None,
                agent_version=None,
            )
        ],
        [],
        [],
        datetime.now(UTC),
    )
    refused = cli("runs", "retry", pending.id)
    assert refused.returncode == 1 and "only dead, failed, timed_out" in refused.stderr


def test_soft_timeout_and_user_cancel(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE, pool="threads", concurrency=2)
    timed = ended(store, fire(cli, "x-polite-slowpoke"))
    assert (timed.status, timed.terminal_reason) == ("timed_out", "soft")
    assert timed.result is not None and timed.result["partial"] is True

    # Cancel while running: the agent sees ctx.cancelled and stops.
    run_id = fire(cli, "x-listener")
    wait_for(lambda: store.attempts_of(run_id), message="the listener to start")
    out = cli("runs", "cancel", run_id)
    assert out.returncode == 0 and "cancel requested" in out.stdout, out.stderr
    run = ended(store, run_id)
    assert (run.status, run.terminal_reason) == ("cancelled", "by_user")
    assert run.result is not None and run.result["stopped_at"] is not None

    # Cancel before it starts (a run nobody has published yet): it never runs.
    (pending,) = store.commit_tick(
        [
            NewRun(
                idempotency_key="manual:x-listener:not-yet",
                trigger="x-listener",
                agent="listener",
                queue="agents",
                event={"kind": "manual", "trigger": "x-listener", "fired_by": "t"},
                logical_time=None,
                agent_version=None,
            )
        ],
        [],
        [],
        datetime.now(UTC),
    )
    out = cli("runs", "cancel", pending.id)
    assert out.returncode == 0 and "before it started" in out.stdout, out.stderr
    never = store.get_run(pending.id)
    assert never is not None and (never.status, never.terminal_reason) == ("cancelled", "by_user")
    assert store.attempts_of(pending.id) == []
    again = cli("runs", "cancel", pending.id)
    assert again.returncode == 1 and "already ended" in again.stderr
    assert cli("runs", "cancel", "no-such-run").returncode == 1


@pytest.mark.parametrize("pool", ["prefork"])
def test_hard_timeout_terminates_the_pool_process(
    settings: Settings,
    store: Store,
    start_worker: Callable[..., WorkerProcess],
    pool: str,
    cli: Cli,
) -> None:
    start_worker(MODULE, pool=pool, concurrency=1)
    run = ended(store, fire(cli, "x-stubborn"), timeout=40)
    assert (run.status, run.terminal_reason) == ("timed_out", "hard")
    (attempt,) = store.attempts_of(run.id)
    assert attempt.status == "timed_out"


def test_an_agent_over_its_budget_is_stopped_and_not_retried(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    """Alive and looping is how agents fail: the spend they report stops them."""
    start_worker(MODULE, pool="prefork", concurrency=2)
    polite = ended(store, fire(cli, "x-spendthrift"))
    assert (polite.status, polite.terminal_reason) == ("budget_exceeded", "tokens")
    # It noticed at once: the call that crossed 1,000 tokens was its last
    assert polite.result == {"calls": 4}
    assert polite.usage == {"tokens": 1200, "cost_usd": 0.0, "tool_calls": 4, "steps": 0}
    (attempt,) = store.attempts_of(polite.id)  # max_attempts=3, yet one attempt only
    assert (attempt.status, attempt.reason) == ("budget_exceeded", "tokens")
    # One that keeps going is terminated after cancel_grace, like a hard timeout
    runaway = ended(store, fire(cli, "x-runaway"), timeout=40)
    assert (runaway.status, runaway.terminal_reason) == ("budget_exceeded", "cost_usd")
    assert "still running" in (runaway.error or "") and runaway.result is None


def test_agent_that_kills_its_process_ends_poison(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE, pool="prefork", concurrency=1)
    run = ended(pg_store, fire(cli, "x-crasher"), timeout=60, sweep=real_sweeper(pg_settings))
    assert (run.status, run.terminal_reason) == ("failed", "poison")
    assert run.deliveries == 3  # two started attempts, then the guard
    assert [a.status for a in pg_store.attempts_of(run.id)] == ["stalled", "stalled", "failed"]
