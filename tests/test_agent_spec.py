"""`@agent` options: defaults, validation, backoff and retry classification (pure)."""

from __future__ import annotations

import random
from datetime import timedelta

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
    ],
)
def test_bad_option_values_name_the_field(options: dict[str, object], needle: str) -> None:
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
    with pytest.raises(OutboxValueError, match="not JSON-serialisable"):
        buf.put("audit", "k", {1, 2})
    assert [(w.sink, w.key, w.value) for w in buf.writes] == [("audit", "k", {"n": 1})]
    # Configuration mistakes do not burn retries.
    assert issubclass(UnknownSinkError, NonRetryable) and issubclass(OutboxValueError, NonRetryable)
