"""queue_depth against real brokers: kombu's Redis priority lists, unacked, RabbitMQ, lists."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.storage.store import Dispatch, Store
from scheduler.worker.app import create_app
from tests.helpers import REDIS_URL, T0, make_service
from tests.polling import Poller, forget, registry_with
from triggers import queue_depth, redis_list

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


def foreign_app(prefix: str) -> Celery:
    """Another team's Celery app on the same Redis, with its own key prefix."""
    app = Celery("shop", broker=REDIS_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    app.conf.task_serializer = "json"
    return app


def reading_of(spec: Any, now: datetime | None = None) -> dict[str, Any]:
    poller = Poller(spec, now or datetime.now(UTC))
    poller.poll()
    assert poller.state is not None and not poller.state.get("failures"), poller.state
    return dict(poller.state["last_reading"])


def test_depth_sums_every_priority_list_and_counts_unacked(prefix: str) -> None:
    # Given a foreign Celery app that sent tasks at priorities 0, 3 and 9
    app = foreign_app(prefix)
    for priority in (0, 0, 3, 9, 9):
        app.send_task("shop.send_email", args=[1], queue="emails", priority=priority)
    client = redis.Redis.from_url(REDIS_URL)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}emails*"))
    assert keys == [f"{prefix}emails", f"{prefix}emails\x06\x163", f"{prefix}emails\x06\x169"]
    spec = queue_depth(
        "emails", agent="on-alert", name="email-backlog", above=3, broker_url=REDIS_URL, key_prefix=prefix
    )
    assert reading_of(spec)["depth"] == 5
    # When a consumer holds one message without acknowledging it (as a busy worker does)
    with app.connection_for_read() as conn:
        held = conn.SimpleQueue("emails").get(timeout=5)
        reading = reading_of(spec)
        # Then it leaves the lists but is reported as unacked, so in-flight work is not lost
        assert (reading["depth"], reading["unacked"]) == (4, 1)
        held.ack()
    assert reading_of(spec)["unacked"] == 0


def test_oldest_age_comes_from_nightowls_published_at_header(
    settings: Settings, store: Store, prefix: str
) -> None:
    # Given two nightowl runs published 40 s apart (in real time: the header is wall-clock)
    registry = registry_with()
    publisher = Publisher(create_app(settings, registry))
    publisher.publish([Dispatch(str(uuid.uuid4()), "on-row", "agents", "t", 0)])
    spec = queue_depth(
        "agents", agent="on-alert", name="backlog", above=0, broker_url=REDIS_URL, key_prefix=prefix
    )
    later = datetime.fromtimestamp(time.time() + 40, UTC)
    publisher.publish([Dispatch(str(uuid.uuid4()), "on-row", "agents", "t", 0)])
    reading = reading_of(spec, later)
    # Then the age is that of the oldest waiting message
    assert reading["depth"] == 2
    assert 39 <= reading["oldest_age_s"] <= 45
    publisher.close()


def test_foreign_messages_without_the_header_still_count(prefix: str) -> None:
    foreign_app(prefix).send_task("shop.x", queue="reports")
    reading = reading_of(
        queue_depth("reports", agent="on-alert", name="r", above=0, broker_url=REDIS_URL, key_prefix=prefix)
    )
    assert (reading["depth"], reading["oldest_age_s"]) == (1, None)


def test_fires_above_and_resolves_below_clear_bound(prefix: str) -> None:
    app = foreign_app(prefix)
    spec = queue_depth(
        "emails",
        agent="on-alert",
        name="email-backlog",
        above=3,
        clear_below=1,
        on_resolve=True,
        broker_url=REDIS_URL,
        key_prefix=prefix,
        every=10,
    )
    poller = Poller(spec, T0)
    for _ in range(4):
        app.send_task("shop.send_email", queue="emails")
    fired = poller.poll().firings
    assert len(fired) == 1
    event = fired[0].event
    assert (event.kind, event.queue, event.depth, event.threshold, event.state) == (  # type: ignore[union-attr]
        "queue_depth",
        "emails",
        4,
        3.0,
        "firing",
    )
    assert event.since == T0  # type: ignore[union-attr]
    client = redis.Redis.from_url(REDIS_URL)
    client.rpop(f"{prefix}emails", 3)  # drained to 1: not yet below clear_below
    assert poller.poll(10).firings == []
    client.rpop(f"{prefix}emails", 1)
    resolved = poller.poll(10).firings
    assert [(f.event.state, f.event.depth) for f in resolved] == [("resolved", 0)]  # type: ignore[union-attr]


def test_any_redis_list_and_any_callable(redis_client: redis.Redis, prefix: str) -> None:
    redis_client.lpush(f"{prefix}jobs", "a", "b", "c")
    spec = queue_depth(
        redis_list(f"{prefix}jobs", redis_url=REDIS_URL), agent="on-alert", name="jobs", above=2
    )
    assert reading_of(spec)["depth"] == 3
    assert reading_of(queue_depth(lambda: 7, agent="on-alert", name="fn", above=2))["depth"] == 7


def test_rabbitmq_queue_depth_through_a_passive_declare() -> None:
    name = f"nightowl-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name, auto_delete=False)
    with Connection(RABBIT_URL, connect_timeout=5) as conn:
        producer = Producer(conn)
        for i in range(3):
            producer.publish(
                {"n": i}, exchange=queue.exchange, routing_key=name, declare=[queue], serializer="json"
            )
        try:
            spec = queue_depth(name, agent="on-alert", name="rabbit", above=2, broker_url=RABBIT_URL)
            deadline = time.monotonic() + 5
            reading = reading_of(spec)
            while reading["depth"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
                reading = reading_of(spec)
            assert reading == {"depth": 3, "unacked": None, "oldest_age_s": None}
            missing = Poller(
                queue_depth(f"{name}-typo", agent="on-alert", name="typo", above=1, broker_url=RABBIT_URL), T0
            )
            missing.poll()
            assert missing.state is not None and "no queue" in missing.state["last_error"]
        finally:
            queue.bind(conn.default_channel).delete()


def test_a_dead_broker_sets_source_failing_in_the_listing(settings: Settings, store: Store) -> None:
    dead = queue_depth(
        "emails",
        agent="on-alert",
        name="dead",
        above=1,
        broker_url="redis://:s3cret-pw@127.0.0.1:1/0",
        timeout=2,
        every=1,
    )
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(dead), clock)
    for _ in range(3):
        svc.tick()
        clock.advance(1)
    row = store.trigger_rows()["dead"]
    assert row.source_failing is True
    assert "s3cret-pw" not in row.state["last_error"] and "s3cret-pw" not in str(dead.source.describe())


def test_without_a_broker_url_it_watches_nightowls_own_queues_under_its_prefix(
    settings: Settings, store: Store
) -> None:
    """`queue_depth("agents")` with no broker_url reads nightowl's broker under
    NIGHTOWL_REDIS_PREFIX: the depth `status` shows, not 0 forever."""
    registry = registry_with()
    publisher = Publisher(create_app(settings, registry))
    for _ in range(3):
        publisher.publish([Dispatch(str(uuid.uuid4()), "on-row", "agents", "t", 0)])
    publisher.close()
    spec = queue_depth("agents", agent="on-alert", name="own-backlog", above=2)
    svc = make_service(settings, registry_with(spec), FakeClock(T0))
    svc.tick()
    state = store.trigger_rows()["own-backlog"].state
    assert state["last_reading"]["depth"] == 3, state
    assert [r.trigger for r in store.list_runs()] == ["own-backlog"]
    assert spec.source.describe()["key_prefix"] == settings.redis_prefix
    # An explicit broker_url reads keys exactly as named (another app's broker)
    named = queue_depth("agents", agent="on-alert", name="named", above=2, broker_url=REDIS_URL)
    assert named.source.describe()["key_prefix"] == ""
