"""`ctx.step` in memory: replay, divergence, async steps, nesting, per-step usage, budgets
summed over attempts (the worker's journal is tested in tests/contract and tests/process)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agents import (
    AgentContext,
    Budget,
    BudgetExceeded,
    MemoryJournal,
    NotSerialisable,
    OutboxBuffer,
    StepCursor,
    StepDiverged,
    StepError,
    StepRecord,
    StepTooLarge,
    Usage,
)


def make_ctx(
    journal: MemoryJournal | None = None,
    *,
    attempt: int = 1,
    budget: Budget | None = None,
    base: Usage | None = None,
    max_bytes: int = 256 * 1024,
) -> AgentContext:
    journal = journal or MemoryJournal()
    return AgentContext(
        run_id="r1",
        idempotency_key="k",
        attempt=attempt,
        logical_time=None,
        trigger=None,
        agent="a",
        fence=attempt,
        deadline=None,
        log=logging.LoggerAdapter(logging.getLogger("test")),
        outbox=OutboxBuffer(frozenset()),
        _steps=StepCursor(journal, attempt=attempt, max_bytes=max_bytes),
        _budget=budget,
        _usage_base=base or Usage(),
    )


def test_a_recorded_step_is_replayed_not_called_again() -> None:
    calls: list[str] = []

    def ask(prompt: str) -> dict[str, Any]:
        calls.append(prompt)
        return {"answer": prompt.upper()}

    first = make_ctx()
    assert first.step("ask", ask, "hi") == {"answer": "HI"}
    assert first.step("ask-again", ask, "yo") == {"answer": "YO"}
    journal = first._steps.journal  # type: ignore[union-attr]
    assert isinstance(journal, MemoryJournal)
    second = make_ctx(MemoryJournal(journal.written), attempt=2)
    assert second.step("ask", ask, "hi") == {"answer": "HI"}
    assert second.step("ask-again", ask, "yo") == {"answer": "YO"}
    assert second.step("new", ask, "z") == {"answer": "Z"}
    assert calls == ["hi", "yo", "z"]


def test_a_step_whose_name_differs_from_the_record_names_both() -> None:
    ctx = make_ctx(MemoryJournal([StepRecord(seq=1, name="fetch", result=1)]), attempt=2)
    with pytest.raises(StepDiverged, match=r"'summarise'.*'fetch'"):
        ctx.step("summarise", lambda: 2)


def test_the_result_is_what_a_replay_will_see() -> None:
    ctx = make_ctx()
    pair: Any = ctx.step("t", lambda: (1, 2))
    assert pair == [1, 2]  # JSON round trip: a tuple comes back a list
    with pytest.raises(NotSerialisable, match="step 'bad' result"):
        ctx.step("bad", lambda: {1, 2})
    small = make_ctx(max_bytes=10)
    with pytest.raises(StepTooLarge, match="NIGHTOWL_STEP_MAX_BYTES"):
        small.step("big", lambda: "x" * 100)


def test_async_steps_replay_and_record() -> None:
    calls: list[int] = []

    async def fetch(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0)
        return n * 10

    async def agent(ctx: AgentContext) -> list[int]:
        return [await ctx.step("f1", fetch, 1), await ctx.step("f2", fetch, 2)]

    first = make_ctx()
    assert asyncio.run(agent(first)) == [10, 20]
    journal = first._steps.journal  # type: ignore[union-attr]
    assert isinstance(journal, MemoryJournal)
    assert asyncio.run(agent(make_ctx(MemoryJournal(journal.written), attempt=2))) == [10, 20]
    assert calls == [1, 2]


def test_steps_cannot_nest() -> None:
    ctx = make_ctx()
    with pytest.raises(StepError, match="cannot nest"):
        ctx.step("outer", lambda: ctx.step("inner", lambda: 1))


def test_usage_inside_a_step_is_the_steps_and_the_runs() -> None:
    ctx = make_ctx(base=Usage(tokens=5))

    def call() -> str:
        ctx.usage(tokens=100, cost_usd=0.5)
        return "ok"

    ctx.step("llm", call)
    ctx.usage(tool_calls=1)
    journal = ctx._steps.journal  # type: ignore[union-attr]
    assert isinstance(journal, MemoryJournal)
    assert journal.written[0].usage == {"tokens": 100, "cost_usd": 0.5, "tool_calls": 0}
    assert journal.usage == {"tokens": 105, "cost_usd": 0.5, "tool_calls": 0, "steps": 1}
    assert ctx.run_usage.as_dict() == {"tokens": 105, "cost_usd": 0.5, "tool_calls": 1}
    assert ctx.usage_totals.tokens == 100


def test_the_budget_is_for_the_run_across_attempts() -> None:
    ctx = make_ctx(budget=Budget(tokens=1000), base=Usage(tokens=950), attempt=3)
    assert ctx.over_budget is None
    ctx.usage(tokens=100)
    assert ctx.over_budget == "tokens" and ctx.cancelled
    with pytest.raises(BudgetExceeded, match="tokens"):
        ctx.step("more", lambda: 1)
    spent = make_ctx(budget=Budget(cost_usd=1.0), base=Usage(cost_usd=2.0), attempt=2)
    assert spent.over_budget == "cost_usd"  # an earlier attempt already spent it all


def test_max_steps_stops_a_loop_at_the_step_past_it() -> None:
    ctx = make_ctx(budget=Budget(max_steps=3))
    done = [ctx.step(f"s{i}", lambda: 1) for i in range(3)]
    assert done == [1, 1, 1]
    with pytest.raises(BudgetExceeded, match="max_steps"):
        ctx.step("s3", lambda: 1)
    assert ctx.over_budget == "max_steps"


def test_usage_refuses_negative_and_non_numbers() -> None:
    ctx = make_ctx()
    with pytest.raises(ValueError, match="tokens"):
        ctx.usage(tokens=-1)


def test_a_step_that_raised_takes_no_place_in_the_record() -> None:
    """An agent that catches a failed call and calls again: the retry of the run must hand
    each call its own answer (a failed call once shifted every later one by a place)."""
    failures = {"q2": 1}

    def ask(question: str) -> str:
        if failures.get(question):
            failures[question] -= 1
            raise TimeoutError(question)
        return f"answer to {question}"

    def agent(ctx: AgentContext) -> list[str]:
        answers = []
        for q in ("q1", "q2", "q3"):
            try:
                answers.append(ctx.step("ask", ask, q))
            except TimeoutError:
                answers.append(ctx.step("ask", ask, q))
        return answers

    first = make_ctx()
    assert agent(first) == ["answer to q1", "answer to q2", "answer to q3"]
    journal = first._steps.journal  # type: ignore[union-attr]
    assert isinstance(journal, MemoryJournal)
    assert [(r.seq, r.occurrence) for r in journal.written] == [(1, 1), (2, 2), (3, 3)]
    again = make_ctx(MemoryJournal(journal.written), attempt=2)
    assert agent(again) == ["answer to q1", "answer to q2", "answer to q3"]
    assert again._steps is not None and again._steps.replayed == 3


def test_a_new_step_while_recorded_ones_remain_is_a_divergence() -> None:
    recorded = MemoryJournal(
        [StepRecord(seq=1, name="fetch", result=1), StepRecord(seq=2, name="rank", result=2)]
    )
    ctx = make_ctx(recorded, attempt=2)
    assert ctx.step("fetch", lambda: 0) == 1
    with pytest.raises(StepDiverged, match=r"'classify' is not in this run's record.*'rank'"):
        ctx.step("classify", lambda: 3)


def test_concurrent_steps_with_their_own_names_replay_whatever_order_they_finish_in() -> None:
    async def summarise(doc: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return f"summary of {doc}"

    async def agent(ctx: AgentContext, delays: dict[str, float]) -> list[str]:
        async def one(doc: str) -> str:
            text: str = await ctx.step(f"fetch:{doc}", summarise, f"text {doc}", delays[doc])
            return await ctx.step(f"summarise:{doc}", summarise, text, delays[doc])

        return list(await asyncio.gather(one("A"), one("B")))

    first = make_ctx()
    expected = ["summary of summary of text A", "summary of summary of text B"]
    assert asyncio.run(agent(first, {"A": 0.02, "B": 0.0})) == expected
    journal = first._steps.journal  # type: ignore[union-attr]
    assert isinstance(journal, MemoryJournal)
    # The second attempt finishes in the other order: each document still gets its own answers
    again = make_ctx(MemoryJournal(journal.written[:3]), attempt=2)
    assert asyncio.run(agent(again, {"A": 0.0, "B": 0.02})) == expected


def test_a_step_name_longer_than_the_column_is_refused_before_the_call() -> None:
    calls: list[int] = []
    with pytest.raises(StepError, match="over 128"):
        make_ctx().step("fetch " + "x" * 200, lambda: calls.append(1))
    assert calls == []
