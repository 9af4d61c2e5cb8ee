"""The watchdog's fleet alerts with a fake clock, on both databases and real Redis:
provider_unavailable per breaker episode, run_budget_exceeded per run, spend_cap_reached
per agent per window.

Breakers and spend counters are driven as workers drive them (RedisBreaker, SpendCounter on
the test's prefix, on the watchdog's clock); runs are ended by hand through the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from prometheus_client import REGISTRY

from agents import BreakerPolicy, ManualFire, event_to_json
from scheduler.core.breaker import RedisBreaker
from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.core.spend import SpendCounter
from scheduler.core.verdict import EXHAUSTED, Cancel, cancelled
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import NewRun, StartedAttempt, Store
from scheduler.watchdog.service import Watchdog
from tests.helpers import make_watchdog, registry_of

MODULE = "tests.fixtures.fleet_agents"
P = "api.openai.com"


@pytest.fixture
def clock() -> FakeClock:
    """Tomorrow on the hour: Redis expires a spend window's hash by its own clock, so the
    fake windows must end after the real now."""
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return FakeClock(top + timedelta(days=1, minutes=5))


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    """The test's Redis, with a scheduler leader present (so the only alerts are ours)."""
    c = redis.Redis.from_url(settings.require_redis_url())
    c.set(f"{settings.redis_prefix}leader:scheduler", "scheduler:test", ex=600)
    yield c
    c.close()


def fleet_breaker(client: redis.Redis, settings: Settings, clock: FakeClock) -> RedisBreaker:
    """A worker's breaker on the watchdog's clock (the watchdog's default policy)."""
    return RedisBreaker(client, settings.redis_prefix, BreakerPolicy(), lambda: clock.now().timestamp())


def history(store: Store, kind: str) -> list[tuple[str, str]]:
    """(state, dedupe_key) of every stored alert of `kind`, oldest first."""
    return [(a.state, a.dedupe_key) for a in reversed(AlertStore(store.engine).history(kind=kind))]


def gauge(provider: str) -> float | None:
    return REGISTRY.get_sample_value("nightowl_provider_breaker_open", {"provider": provider})


def open_breaker(b: RedisBreaker) -> None:
    for _ in range(b.policy.failures):
        b.failed(P)


def probe(b: RedisBreaker, clock: FakeClock, *, ok: bool) -> None:
    """Wait out open_for, then let the probe report."""
    clock.advance(b.policy.open_for_s + 1)
    b.gate("budgeted").check(P)
    if ok:
        b.succeeded(P)
    else:
        b.failed(P)


def test_one_provider_alert_per_breaker_episode_resolved_when_it_closes(
    settings: Settings, store: Store, client: redis.Redis, clock: FakeClock
) -> None:
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    b = fleet_breaker(client, settings, clock)
    b.gate("budgeted").check(P)  # the agent calls it: the alert names it
    assert dog.check().alerts_sent == 0
    assert gauge(P) == 0
    # Given the breaker opens
    open_breaker(b)
    opened_ms = int(clock.now().timestamp() * 1000)
    key = f"provider_unavailable:{P}:{opened_ms}"
    # Then the next check fires once, and the gauge says so
    assert dog.check().alerts_sent == 1
    assert gauge(P) == 1
    (row,) = AlertStore(store.engine).history(kind="provider_unavailable")
    assert row.details == {"provider": P, "opened_at": clock.now().isoformat(), "agents": ["budgeted"]}
    assert P in row.message and "waiting_for=provider_unavailable" in row.message
    assert row.severity == "warning"
    # A failed probe opens it again: the same episode, nothing new to say
    probe(b, clock, ok=False)
    assert dog.check().alerts_sent == 0
    assert gauge(P) == 1
    # A standby that takes over sends nothing either
    standby = make_watchdog(settings, registry_of(MODULE), clock, owner="standby")
    client.delete(f"{settings.redis_prefix}leader:watchdog")
    report = standby.check()
    assert report.leader and report.alerts_sent == 0
    # When the next probe succeeds, the episode resolves
    probe(b, clock, ok=True)
    assert standby.check().alerts_sent == 1
    assert gauge(P) == 0
    assert standby.check().alerts_sent == 0
    assert history(store, "provider_unavailable") == [("firing", key), ("resolved", key)]


def test_an_episode_between_two_checks_is_still_fired_and_resolved(
    settings: Settings, store: Store, client: redis.Redis, clock: FakeClock
) -> None:
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    b = fleet_breaker(client, settings, clock)
    dog.check()
    # Given a breaker that opened and closed while the watchdog was between checks
    open_breaker(b)
    key = f"provider_unavailable:{P}:{int(clock.now().timestamp() * 1000)}"
    probe(b, clock, ok=True)
    # Then one check fires and resolves it; later checks repeat neither
    assert dog.check().alerts_sent == 2
    clock.advance(1)
    assert dog.check().alerts_sent == 0
    # And the next opening is a new episode with an alert of its own
    clock.advance(5)
    open_breaker(b)
    second = f"provider_unavailable:{P}:{int(clock.now().timestamp() * 1000)}"
    assert dog.check().alerts_sent == 1
    assert history(store, "provider_unavailable") == [
        ("firing", key),
        ("resolved", key),
        ("firing", second),
    ]


def test_a_breaker_state_lost_with_redis_resolves_its_alert(
    settings: Settings, store: Store, client: redis.Redis, clock: FakeClock
) -> None:
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    b = fleet_breaker(client, settings, clock)
    open_breaker(b)
    assert dog.check().alerts_sent == 1
    # When Redis loses every breaker key (a restart without persistence)
    for k in client.scan_iter(match=f"{settings.redis_prefix}breaker:*"):
        client.delete(k)
    # Then the alert does not stay firing forever
    assert dog.check().alerts_sent == 1
    assert [s for s, _ in history(store, "provider_unavailable")] == ["firing", "resolved"]


def _ended(store: Store, clock: FakeClock, agent: str, key: str) -> StartedAttempt:
    (run,) = store.commit_tick(
        [
            NewRun(
                idempotency_key=key,
                trigger=None,
                agent=agent,
                queue="llm",
                event=event_to_json(ManualFire(trigger="manual", fired_by="test")),
                logical_time=clock.now(),
                agent_version="v7",
            )
        ],
        [],
        [],
        clock.now(),
    )
    started = store.begin_attempt(run.id, "worker-1", f"task-{key}", clock.now(), agent=agent)
    assert started is not None
    return started


def test_a_run_stopped_by_its_budget_is_alerted_once(
    settings: Settings, store: Store, client: redis.Redis, clock: FakeClock
) -> None:
    dog = make_watchdog(settings, registry_of(MODULE), clock)
    dog.check()
    # Given a run that went over its token budget, and one that died of attempts
    over = _ended(store, clock, "budgeted", "k1")
    usage = {"tokens": 1500, "cost_usd": 0.2, "tool_calls": 4}
    assert store.finish(over, cancelled(Cancel.budget("tokens"), hard=False), now=clock.now(), usage=usage)
    dead = _ended(store, clock, "plain", "k2")
    assert store.finish(dead, EXHAUSTED, now=clock.now())
    clock.advance(1)
    # Then one run_budget_exceeded names the run, the agent, the limit and the usage
    dog.check()
    dog.check()
    clock.advance(30)  # still inside the re-read overlap
    dog.check()
    rows = AlertStore(store.engine).history(kind="run_budget_exceeded")
    assert [(r.state, r.run_id, r.agent) for r in rows] == [("firing", over.run_id, "budgeted")]
    assert rows[0].details == {
        "limit": "tokens",
        "usage": usage,
        "budget": {"tokens": 1000, "cost_usd": 0.5},
    }
    assert "tokens: 1500 used, 1000 allowed" in rows[0].message
    assert [r.run_id for r in AlertStore(store.engine).history(kind="run_dead")] == [dead.run_id]


def test_a_spend_cap_is_one_alert_per_agent_per_window(
    settings: Settings, store: Store, client: redis.Redis, clock: FakeClock
) -> None:
    registry = registry_of(MODULE)
    cap = registry.agents["capped"].spend_cap
    assert cap is not None
    spend = SpendCounter(client, settings.redis_prefix)
    dog = make_watchdog(settings, registry, clock)
    # Given an agent under its hourly cap, and one without a cap spending freely
    spend.add("capped", cap, clock.now(), tokens=900, cost_usd=0.6)
    spend.add("plain", cap, clock.now(), tokens=10**6, cost_usd=100.0)
    assert dog.check().alerts_sent == 0
    # When it reaches its cap
    spend.add("capped", cap, clock.now(), tokens=100, cost_usd=0.4)
    assert dog.check().alerts_sent == 1
    clock.advance(60)
    assert dog.check().alerts_sent == 0  # still the same window
    start, end = cap.window(clock.now())
    key = f"spend_cap_reached:capped:{int(start.timestamp())}"
    (row,) = AlertStore(store.engine).history(kind="spend_cap_reached")
    assert (row.dedupe_key, row.agent) == (key, "capped")
    details = row.details or {}
    assert details["limit"] == "cost_usd" and details["window_end"] == end.isoformat()
    assert "waiting_for=spend_cap" in row.message
    # Then when the window turns it resolves, and reaching it again is the next window's alert
    clock.set(end)
    assert dog.check().alerts_sent == 1
    spend.add("capped", cap, clock.now(), tokens=0, cost_usd=2.0)
    assert dog.check().alerts_sent == 1
    nxt = f"spend_cap_reached:capped:{int(end.timestamp())}"
    assert history(store, "spend_cap_reached") == [("firing", key), ("resolved", key), ("firing", nxt)]


def test_the_watchdog_reads_the_breaker_with_the_configured_policy(
    settings: Settings, clock: FakeClock
) -> None:
    from scheduler.watchdog.loop import build_watchdog

    tuned = settings.model_copy(update={"breaker_open_for": timedelta(seconds=7)})
    dog: Watchdog = build_watchdog(tuned, registry_of(MODULE), clock)
    try:
        assert dog.fleet.breaker.policy.open_for_s == 7
    finally:
        dog.close()
