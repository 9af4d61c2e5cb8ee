"""`agents.testing.AgentEnvironment`: an agent's attempt with a real context, no services."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents import (
    AgentContext,
    AgentSpec,
    BreakerPolicy,
    Budget,
    BudgetExceeded,
    CronTick,
    Event,
    LocalBreaker,
    ManualFire,
    MetricAlert,
    NotSerialisable,
    OutboxWrite,
    ProviderUnavailable,
    QueueDepth,
    RowChange,
    StepDiverged,
    StepRecord,
    UnknownSinkError,
    Usage,
    agent,
    event_from_json,
    event_to_json,
)
from agents._spec import forget_module
from agents.testing import (
    DEFAULT_TIME,
    EVENT_KINDS,
    AgentEnvironment,
    cron_tick,
    event_for,
    logical_time_of,
    manual_fire,
    metric_alert,
    queue_depth,
    row_change,
)

SLOT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _forget_agents() -> Any:
    """Agents declared here must not reach another test's registry."""
    yield
    forget_module(__name__)


def _digest() -> AgentSpec:
    @agent("digest", budget=Budget(tokens=1_000))
    def digest(ctx: AgentContext, event: CronTick) -> dict[str, Any]:
        ctx.heartbeat("fetched", rows=3)
        ctx.heartbeat("summarised", rows=3, words=40)
        ctx.log.info("digest for %s", event.scheduled_for.date())
        ctx.usage(tokens=120, cost_usd=0.01, tool_calls=1)
        ctx.outbox.put("audit", f"digest:{ctx.logical_time:%Y-%m-%d}", {"rows": 3})
        return {"slot": event.scheduled_for.isoformat(), "pair": (1, 2)}

    return digest


# -- what a run captures -----------------------------------------------------------------


def test_a_sync_agent_is_captured_as_the_worker_would_record_it() -> None:
    out = AgentEnvironment().run(_digest(), cron_tick("digest-9am", scheduled_for=SLOT))
    assert out.status == "succeeded" and out.succeeded and out.error is None
    assert out.result == {"slot": SLOT.isoformat(), "pair": [1, 2]}  # JSON round-tripped
    assert out.heartbeats == [("fetched", {"rows": 3}), ("summarised", {"rows": 3, "words": 40})]
    assert out.last_heartbeat == {"note": "summarised", "details": {"rows": 3, "words": 40}}
    assert out.outbox == [OutboxWrite("audit", "digest:2026-03-02", {"rows": 3})]
    assert out.usage == Usage(120, 0.01, 1) == out.run_usage
    assert out.logs == ["INFO digest for 2026-03-02"]
    assert out.agent == "digest" and out.steps == [] and out.replayed == 0
    assert 0 <= out.duration_s < 1
    shown = json.loads(json.dumps(out.as_dict()))
    assert shown["status"] == "succeeded" and shown["event"]["kind"] == "cron"
    assert shown["outbox"] == [{"sink": "audit", "key": "digest:2026-03-02", "value": {"rows": 3}}]
    assert shown["heartbeats"][0] == {"note": "fetched", "details": {"rows": 3}}
    assert out.raise_error() is out


def test_an_async_agent_runs_its_async_steps_and_is_captured() -> None:
    calls: list[str] = []

    async def ask(prompt: str) -> dict[str, str]:
        calls.append(prompt)
        await asyncio.sleep(0)
        return {"answer": prompt.upper()}

    @agent("asker")
    async def asker(ctx: AgentContext, event: ManualFire) -> dict[str, Any]:
        ctx.heartbeat("asking")
        first = await ctx.step("ask", ask, "one")
        ctx.usage(tokens=5)
        return {"first": first, "payload": event.payload}

    out = AgentEnvironment().run(asker, manual_fire(payload={"q": 1}))
    assert out.status == "succeeded", out.error
    assert out.result == {"first": {"answer": "ONE"}, "payload": {"q": 1}}
    assert out.heartbeats == [("asking", {})] and calls == ["one"]
    assert [(s.seq, s.name, s.result, s.attempt) for s in out.steps] == [(1, "ask", {"answer": "ONE"}, 1)]


def test_an_async_agent_runs_from_inside_a_running_event_loop() -> None:
    async def plain(ctx: AgentContext, event: Event) -> str:
        await asyncio.sleep(0)
        return "ok"

    async def from_a_test() -> Any:
        return AgentEnvironment().run(plain)

    out = asyncio.run(from_a_test())
    assert (out.status, out.result) == ("succeeded", "ok")


def test_the_context_shows_the_simulated_attempt() -> None:
    seen: dict[str, Any] = {}

    def look(ctx: AgentContext, event: Event) -> None:
        seen.update(
            run_id=ctx.run_id,
            key=ctx.idempotency_key,
            attempt=ctx.attempt,
            fence=ctx.fence,
            logical_time=ctx.logical_time,
            trigger=ctx.trigger,
            agent=ctx.agent,
            previous=ctx.previous_heartbeat,
            deadline=ctx.deadline,
        )
        assert ctx.previous_heartbeat is not None
        ctx.previous_heartbeat["details"]["done"] = 99  # the environment keeps its own copy

    previous = {"note": "halfway", "details": {"done": 5}}
    env = AgentEnvironment(
        logical_time=SLOT, attempt=3, run_id="r-1", trigger="nightly", previous_heartbeat=previous
    )
    assert env.run(look).status == "succeeded"
    assert seen == {
        "run_id": "r-1",
        "key": "test:r-1",
        "attempt": 3,
        "fence": 3,
        "logical_time": SLOT,
        "trigger": "nightly",
        "agent": "look",
        "previous": {"note": "halfway", "details": {"done": 99}},
        "deadline": None,
    }
    env.run(look)
    assert seen["previous"]["details"] == {"done": 99} and previous["details"] == {"done": 5}


def test_logical_time_and_trigger_come_from_the_event_unless_given() -> None:
    def when(ctx: AgentContext, event: Event) -> list[Any]:
        assert ctx.logical_time is not None
        return [ctx.logical_time.isoformat(), ctx.trigger]

    env = AgentEnvironment()
    assert env.run(when, cron_tick("nine", scheduled_for=SLOT)).result == [SLOT.isoformat(), "nine"]
    stamp = "2026-03-02T08:00:00+00:00"
    assert env.run(when, row_change(version=stamp)).result == [stamp, "test"]
    assert env.run(when, metric_alert(since=SLOT)).result == [DEFAULT_TIME.isoformat(), "test"]
    assert env.run(when).result == [DEFAULT_TIME.isoformat(), "test"]
    pinned = AgentEnvironment(logical_time=SLOT, trigger="t")
    assert pinned.run(when, cron_tick(scheduled_for=DEFAULT_TIME)).result == [SLOT.isoformat(), "t"]


def test_the_agent_gets_the_event_as_stored_json_rebuilds_it() -> None:
    got: list[Any] = []
    AgentEnvironment().run(lambda ctx, event: got.append(event), row_change(version=SLOT))
    (event,) = got
    assert isinstance(event, RowChange) and event.version == SLOT.isoformat().replace("+00:00", "Z")
    with pytest.raises(ValueError, match=r"event.row.x is nan"):
        AgentEnvironment().run(lambda ctx, event: None, row_change(row={"x": float("nan")}))
    with pytest.raises(TypeError, match="event must be a CronTick"):
        AgentEnvironment().run(lambda ctx, event: None, {"kind": "manual"})  # type: ignore[arg-type]


def test_logs_are_captured_with_their_level_and_reach_the_logging_configuration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def chatty(ctx: AgentContext, event: Event) -> None:
        ctx.log.debug("detail %d", 1)
        ctx.log.warning("careful")
        try:
            raise KeyError("k")
        except KeyError:
            ctx.log.exception("caught")

    with caplog.at_level(logging.WARNING, logger="nightowl.testing"):
        out = AgentEnvironment().run(chatty)
    assert out.logs[:2] == ["DEBUG detail 1", "WARNING careful"]
    assert out.logs[2].startswith("ERROR caught\nTraceback") and "KeyError: 'k'" in out.logs[2]
    assert [r.getMessage() for r in caplog.records] == ["careful", "caught"]


# -- the outbox --------------------------------------------------------------------------


def test_any_sink_is_accepted_unless_the_sinks_are_named() -> None:
    def write(ctx: AgentContext, event: Event) -> None:
        ctx.outbox.put("events", "k", {"v": 1})

    assert AgentEnvironment().run(write).outbox == [OutboxWrite("events", "k", {"v": 1})]
    strict = AgentEnvironment(sinks=["audit"]).run(write)
    assert strict.status == "failed" and isinstance(strict.error, UnknownSinkError)
    assert "registered sinks: audit" in str(strict.error) and strict.outbox == []


# -- steps -------------------------------------------------------------------------------


def _stepper(calls: list[str]) -> AgentSpec:
    def fetch() -> dict[str, int]:
        calls.append("fetch")
        return {"rows": 3}

    @agent("stepper")
    def stepper(ctx: AgentContext, event: Event) -> dict[str, Any]:
        def summarise(rows: int) -> str:
            calls.append("summarise")
            ctx.usage(tokens=7)  # inside the step: the step's usage too
            return f"{rows} rows"

        fetched = ctx.step("fetch", fetch)
        ctx.usage(tokens=10)
        text = ctx.step("summarise", summarise, fetched["rows"])
        return {"text": text}

    return stepper


def test_seeded_steps_replay_and_their_usage_counts_towards_the_run() -> None:
    calls: list[str] = []
    seeded = StepRecord(seq=1, name="fetch", result={"rows": 4}, usage={"tokens": 50})
    env = AgentEnvironment(attempt=2, steps=[seeded])
    out = env.run(_stepper(calls))
    assert out.status == "succeeded", out.error
    assert calls == ["summarise"] and out.replayed == 1
    assert out.result == {"text": "4 rows"}  # the recorded answer, not a fresh call's
    assert [(s.seq, s.name, s.attempt, s.usage["tokens"]) for s in out.steps] == [(2, "summarise", 2, 7)]
    assert out.usage.tokens == 17  # what this attempt reported (the replay charged nothing)
    assert out.run_usage.tokens == 67  # plus the seeded step's own usage

    explicit = AgentEnvironment(steps=[("fetch", {"rows": 1})], usage_before={"tokens": 500})
    assert explicit.run(_stepper([])).run_usage.tokens == 517


def test_a_captured_attempt_seeds_the_next_one() -> None:
    calls: list[str] = []
    first = AgentEnvironment(cancel_at_step=2).run(_stepper(calls))
    assert first.status == "cancelled" and calls == ["fetch", "summarise"]
    retry = AgentEnvironment(
        attempt=2,
        steps=first.steps[:1],  # the second step's record was lost with the worker
        usage_before=first.run_usage,
        previous_heartbeat=first.last_heartbeat,
    )
    second = retry.run(_stepper(calls))
    assert calls == ["fetch", "summarise", "summarise"] and second.replayed == 1
    assert second.run_usage.tokens == 17 + 17


def test_seeded_steps_that_do_not_match_fail_with_step_diverged() -> None:
    out = AgentEnvironment(steps=[("search", {"hits": 0})]).run(_stepper([]))
    assert out.status == "failed" and isinstance(out.error, StepDiverged)
    assert "'fetch'" in str(out.error) and "'search'" in str(out.error)
    with pytest.raises(StepDiverged):
        out.raise_error()


def test_seeded_steps_must_be_json() -> None:
    with pytest.raises(ValueError, match="fetch"):
        AgentEnvironment(steps=[("fetch", {1, 2})])


def test_a_replayed_result_is_a_fresh_copy_on_every_run() -> None:
    def mutate(ctx: AgentContext, event: Event) -> Any:
        rows = ctx.step("fetch", list)
        rows.append("x")
        return rows

    env = AgentEnvironment(steps=[("fetch", ["a"])])
    assert env.run(mutate).result == ["a", "x"]
    assert env.run(mutate).result == ["a", "x"]


def test_a_step_larger_than_max_step_bytes_fails_not_serialisable() -> None:
    def big(ctx: AgentContext, event: Event) -> None:
        ctx.step("blob", lambda: "x" * 100)

    out = AgentEnvironment(max_step_bytes=50).run(big)
    assert out.status == "failed" and isinstance(out.error, NotSerialisable)
    assert "over the limit of 50" in str(out.error)


# -- cancellation at a chosen point -------------------------------------------------------


def test_cancel_at_heartbeat_sets_cancelled_right_after_that_heartbeat() -> None:
    def beats(ctx: AgentContext, event: Event) -> list[bool]:
        seen = [ctx.cancelled]
        for n in range(4):
            ctx.heartbeat(f"beat {n + 1}")
            seen.append(ctx.cancelled)
        return seen

    out = AgentEnvironment(cancel_at_heartbeat=2).run(beats)
    assert out.result == [False, False, True, True, True]
    assert out.status == "cancelled" and len(out.heartbeats) == 4
    assert AgentEnvironment().run(beats).status == "succeeded"


def test_cancel_at_step_sets_cancelled_when_that_step_begins() -> None:
    def steps(ctx: AgentContext, event: Event) -> list[bool]:
        seen = [ctx.step(f"s{n}", lambda: ctx.cancelled) for n in (1, 2, 3)]
        return [*seen, ctx.cancelled]

    out = AgentEnvironment(cancel_at_step=2).run(steps)
    assert out.result == [False, True, True, True] and out.status == "cancelled"
    replaying = AgentEnvironment(steps=[("s1", False), ("s2", False)], cancel_at_step=2).run(steps)
    assert replaying.result == [False, False, True, True] and replaying.replayed == 2


# -- timeout -------------------------------------------------------------------------------


def test_a_timeout_cancels_a_cooperative_agent_which_ends_timed_out() -> None:
    def patient(ctx: AgentContext, event: Event) -> dict[str, Any]:
        assert ctx.deadline is not None
        began = time.monotonic()
        while not ctx.cancelled:
            time.sleep(0.002)
        return {"stopped_after": time.monotonic() - began}

    out = AgentEnvironment(timeout=timedelta(milliseconds=50)).run(patient)
    assert out.status == "timed_out" and out.error is None
    assert 0 < out.result["stopped_after"] < 1 and out.duration_s >= 0.05


def test_a_timeout_cancels_an_async_agent_task() -> None:
    async def sleeper(ctx: AgentContext, event: Event) -> None:
        await asyncio.sleep(30)

    began = time.monotonic()
    out = AgentEnvironment(timeout=0.05).run(sleeper)
    assert out.status == "timed_out" and isinstance(out.error, asyncio.CancelledError)
    assert time.monotonic() - began < 2


def test_an_agent_that_ignores_its_timeout_is_left_after_the_grace() -> None:
    release = threading.Event()

    def stubborn(ctx: AgentContext, event: Event) -> None:
        release.wait(10)

    began = time.monotonic()
    try:
        out = AgentEnvironment(timeout=0.05, cancel_grace=0.1).run(stubborn)
    finally:
        release.set()
    assert time.monotonic() - began < 2
    assert out.status == "timed_out" and isinstance(out.error, TimeoutError)
    assert "still running 0.1s after its timeout" in str(out.error)


def test_the_grace_after_a_cancel_applies_to_a_run_with_a_timeout() -> None:
    release = threading.Event()

    def stubborn(ctx: AgentContext, event: Event) -> None:
        ctx.heartbeat("one")
        release.wait(10)

    try:
        out = AgentEnvironment(timeout=30, cancel_grace=0.05, cancel_at_heartbeat=1).run(stubborn)
    finally:
        release.set()
    assert out.status == "cancelled" and "after it was cancelled" in str(out.error)


def test_environment_options_are_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        AgentEnvironment(timeout=0)
    with pytest.raises(ValueError, match="cancel_at_step"):
        AgentEnvironment(cancel_at_step=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        AgentEnvironment(logical_time=datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="callable"):
        AgentEnvironment().run(42)  # type: ignore[arg-type]


# -- budget --------------------------------------------------------------------------------


def test_usage_before_counts_towards_the_agents_own_budget() -> None:
    def spend(ctx: AgentContext, event: Event) -> list[Any]:
        ctx.usage(tokens=20)
        return [ctx.cancelled, ctx.over_budget]

    @agent("capped", budget=Budget(tokens=100))
    def capped(ctx: AgentContext, event: Event) -> list[Any]:
        return spend(ctx, event)

    assert AgentEnvironment(usage_before={"tokens": 70}).run(capped).status == "succeeded"
    out = AgentEnvironment(usage_before=Usage(tokens=90)).run(capped)
    assert out.status == "budget_exceeded/tokens" and out.result == [True, "tokens"]
    assert (out.usage.tokens, out.run_usage.tokens) == (20, 110)
    assert "WARNING run over its budget (tokens)" in out.logs[0]
    given = AgentEnvironment(usage_before={"tokens": 90}, budget=Budget(tokens=1_000)).run(capped)
    assert given.status == "succeeded"  # the environment's budget replaces the agent's
    assert AgentEnvironment(budget={"tokens": 10}).run(spend).status == "budget_exceeded/tokens"


def test_a_run_already_over_its_budget_refuses_its_first_step() -> None:
    out = AgentEnvironment(usage_before={"cost_usd": 3.0}, budget=Budget(cost_usd=2.0)).run(_stepper([]))
    assert out.status == "budget_exceeded/cost_usd" and isinstance(out.error, BudgetExceeded)
    assert out.steps == []


def test_max_steps_counts_replayed_steps() -> None:
    out = AgentEnvironment(steps=[("fetch", {"rows": 1})], budget=Budget(max_steps=1)).run(_stepper([]))
    assert out.status == "budget_exceeded/max_steps" and out.replayed == 1


# -- the breaker ---------------------------------------------------------------------------


def test_an_open_breaker_defers_the_run_and_the_environment_keeps_its_state() -> None:
    def call_llm(ctx: AgentContext, event: Event) -> str:
        ctx.breaker.check("openai")
        ctx.breaker.failed("openai")
        return "answered"

    env = AgentEnvironment(breaker=LocalBreaker(BreakerPolicy(failures=2), clock=lambda: 0.0))
    assert env.run(call_llm).status == "succeeded"
    assert env.run(call_llm).status == "succeeded"  # its failure opened the breaker
    out = env.run(call_llm)
    assert out.status == "waiting/provider_unavailable" and isinstance(out.error, ProviderUnavailable)
    assert isinstance(AgentEnvironment().breaker, LocalBreaker)


# -- results ---------------------------------------------------------------------------------


def test_a_result_json_cannot_carry_fails_not_serialisable_naming_the_agent_line() -> None:
    @agent("settish")
    def settish(ctx: AgentContext, event: Event) -> Any:
        return {"ids": {1, 2}}

    out = AgentEnvironment().run(settish)
    assert out.status == "failed" and isinstance(out.error, NotSerialisable)
    assert f"agent 'settish' ({settish.location})" in str(out.error)
    assert "result.ids is a set" in str(out.error) and out.result is None

    def nan(ctx: AgentContext, event: Event) -> float:
        return float("nan")

    plain = AgentEnvironment().run(nan)
    assert isinstance(plain.error, NotSerialisable) and "test_agent_environment.py:" in str(plain.error)
    as_dict = plain.as_dict()
    assert as_dict["error"]["type"] == "NotSerialisable"
    assert as_dict["error"]["traceback"].startswith("Traceback")


def test_the_agents_exception_is_captured_never_raised() -> None:
    def boom(ctx: AgentContext, event: Event) -> None:
        raise RuntimeError("boom")

    out = AgentEnvironment().run(boom)
    assert out.status == "failed" and isinstance(out.error, RuntimeError)
    shown = out.as_dict()["error"]
    assert shown["message"] == "boom"
    assert shown["traceback"].splitlines()[1].lstrip().startswith(f'File "{__file__}"')  # the agent's frame
    with pytest.raises(RuntimeError, match="boom"):
        out.raise_error()


# -- event builders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (cron_tick(), CronTick),
        (row_change(), RowChange),
        (row_change(key=[1, 2]), RowChange),
        (queue_depth(), QueueDepth),
        (queue_depth(state="resolved", depth=10, unacked=2, oldest_age_s=3.5), QueueDepth),
        (metric_alert(), MetricAlert),
        (metric_alert(value=float("inf")), MetricAlert),
        (manual_fire(payload={"a": [1]}), ManualFire),
    ],
)
def test_each_builder_makes_an_event_that_survives_storage(event: Event, kind: type) -> None:
    assert isinstance(event, kind)
    assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_builder_defaults() -> None:
    assert cron_tick() == CronTick(trigger="test", scheduled_for=DEFAULT_TIME, fired_at=DEFAULT_TIME)
    late = cron_tick("x", scheduled_for=SLOT, fired_at=SLOT + timedelta(seconds=3))
    assert late.fired_at - late.scheduled_for == timedelta(seconds=3)
    one = row_change()
    assert (one.table, one.key, one.row, one.version) == ("orders", 1, {"id": 1}, DEFAULT_TIME.isoformat())
    batch = row_change(key=[1, 2])
    assert batch.row == [{"id": 1}, {"id": 2}] and batch.version == [DEFAULT_TIME.isoformat()] * 2
    q = queue_depth()
    assert (q.queue, q.depth, q.state, q.since) == ("emails", 1000, "firing", DEFAULT_TIME)
    assert q.depth > q.threshold
    m = metric_alert()
    assert m.value is not None and (m.name, m.state) == ("error-rate", "firing") and m.value > m.threshold
    assert manual_fire() == ManualFire(trigger="test", payload=None, fired_by="test")


def test_event_for_builds_each_kind_from_its_stored_form() -> None:
    for kind in EVENT_KINDS:
        assert event_for(kind).kind == kind
    stored = event_to_json(cron_tick("nine", scheduled_for=SLOT))
    fields = {k: v for k, v in stored.items() if k != "kind"}
    assert event_for("cron", **fields) == cron_tick("nine", scheduled_for=SLOT)
    assert event_for("metric_alert", value="+Inf").value == float("inf")  # type: ignore[union-attr]
    now = datetime(2026, 5, 1, tzinfo=UTC)
    assert event_for("cron_tick", at=now) == cron_tick(scheduled_for=now)
    assert event_for("queue_depth", at=now, since=SLOT).since == SLOT  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown event kind 'hourly'"):
        event_for("hourly")


def test_logical_time_of_each_event() -> None:
    assert logical_time_of(cron_tick(scheduled_for=SLOT)) == SLOT
    assert logical_time_of(row_change(version="2026-03-02T09:00:00")) == SLOT  # naive means UTC
    assert logical_time_of(row_change(key=[1, 2], version=["2026-01-01T00:00:00Z", SLOT.isoformat()])) == SLOT
    assert logical_time_of(row_change(version=42)) is None  # a sequence cursor
    assert logical_time_of(queue_depth()) is None and logical_time_of(manual_fire()) is None
