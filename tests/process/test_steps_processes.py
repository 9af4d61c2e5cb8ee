"""Durable LLM steps and provider outages with real worker processes and a real HTTP server
speaking the chat-completions wire format (tests/fakellm.py), counted at the server."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from tests import fakellm
from tests.fakellm import FakeLLM
from tests.helpers import WorkerProcess, fire_run, follow_real_time, make_service, registry_of, wait_for

MODULE = "tests.fixtures.llm_agents"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


class Sweeper:
    """The scheduler's sweeper on the real time line: it republishes a run whose worker died
    and a deferred run whose time has come."""

    def __init__(self, settings: Settings) -> None:
        self.clock = FakeClock(datetime.now(UTC))
        self.svc = make_service(settings, registry_of(MODULE), self.clock)
        assert self.svc.hold_leadership()

    def sweep(self) -> None:
        follow_real_time(self.clock)
        self.svc.sweep()

    def until(self, store: Store, run_ids: list[str], done: Callable[[Run], bool], what: str) -> None:
        def check() -> bool:
            self.sweep()
            runs = [store.get_run(r) for r in run_ids]
            return all(r is not None and done(r) for r in runs)

        wait_for(check, timeout=60, interval=0.2, message=what)


def test_a_worker_killed_after_step_3_of_5_makes_5_llm_calls_not_8(
    settings: Settings,
    store: Store,
    fake_llm: FakeLLM,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a worker running an agent that makes five LLM calls, each a durable step
    first = start_worker(MODULE, NIGHTOWL_LLM_BASE_URL=fake_llm.url)
    run_id = fire_run(settings, store, MODULE, "t-five-llm-steps")
    # When the worker is SIGKILLed once step 3 is recorded, before step 4 is called
    wait_for(lambda: len(store.steps_of(run_id)) == 3, timeout=30, message="step 3 to be recorded")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert fake_llm.count() == 3
    start_worker(MODULE, NIGHTOWL_LLM_BASE_URL=fake_llm.url)
    Sweeper(settings).until(store, [run_id], lambda r: r.finished_at is not None, "the run to finish")
    # Then the second attempt replayed steps 1-3 and called the LLM only for 4 and 5
    run = store.get_run(run_id)
    assert run is not None and run.status == "succeeded", (run, first.output())
    assert fake_llm.count() == 5
    assert run.result is not None and run.result["attempt"] == 2
    assert [(s.seq, s.name, s.attempt) for s in store.steps_of(run_id)] == [
        (1, "ask-1", 1),
        (2, "ask-2", 1),
        (3, "ask-3", 1),
        (4, "ask-4", 2),
        (5, "ask-5", 2),
    ]
    # And the answers the agent used are the ones it got the first time
    answers = [s.result["text"] for s in store.steps_of(run_id)]
    assert run.result["answers"] == answers
    # And the run's usage counts each call once (the dead attempt's three included)
    per_call = store.steps_of(run_id)[0].usage["tokens"]
    assert per_call > 0
    assert run.usage is not None and run.usage["tokens"] == 5 * per_call


def test_an_outage_defers_runs_and_they_resume_when_the_provider_recovers(
    settings: Settings,
    store: Store,
    fake_llm: FakeLLM,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given a provider that answers 500 to everything, and a breaker that opens after 2
    fake_llm.set_default(fakellm.server_error())
    start_worker(
        MODULE,
        NIGHTOWL_LLM_BASE_URL=fake_llm.url,
        NIGHTOWL_BREAKER_FAILURES="2",
        NIGHTOWL_BREAKER_OPEN_FOR="2",
    )
    started = time.monotonic()
    run_ids = [fire_run(settings, store, MODULE, "t-one-llm-call") for _ in range(3)]
    # When the runs (each allowed ONE attempt) meet the outage, they wait for the provider
    sweeper = Sweeper(settings)
    sweeper.until(store, run_ids, lambda r: r.deferrals >= 1, "every run to be deferred")
    deferral_s = time.monotonic() - started
    # And once the provider is back, the half-open probe closes the breaker and all finish
    fake_llm.set_default(fakellm.answer("back again", echo=True))
    recovered_at = time.monotonic()
    sweeper.until(store, run_ids, lambda r: r.finished_at is not None, "every run to finish")
    recovery_s = time.monotonic() - recovered_at
    runs = [store.get_run(r) for r in run_ids]
    assert [r.status if r else None for r in runs] == ["succeeded"] * 3
    assert all(r is not None and r.deferrals >= 1 for r in runs)
    print(
        f"outage: all 3 runs deferred after {deferral_s:.1f}s; all succeeded {recovery_s:.1f}s after recovery"
    )


def test_a_runaway_that_kills_its_process_is_stopped_by_the_run_wide_budget(
    pg_settings: Settings,
    pg_store: Store,
    fake_llm: FakeLLM,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Given an endless tool loop whose pool process dies after every third LLM call (15
    # tokens each) and a budget of 100 tokens for the run
    start_worker(MODULE, pool="prefork", concurrency=1, NIGHTOWL_LLM_BASE_URL=fake_llm.url)
    started = time.monotonic()
    run_id = fire_run(pg_settings, pg_store, MODULE, "t-llm-runaway")
    # When it is redelivered after each crash
    Sweeper(pg_settings).until(
        pg_store, [run_id], lambda r: r.finished_at is not None, "the budget to stop it"
    )
    # Then the budget, summed over the attempts, ends it: 7 calls (105 tokens), each paid once
    run = pg_store.get_run(run_id)
    assert run is not None and (run.status, run.terminal_reason) == ("budget_exceeded", "tokens")
    assert fake_llm.count() == 7
    assert run.usage is not None and run.usage["tokens"] == 105
    crashed = [a for a in pg_store.attempts_of(run_id) if a.status == "stalled"]
    assert len(crashed) == 2  # killed after calls 3 and 6; the third attempt crossed the limit
    print(
        f"runaway: {fake_llm.count()} calls, {run.usage['tokens']} tokens of a 100 budget, "
        f"{len(crashed)} crashes, stopped after {time.monotonic() - started:.1f}s"
    )
