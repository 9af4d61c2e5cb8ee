"""The fleet's metrics on a real /metrics endpoint: the breaker gauge a watchdog process
refreshes, and the per-agent usage counters the worker feeds through `record_usage`."""

from __future__ import annotations

import subprocess
import sys

import httpx
import redis
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from agents import BreakerPolicy
from scheduler.core import metrics
from scheduler.core.breaker import RedisBreaker
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import ROOT, child_env, free_port, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_watchdog_serves_each_providers_breaker_as_a_gauge(
    pg_settings: Settings, pg_store: Store
) -> None:
    settings = pg_settings
    client = redis.Redis.from_url(settings.require_redis_url())
    breaker = RedisBreaker(client, settings.redis_prefix, BreakerPolicy(failures=2))
    breaker.check("api.openai.com")
    breaker.check("localhost:11434")
    for _ in range(2):
        breaker.failed("api.openai.com")
    port = free_port()
    env = child_env(settings, "tests.fixtures.fleet_agents", NIGHTOWL_WATCHDOG_INTERVAL="0.2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "watchdog", "--metrics-port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    openai = ("nightowl_provider_breaker_open", (("provider", "api.openai.com"),))
    local = ("nightowl_provider_breaker_open", (("provider", "localhost:11434"),))
    try:
        wait_for(lambda: scrape(port).get(openai) == 1.0, timeout=30, interval=0.2, message="the open gauge")
        assert scrape(port)[local] == 0.0
        # When a call succeeds again, the next check shows it closed
        breaker.succeeded("api.openai.com")
        wait_for(lambda: scrape(port).get(openai) == 0.0, timeout=10, interval=0.2, message="the gauge at 0")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        client.close()


def test_usage_is_counted_per_agent() -> None:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        before = scrape(port)
        tokens = ("nightowl_agent_tokens_total", (("agent", "digest-usage"),))
        cost = ("nightowl_agent_cost_usd_total", (("agent", "digest-usage"),))
        metrics.record_usage("digest-usage", 1200, 0.03)
        metrics.record_usage("digest-usage", 300, 0.01)
        metrics.record_usage("digest-usage", 0, 0.0)  # nothing to count
        after = scrape(port)
        assert after[tokens] - before.get(tokens, 0.0) == 1500
        assert round(after[cost] - before.get(cost, 0.0), 9) == 0.04
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
