"""Relay faults with real `nightowl relay` processes on PostgreSQL: a webhook receiver that
stalls past the claim TTL while two relays compete, and a sink that kills the relay."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from agents.outbox import OutboxWrite
from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import Store
from tests.helpers import ROOT, T0, Cli, child_env, run_with_writes, wait_for
from tests.receiver import Receiver

MODULE = "tests.fixtures.relay_faults"


@pytest.fixture
def slow_receiver() -> Iterator[Receiver]:
    r = Receiver(delay=1.5)  # each POST takes longer than the 1 s claim TTL below
    yield r
    r.close()


def start_relay(env: dict[str, str], batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "relay", "--batch", str(batch)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_webhook_slower_than_the_claim_ttl_gets_each_entry_once_in_order_across_two_relays(
    pg_settings: Settings,
    pg_store: Store,
    slow_receiver: Receiver,
) -> None:
    clock = FakeClock(T0)
    keys = ["k0", "k1", "k2"]
    # Given four runs that each wrote the next value of three keys to the webhook
    for n in range(4):
        run_with_writes(pg_store, clock, [OutboxWrite("hook", k, n) for k in keys], f"r{n}")
    outbox = OutboxStore(pg_store.engine)
    env = child_env(pg_settings, MODULE, NIGHTOWL_TEST_WEBHOOK_URL=slow_receiver.url, NIGHTOWL_CLAIM_TTL="1")
    # When two relays deliver them to a receiver that takes 1.5 s per POST (claim TTL 1 s)
    relays = [start_relay(env, batch=2) for _ in range(2)]
    try:
        wait_for(
            lambda: outbox.status(datetime.now(UTC))["hook"]["delivered"] == 12,
            timeout=90,
            interval=0.2,
            message="12 deliveries",
        )
        # A relay that had lost a claim would still be posting: give it the time to show.
        time.sleep(3)
    finally:
        for r in relays:
            stop(r)
    # Then the receiver got each entry once, and per key in sequence order
    ids = [req["headers"]["Idempotency-Key"] for req in slow_receiver.requests]
    assert len(ids) == len(set(ids)) == 12, f"duplicates: {sorted(ids)}"
    per_key: dict[str, list[int]] = defaultdict(list)
    for req in slow_receiver.requests:
        per_key[req["json"]["key"]].append(req["json"]["seq"])
    assert dict(per_key) == {k: [1, 2, 3, 4] for k in keys}
    assert all(r.attempts == 1 for r in outbox.rows())  # no claim was taken over


def test_an_entry_whose_delivery_kills_the_relay_goes_dead_after_max_attempts(
    pg_settings: Settings,
    pg_store: Store,
) -> None:
    clock = FakeClock(T0)
    run_with_writes(pg_store, clock, [OutboxWrite("crashy", "k", "boom")], "r1")
    run_with_writes(
        pg_store, clock, [OutboxWrite("crashy", "k", "after"), OutboxWrite("crashy", "other", "fine")], "r2"
    )
    outbox = OutboxStore(pg_store.engine)
    env = child_env(pg_settings, MODULE, NIGHTOWL_CLAIM_TTL="0.3")
    # When relays keep dying on the first entry (os._exit inside the sink, like a segfault)
    deaths = 0
    survivor: subprocess.Popen[bytes] | None = None

    def settled() -> bool:
        return {r.value: r.status for r in outbox.rows()} == {
            "boom": "dead",
            "after": "delivered",
            "fine": "delivered",
        }

    for _ in range(12):
        relay = start_relay(env, batch=10)
        # a relay that died, or one that lives on and settles the rest (no 30 s wait for it)
        wait_for(lambda r=relay: r.poll() is not None or settled(), timeout=30, message="death or settling")  # type: ignore[misc]
        if relay.poll() is None:
            survivor = relay
            break
        assert relay.returncode == 70
        deaths += 1
    try:
        assert survivor is not None, "the relay died on the same entry 12 times: re-claimed forever"
        # Then each of the 8 claims counted, the entry is dead naming why, and the rest flows
        wait_for(settled, timeout=30, message="boom dead, the others delivered")
    finally:
        if survivor is not None:
            stop(survivor)
    assert deaths == 8
    (boom,) = [r for r in outbox.rows() if r.value == "boom"]
    assert boom.attempts == 8 and boom.dead_at is not None
    assert "claimed 8 times and never settled" in boom.last_error


def test_outbox_upgrade_cache_converts_the_registered_caches_old_keys(
    settings: Settings, redis_client: redis.Redis, prefix: str, cli: Cli
) -> None:
    redis_client.set(f"{prefix}c:user:1", json.dumps({"v": 1}))
    redis_client.set(f"{prefix}c:user:1:seq", 4)
    env = child_env(settings, MODULE, NIGHTOWL_TEST_CACHE_PREFIX=f"{prefix}c:")
    command = ("outbox", "upgrade-cache", "--json")
    # A process of its own: the sink module reads NIGHTOWL_TEST_CACHE_PREFIX when imported.
    done = cli(*command, env=env, cwd=ROOT, process=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"converted": {"cache": 1}}
    assert redis_client.hgetall(f"{prefix}c:user:1") == {b"value": b'{"v": 1}', b"seq": b"4"}
    again = cli(*command, env=env, cwd=ROOT, process=True)
    assert json.loads(again.stdout) == {"converted": {"cache": 0}}
