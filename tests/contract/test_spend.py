"""SpendCounter on real Redis: per agent, per window, summed across workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from agents import SpendCap
from scheduler.core import keys
from scheduler.core.spend import SpendCounter
from tests.helpers import REDIS_URL

# Tomorrow at noon: windows end after the real now, since Redis expires a window's hash by
# its own clock (an hour after the window ends).
NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=1)
DAILY = SpendCap(cost_usd=1.0, tokens=10_000)


@pytest.fixture
def clients() -> Iterator[list[redis.Redis]]:
    made: list[redis.Redis] = []
    yield made
    for c in made:
        c.close()


def counter(clients: list[redis.Redis], prefix: str) -> SpendCounter:
    """One worker's counter (its own client)."""
    clients.append(redis.Redis.from_url(REDIS_URL))
    return SpendCounter(clients[-1], prefix)


def test_workers_add_up_to_one_total_per_agent(clients: list[redis.Redis], prefix: str) -> None:
    a, b = counter(clients, prefix), counter(clients, prefix)
    a.add("digest", DAILY, NOON, tokens=1200, cost_usd=0.25)
    b.add("digest", DAILY, NOON + timedelta(hours=3), tokens=800, cost_usd=0.5)
    b.add("triage", DAILY, NOON, tokens=5, cost_usd=0.01)
    assert a.totals("digest", DAILY, NOON) == (2000.0, 0.75)
    assert b.totals("triage", DAILY, NOON) == (5.0, 0.01)
    assert a.totals("nobody", DAILY, NOON) == (0.0, 0.0)
    assert a.reached("digest", DAILY, NOON) is None


def test_reaching_a_limit_names_it_and_the_windows_end(clients: list[redis.Redis], prefix: str) -> None:
    c = counter(clients, prefix)
    c.add("digest", DAILY, NOON, tokens=100, cost_usd=1.0)
    assert c.reached("digest", DAILY, NOON) == ("cost_usd", NOON + timedelta(hours=12))
    tokens_only = SpendCap(tokens=100, per=timedelta(hours=1))
    c.add("triage", tokens_only, NOON, tokens=99, cost_usd=5.0)
    assert c.reached("triage", tokens_only, NOON) is None
    c.add("triage", tokens_only, NOON + timedelta(minutes=30), tokens=1, cost_usd=0.0)
    assert c.reached("triage", tokens_only, NOON + timedelta(minutes=59)) == (
        "tokens",
        NOON + timedelta(hours=1),
    )


def test_a_new_window_starts_at_zero_and_the_old_one_expires(clients: list[redis.Redis], prefix: str) -> None:
    c = counter(clients, prefix)
    hourly = SpendCap(cost_usd=0.5, per=timedelta(hours=1))
    c.add("digest", hourly, NOON + timedelta(minutes=10), tokens=0, cost_usd=0.5)
    assert c.reached("digest", hourly, NOON + timedelta(minutes=59, seconds=59)) is not None
    assert c.reached("digest", hourly, NOON + timedelta(hours=1)) is None
    assert c.totals("digest", hourly, NOON + timedelta(hours=1)) == (0.0, 0.0)
    key = keys.spend(prefix, "digest", int(NOON.timestamp()))
    expires = int(clients[0].expiretime(key))
    assert expires == int((NOON + timedelta(hours=2)).timestamp())  # window end + 1 h


def test_nothing_is_written_for_no_usage(clients: list[redis.Redis], prefix: str) -> None:
    c = counter(clients, prefix)
    c.add("digest", DAILY, NOON, tokens=0, cost_usd=0.0)
    assert list(clients[0].scan_iter(match=f"{prefix}*")) == []


def test_concurrent_adds_lose_nothing(clients: list[redis.Redis], prefix: str) -> None:
    workers = [counter(clients, prefix) for _ in range(4)]

    def spend(c: SpendCounter) -> None:
        for _ in range(50):
            c.add("digest", DAILY, NOON, tokens=3, cost_usd=0.01)

    threads = [threading.Thread(target=spend, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tokens, cost = workers[0].totals("digest", DAILY, NOON)
    assert tokens == 600 and cost == pytest.approx(2.0)
