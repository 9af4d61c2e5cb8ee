"""The outbox end to end with real workers and relays: six sinks, SIGKILLed relays.

PostgreSQL only (real-time process tests run on one backend); the vector sink writes to a
real pgvector.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.runs import fire
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from tests.helpers import ROOT, WorkerProcess, child_env, registry_of, run_of, stream_entries, wait_for
from tests.receiver import Receiver

MODULE = "tests.fixtures.outbox_agents"
RUNS = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(delay=0.01)
    yield r
    r.close()


def outbox_env(settings: Settings, vector_url: str, receiver: Receiver, tag: str) -> dict[str, str]:
    return child_env(
        settings,
        MODULE,
        NIGHTOWL_TEST_OUTBOX_TAG=tag,
        NIGHTOWL_TEST_VECTOR_URL=vector_url,
        NIGHTOWL_TEST_WEBHOOK_URL=receiver.url,
        NIGHTOWL_CLAIM_TTL="2",
    )


def start_relay(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "relay", "--batch", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def delivered(outbox: OutboxStore) -> int:
    return sum(s["delivered"] for s in outbox.status(datetime.now(UTC)).values())


@pytest.mark.timeout(300)  # 25 s alone; on a loaded 2-core machine its 1,200 deliveries take longer
def test_six_sinks_200_runs_relay_sigkilled_twice_each_write_lands_exactly_once(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    pgvector_url: str,
    receiver: Receiver,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = outbox_env(pg_settings, pgvector_url, receiver, tag)
    # Given 200 runs, each writing one fact to six sinks through the outbox
    start_worker(
        MODULE,
        pool="threads",
        concurrency=4,
        **{k: v for k, v in env.items() if k.startswith("NIGHTOWL_TEST") or k == "NIGHTOWL_CLAIM_TTL"},
    )
    registry = registry_of(MODULE)
    publisher = Publisher(create_app(pg_settings, registry))
    for n in range(RUNS):
        fire(
            pg_store,
            publisher,
            registry,
            "x-remember",
            datetime.now(UTC),
            payload={"n": n},
            key=f"remember-{n}",
            force=True,
        )
    publisher.close()
    wait_for(
        lambda: len(pg_store.list_runs(status="succeeded", limit=1000)) == RUNS,
        timeout=120,
        interval=0.2,
        message="200 succeeded runs",
    )
    outbox = OutboxStore(pg_store.engine)
    assert sum(s["pending"] for s in outbox.status(datetime.now(UTC)).values()) == RUNS * 6
    # When a relay is SIGKILLed twice mid-way and restarted each time
    for threshold in (300, 800):
        relay = start_relay(env)
        wait_for(
            lambda t=threshold: delivered(outbox) >= t,  # type: ignore[misc]
            timeout=120,
            interval=0.02,
            message=f"{threshold} deliveries",
        )
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
    final = start_relay(env)
    try:
        wait_for(
            lambda: delivered(outbox) == RUNS * 6, timeout=120, interval=0.2, message="every row delivered"
        )
    finally:
        final.terminate()
        final.wait(timeout=30)
    # Then every sink holds exactly one entry per logical write: none twice, none missing
    engine = pg_store.engine
    with engine.connect() as conn:
        prefs = conn.execute(sa.text(f"SELECT user_key, value, seq FROM prefs_{tag}")).all()
        audit = conn.execute(sa.text(f"SELECT entry_id, key FROM audit_{tag}")).all()
    assert len(prefs) == RUNS and {r.user_key for r in prefs} == {f"user:{n}" for n in range(RUNS)}
    assert all(r.value["n"] == int(r.user_key.split(":")[1]) and r.seq == 1 for r in prefs)
    assert len(audit) == RUNS and len({r.key for r in audit}) == RUNS
    cache_keys = [k.decode() for k in redis_client.scan_iter(match=f"{prefix}cache:user:*")]
    assert len(cache_keys) == RUNS  # one hash per key, nothing beside it
    assert json.loads(redis_client.hget(f"{prefix}cache:user:7", "value") or b"{}") == {
        "n": 7,
        "channel": "email",
    }
    events = stream_entries(redis_client, f"{prefix}events")
    assert len(events) == RUNS and len({e[1][b"entry_id"] for e in events}) == RUNS
    vectors = sa.create_engine(env["NIGHTOWL_TEST_VECTOR_URL"])
    with vectors.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM memory_{tag}")).scalar() == RUNS
    vectors.dispose()
    from scheduler.outbox import VectorSink

    sink = VectorSink(table=f"memory_{tag}", dim=3, db_url=env["NIGHTOWL_TEST_VECTOR_URL"])
    assert sink.nearest([42.0, 1.0, 0.0], k=1)[0][0] == "user:42"  # a real pgvector search
    keys = [r["headers"]["Idempotency-Key"] for r in receiver.requests]
    assert len(set(keys)) == RUNS  # the receiver dedupes on Idempotency-Key
    assert all("X-Nightowl-Signature" in r["headers"] for r in receiver.requests)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE prefs_{tag}"))
        conn.execute(sa.text(f"DROP TABLE audit_{tag}"))


def test_a_failed_run_commits_no_outbox_rows(
    pg_settings: Settings,
    pg_store: Store,
    tmp_path: Path,
    receiver: Receiver,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = outbox_env(pg_settings, f"sqlite:///{tmp_path / 'vectors.db'}", receiver, uuid.uuid4().hex[:8])
    start_worker(MODULE, **{k: v for k, v in env.items() if k.startswith("NIGHTOWL_TEST")})
    registry = registry_of(MODULE)
    publisher = Publisher(create_app(pg_settings, registry))
    run_id = fire(pg_store, publisher, registry, "x-put-then-fail", datetime.now(UTC)).run_id
    publisher.close()
    wait_for(
        lambda: run_of(pg_store, run_id)[0] == "dead",
        timeout=30,
        message="the run to fail (dead: its one attempt failed)",
    )
    assert OutboxStore(pg_store.engine).rows() == []
