"""`nightowl agents list` and the breakers in `nightowl status`, through the CLI against the
real databases and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from agents import BreakerPolicy, ManualFire, event_to_json
from scheduler.core.breaker import RedisBreaker
from scheduler.core.settings import Settings
from scheduler.storage.store import NewRun, Store
from tests.helpers import Cli

MODULE = "tests.fixtures.fleet_agents"


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


@pytest.fixture
def breaker(settings: Settings) -> Iterator[RedisBreaker]:
    """A worker's breaker on the test's Redis, with the settings' policy (5 failures)."""
    client = redis.Redis.from_url(settings.require_redis_url())
    yield RedisBreaker(client, settings.redis_prefix, settings.breaker_policy())
    client.close()


def make_runs(store: Store, agent: str, n: int, at: datetime) -> None:
    store.commit_tick(
        [
            NewRun(
                idempotency_key=f"manual:{agent}:{at.isoformat()}:{i}",
                trigger=None,
                agent=agent,
                queue="llm",
                event=event_to_json(ManualFire(trigger="manual", fired_by="test")),
                logical_time=at,
                agent_version="v7",
            )
            for i in range(n)
        ],
        [],
        [],
        at,
    )


def test_agents_list_shows_each_agents_spend_limits_breakers_and_recent_runs(
    settings: Settings, store: Store, breaker: RedisBreaker, cli: Cli
) -> None:
    # Given runs of `budgeted` in the last hour and before it
    now = datetime.now(UTC)
    make_runs(store, "budgeted", 2, now - timedelta(minutes=5))
    make_runs(store, "budgeted", 3, now - timedelta(hours=2))
    # and the two providers its calls went to, one of them open
    gate = breaker.gate("budgeted")
    gate.check("api.openai.com")
    gate.check("localhost:11434")
    for _ in range(settings.breaker_failures):
        gate.failed("api.openai.com")
    # When the operator lists the agents
    out = cli("agents", "list", "--json")
    # Then there is one row per agent, by name, in the documented shape
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert list(rows) == ["budgeted", "capped", "plain"]
    assert rows["budgeted"] == {
        "name": "budgeted",
        "version": "v7",
        "queue": "llm",
        "paused": False,
        "budget": {"tokens": 1000, "cost_usd": 0.5},
        "spend_cap": None,
        "breaker": {"api.openai.com": "open", "localhost:11434": "closed"},
        "runs_last_hour": 2,
    }
    assert rows["capped"]["spend_cap"] == {"per_s": 3600.0, "cost_usd": 1.0}
    assert rows["capped"]["budget"] is None and rows["capped"]["breaker"] == {}
    assert rows["capped"]["runs_last_hour"] == 0 and rows["plain"]["queue"] == "agents"
    assert len(rows["plain"]["version"]) >= 8  # the hash of its source
    # And the table says the same for people
    table = cli("agents", "list")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "VERSION",
        "QUEUE",
        "PAUSED",
        "BUDGET",
        "SPEND_CAP",
        "BREAKER",
        "RUNS_LAST_HOUR",
    ]
    budgeted = next(line for line in lines if line.startswith("budgeted"))
    assert "api.openai.com=open localhost:11434=closed" in budgeted and "tokens=1000" in budgeted


def test_agents_list_needs_no_database_or_redis(cli: Cli) -> None:
    from tests.helpers import bare_env

    out = cli("agents", "list", "--json", env=bare_env(NIGHTOWL_TRIGGERS=MODULE))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["name"], r["breaker"], r["runs_last_hour"]) for r in rows] == [
        ("budgeted", {}, None),
        ("capped", {}, None),
        ("plain", {}, None),
    ]


def test_status_shows_each_providers_breaker(settings: Settings, breaker: RedisBreaker, cli: Cli) -> None:
    breaker.check("localhost:11434")
    breaker.failed("localhost:11434")
    for _ in range(settings.breaker_failures):
        breaker.failed("api.openai.com")
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    breakers = json.loads(out.stdout)["breakers"]
    assert set(breakers) == {"api.openai.com", "localhost:11434"}
    opened = breakers["api.openai.com"]
    assert (opened["state"], opened["failures"]) == ("open", 0)
    assert 0 < opened["retry_in"] <= 30 and datetime.fromisoformat(opened["opened_at"]).tzinfo is not None
    assert breakers["localhost:11434"] == {
        "state": "closed",
        "opened_at": None,
        "failures": 1,
        "retry_in": None,
    }
    screen = cli("status").stdout
    assert "closed (1 recent failure(s))" in screen
    line = next(x for x in screen.splitlines() if x.startswith("breaker api.openai.com"))
    assert f"OPEN, open since {opened['opened_at']}" in line


def test_a_policy_from_the_environment_is_the_one_status_reads(
    settings: Settings, breaker: RedisBreaker, cli: Cli
) -> None:
    quick = RedisBreaker(breaker.client, settings.redis_prefix, BreakerPolicy(failures=1, open_for_s=1))
    quick.failed("api.openai.com")
    out = cli("status", "--json", NIGHTOWL_BREAKER_OPEN_FOR="1")
    assert json.loads(out.stdout)["breakers"]["api.openai.com"]["retry_in"] <= 1
