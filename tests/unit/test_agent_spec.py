"""`@agent` options: defaults, validation, backoff and retry classification (pure)."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from agents import AgentDefinitionError, Backoff, NonRetryable, agent


def test_defaults_match_the_design_table() -> None:
    @agent("defaults")
    def f(ctx: object, event: object) -> None:
        return None

    assert f.timeout == timedelta(minutes=30)
    assert f.heartbeat_timeout == timedelta(seconds=60)
    assert f.progress_timeout is None
    assert (f.max_attempts, f.max_deliveries, f.queue, f.concurrency) == (3, 5, "agents", None)
    assert f.retry_backoff == Backoff(timedelta(seconds=10), 2.0, timedelta(minutes=10))
    assert len(f.version) == 12 and f.task_name == "agent.defaults"
    assert f(None, None) is None  # the spec still calls the function


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    b = Backoff()
    rng = random.Random(7)
    for n, ceiling in [(0, 10), (1, 20), (2, 40), (5, 320), (6, 600), (20, 600)]:
        delays = [b.delay(n, rng).total_seconds() for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range


class Transient(Exception):
    pass


def test_retry_on_and_non_retryable() -> None:
    @agent("picky", retry_on=Transient)
    def f(ctx: object, event: object) -> None:
        return None

    assert f.retryable(Transient())
    assert not f.retryable(ValueError())

    @agent("default-retry")
    def g(ctx: object, event: object) -> None:
        return None

    assert g.retryable(ValueError()) and not g.retryable(NonRetryable("no"))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"max_attempts": 0}, "max_attempts must be a positive integer"),
        ({"timeout": -1}, "timeout must be positive"),
        ({"retry_on": "ValueError"}, "retry_on must be an exception class"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"budget": {"dollars": 5}}, r"budget has unknown limit\(s\) \['dollars'\]"),
        ({"budget": {"tokens": 0}}, "Budget tokens must be a positive integer"),
        ({"budget": {}}, "Budget needs at least one limit"),
        ({"budget": 100}, "budget must be Budget"),
    ],
)
def test_bad_option_values_name_the_field(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(AgentDefinitionError, match=needle):
        agent("bad", **options)(lambda ctx, event: None)


def test_async_agents_are_detected() -> None:
    @agent("async-one")
    async def f(ctx: object, event: object) -> None:
        return None

    assert f.is_async


def test_outbox_buffer_validates_at_put() -> None:
    from agents import OutboxBuffer, OutboxValueError, UnknownSinkError

    buf = OutboxBuffer({"audit"})
    buf.put("audit", "k", {"n": 1})
    with pytest.raises(UnknownSinkError, match="registered sinks: audit"):
        buf.put("crm", "k", 1)
    with pytest.raises(OutboxValueError, match="JSON cannot carry"):
        buf.put("audit", "k", {1, 2})
    assert [(w.sink, w.key, w.value) for w in buf.writes] == [("audit", "k", {"n": 1})]
    # Configuration mistakes do not burn retries.
    assert issubclass(UnknownSinkError, NonRetryable) and issubclass(OutboxValueError, NonRetryable)


def test_a_budget_cancels_the_context_once_usage_goes_past_it() -> None:
    import logging

    from agents import AgentContext, Budget, OutboxBuffer

    ctx = AgentContext(
        run_id="r",
        idempotency_key="k",
        attempt=1,
        logical_time=None,
        trigger=None,
        agent="a",
        fence=1,
        deadline=None,
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        outbox=OutboxBuffer(frozenset()),
        _budget=Budget(tokens=1000, cost_usd=0.5),
    )
    ctx.usage(tokens=600, cost_usd=0.2)
    ctx.usage(tokens=400)  # exactly at the limit is within it
    assert not ctx.cancelled and ctx.over_budget is None
    ctx.usage(cost_usd=0.31)
    assert ctx.cancelled and ctx.over_budget == "cost_usd"
    ctx.usage(tokens=5000)  # the first limit crossed stays the reason
    assert ctx.over_budget == "cost_usd"
    assert agent("capped", budget=Budget(tool_calls=20))(lambda c, e: None).budget == Budget(tool_calls=20)


def test_outbox_values_over_the_configured_limit_are_refused_at_put(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents import OutboxBuffer, OutboxValueError
    from scheduler.core.settings import Settings

    monkeypatch.setenv("NIGHTOWL_OUTBOX_MAX_VALUE_BYTES", "100")
    limit = Settings(_env_file=None).outbox_max_value_bytes
    buf = OutboxBuffer({"audit"}, limit)
    buf.put("audit", "small", {"n": 1})
    with pytest.raises(OutboxValueError, match="NIGHTOWL_OUTBOX_MAX_VALUE_BYTES"):
        buf.put("audit", "big", {"text": "x" * 200})
    assert [w.key for w in buf.writes] == ["small"]  # nothing lost, nothing half-written
