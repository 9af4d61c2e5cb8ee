"""The workers' presence in Redis (scheduler/core/presence.py): what `status` lists instead
of waiting out a ping broadcast."""

from __future__ import annotations

import time

import redis

from scheduler.core import keys
from scheduler.core.presence import PRESENCE_TTL, Presence, live_workers


def test_an_entry_is_live_until_it_ages_out(redis_client: redis.Redis, prefix: str) -> None:
    beat = Presence(lambda: redis_client, prefix, "w1@host", ["agents", "slow"])
    beat.write(redis_client, now=1000.0)
    (alive,) = live_workers(redis_client, prefix, now=1000.0 + PRESENCE_TTL)
    assert (alive.hostname, alive.queues) == ("w1@host", ("agents", "slow"))
    # a SIGKILLed worker writes no more: it is gone one TTL after its last write
    assert live_workers(redis_client, prefix, now=1000.0 + PRESENCE_TTL + 0.1) == []


def test_a_day_old_entry_is_deleted_by_a_live_worker(redis_client: redis.Redis, prefix: str) -> None:
    Presence(lambda: redis_client, prefix, "old@host", []).write(redis_client, now=1000.0)
    redis_client.hset(keys.workers(prefix), "garbage@host", b"not json")
    Presence(lambda: redis_client, prefix, "new@host", []).write(redis_client, now=1000.0 + 86_401)
    assert set(redis_client.hkeys(keys.workers(prefix))) == {b"new@host"}


def test_the_thread_writes_again_after_redis_lost_its_data_and_stop_removes_it(
    redis_client: redis.Redis, prefix: str
) -> None:
    beat = Presence(
        lambda: redis.Redis(connection_pool=redis_client.connection_pool), prefix, "w@h", ["q"], every=0.05
    )
    beat.start()
    try:
        deadline = time.monotonic() + 5
        while not live_workers(redis_client, prefix) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [w.hostname for w in live_workers(redis_client, prefix)] == ["w@h"]
        redis_client.delete(keys.workers(prefix))  # Redis lost its data
        deadline = time.monotonic() + 5
        while not live_workers(redis_client, prefix) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [w.hostname for w in live_workers(redis_client, prefix)] == ["w@h"]
    finally:
        beat.stop()
    assert live_workers(redis_client, prefix) == []
