"""The outbox contract on both databases (in-process relays, a fake clock), plus PostgreSQL
concurrency: fencing, per-key order, two relays, a sink that is down, dead rows and alerts."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from agents.outbox import OutboxWrite
from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.core.verdict import SUCCEEDED, AttemptOutcome
from scheduler.core.vocabulary import AttemptStatus, Delivery, Reason, RunStatus
from scheduler.outbox import Entry, Outcome, RedisCacheSink, SqlAppendSink, WebhookSink, register_sink
from scheduler.relay.service import Relay
from scheduler.storage.engine import make_engine
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.store import Store
from tests.helpers import REDIS_URL, T0, free_port, make_watchdog, registry_of, run_with_writes
from tests.receiver import Receiver

pytestmark = pytest.mark.usefixtures("fresh_sinks")


class Recorder:
    """A sink that records what it receives (and can be told to fail)."""

    def __init__(self) -> None:
        self.got: list[Entry] = []
        self.lock = threading.Lock()

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        with self.lock:
            self.got.extend(entries)
        return [None] * len(entries)

    def describe(self) -> dict[str, Any]:
        return {"kind": "recorder"}


def test_writes_commit_with_success_numbered_per_key(store: Store) -> None:
    clock = FakeClock(T0)
    first = run_with_writes(
        store,
        clock,
        [OutboxWrite("rec", "a", 1), OutboxWrite("rec", "b", 2), OutboxWrite("rec", "a", 3)],
        "r1",
    )
    run_with_writes(store, clock, [OutboxWrite("rec", "a", 4)], "r2")
    rows = OutboxStore(store.engine).rows()
    assert [(r.id, r.key, r.seq, r.value) for r in rows if r.run_id == first.run_id] == [
        (f"{first.run_id}:0", "a", 1, 1),
        (f"{first.run_id}:1", "b", 1, 2),
        (f"{first.run_id}:2", "a", 2, 3),
    ]
    assert [(r.key, r.seq) for r in rows if r.run_id != first.run_id] == [("a", 3)]


def test_a_fenced_out_worker_and_a_failed_run_commit_nothing(store: Store) -> None:
    clock = FakeClock(T0)
    stale = run_with_writes(store, clock, [], "r1", finish=False)
    # A redelivery started the run again (new fence); the stale worker then "succeeds"
    fresh = store.begin_attempt(stale.run_id, "w2", "t2", clock.now(), agent="steady")
    assert fresh is not None
    assert not store.finish(stale, SUCCEEDED, now=clock.now(), outbox=[OutboxWrite("rec", "k", "stale")])
    # The current attempt fails: its writes are dropped too
    failed = AttemptOutcome(RunStatus.FAILED, Reason.ERROR, AttemptStatus.FAILED, Delivery.FAILED)
    assert store.finish(fresh, failed, now=clock.now(), outbox=[OutboxWrite("rec", "k", "failed")])
    assert OutboxStore(store.engine).rows() == []


def test_one_key_is_delivered_in_commit_order(store: Store) -> None:
    clock = FakeClock(T0)
    recorder = Recorder()
    register_sink("rec", recorder)
    for n in range(5):
        run_with_writes(
            store, clock, [OutboxWrite("rec", "k", n), OutboxWrite("rec", f"other{n}", n)], f"r{n}"
        )
    relay = Relay(OutboxStore(store.engine), clock, batch=100)
    relay.drain()
    relay.close()
    assert [e.value for e in recorder.got if e.key == "k"] == [0, 1, 2, 3, 4]
    assert [e.seq for e in recorder.got if e.key == "k"] == [1, 2, 3, 4, 5]
    assert len(recorder.got) == 10


def test_two_relays_share_the_work_and_deliver_nothing_twice(pg_settings: Settings, pg_store: Store) -> None:
    clock = FakeClock(T0)
    recorder = Recorder()
    register_sink("rec", recorder)
    for n in range(150):
        run_with_writes(pg_store, clock, [OutboxWrite("rec", f"k{n}-{i}", i) for i in range(4)], f"r{n}")
    relays = [
        Relay(
            OutboxStore(make_engine(pg_settings.require_database_url())),
            clock,
            batch=10,
            relay_id=f"relay-{i}",
        )
        for i in range(2)
    ]
    by_relay: Counter[str] = Counter()

    def work(relay: Relay) -> None:
        while True:
            report = relay.step()
            by_relay[relay.relay_id] += report.delivered
            if report.claimed == 0:
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=work, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(e.id for e in recorder.got)
    assert len(counts) == 600 and max(counts.values()) == 1
    assert by_relay["relay-0"] > 0 and by_relay["relay-1"] > 0
    for r in relays:
        r.close()
        r.store.engine.dispose()


class RedisServer:
    """A throwaway redis-server the test can stop and start again (a sink that goes down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def cache_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def test_a_down_sink_waits_and_retries_a_dead_one_alerts_others_flow(
    settings: Settings, store: Store, cache_server: RedisServer
) -> None:
    clock = FakeClock(T0)
    broken = Receiver(status=500)
    try:
        tag = f"audit_{int(time.time() * 1000) % 10**8}"
        register_sink("cache", RedisCacheSink(prefix="c:", redis_url=cache_server.url))
        register_sink("hook", WebhookSink(url=broken.url))
        register_sink("audit", SqlAppendSink(tag, db_url=settings.require_database_url()))
        for n in range(5):
            run_with_writes(
                store,
                clock,
                [
                    OutboxWrite("cache", f"u{n}", n),
                    OutboxWrite("hook", f"u{n}", n),
                    OutboxWrite("audit", f"u{n}", n),
                ],
                f"r{n}",
            )
        outbox = OutboxStore(store.engine)
        relay = Relay(outbox, clock, batch=100, max_attempts=3)
        # The cache's Redis is down and the webhook answers 500: only the audit rows land
        relay.step()
        status = outbox.status(clock.now())
        assert status["audit"]["delivered"] == 5
        assert status["cache"]["pending"] == 5 and status["hook"]["pending"] == 5
        assert relay.step().claimed == 0  # backing off: not retried at once
        # When the cache comes back, its rows are delivered on a later attempt
        cache_server.start()
        clock.advance(10)
        relay.step()
        assert outbox.status(clock.now())["cache"]["delivered"] == 5
        assert redis.Redis.from_url(cache_server.url).hget("c:u3", "value") == b"3"
        # And the webhook that never recovers goes dead after max_attempts, with an alert
        dog = make_watchdog(settings, registry_of("tests.fixtures.watch_agents"), clock)
        dog.check()
        for _ in range(5):
            clock.advance(60)
            relay.step()
        assert outbox.status(clock.now())["hook"]["dead"] == 5
        dog.check()
        from scheduler.storage.alert_store import AlertStore

        dead_alerts = [a for a in AlertStore(store.engine).history() if a.kind == "outbox_dead"]
        assert len(dead_alerts) == 5 and "retry --dead" in dead_alerts[0].message
        # `outbox retry --dead` requeues them
        assert outbox.retry_dead("hook", clock.now()) == 5
        assert outbox.status(clock.now())["hook"]["pending"] == 5
        relay.close()
        engine = sa.create_engine(
            settings.require_database_url().replace("postgresql://", "postgresql+psycopg://")
        )
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {tag}"))
        engine.dispose()
    finally:
        broken.close()


def test_delivered_rows_are_pruned_after_retention(store: Store) -> None:
    clock = FakeClock(T0)
    register_sink("rec", Recorder())
    run_with_writes(store, clock, [OutboxWrite("rec", "k", 1)], "r1")
    outbox = OutboxStore(store.engine)
    relay = Relay(outbox, clock)
    relay.drain()
    assert outbox.prune(clock.now() - timedelta(days=7)) == 0
    clock.advance(8 * 86400)
    assert outbox.prune(clock.now() - timedelta(days=7)) == 1
    assert outbox.rows() == []
    relay.close()


def test_sql_sinks_on_sqlite_create_their_tables_without_locking_themselves(tmp_path: Any) -> None:
    """Regression: the append sink created its table on a second connection while its own
    write transaction held SQLite's lock, and waited on itself for the busy timeout."""
    from scheduler.outbox import SqlUpsertSink

    url = f"sqlite:///{tmp_path / 'sinks.db'}"
    started = time.monotonic()
    entries = [Entry(f"r:{i}", "r", "audit", f"k{i}", 1, {"i": i}) for i in range(3)]
    assert SqlAppendSink("audit_trail", db_url=url).deliver(entries) == [None] * 3
    assert SqlUpsertSink("prefs", db_url=url).deliver(entries) == [None] * 3
    assert time.monotonic() - started < 5


class Failing:
    """A sink that refuses every entry with a fixed error text."""

    def __init__(self, error: str) -> None:
        self.error = error

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        return [self.error] * len(entries)

    def describe(self) -> dict[str, Any]:
        return {"kind": "failing"}


def test_a_stored_value_that_is_not_json_goes_dead_and_the_relay_goes_on(tmp_path: Any) -> None:
    """SQLite keeps whatever text it is given (PostgreSQL's jsonb cannot hold such a value):
    a NaN stored before values were checked, or a row edited by hand, used to make every
    claim raise, so the relay retried the same failing step forever."""
    url = f"sqlite:///{tmp_path / 'nightowl.db'}"
    engine = make_engine(url)
    from scheduler.storage.migrate import upgrade

    upgrade(engine)
    store = Store(engine)
    clock = FakeClock(T0)
    recorder = Recorder()
    register_sink("rec", recorder)
    bad_nan = run_with_writes(store, clock, [OutboxWrite("rec", "k", 1)], "r1")
    bad_text = run_with_writes(store, clock, [OutboxWrite("rec", "j", 1)], "r2")
    run_with_writes(store, clock, [OutboxWrite("rec", "k", 2), OutboxWrite("rec", "j", 2)], "r3")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE outbox SET value = :v WHERE run_id = :r"),
            {"v": '{"score": NaN}', "r": bad_nan.run_id},
        )
        conn.execute(
            sa.text("UPDATE outbox SET value = :v WHERE run_id = :r"), {"v": '{"cut": ', "r": bad_text.run_id}
        )
    relay = Relay(OutboxStore(engine), clock)
    report = relay.drain()
    relay.close()
    with engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(sa.text("SELECT run_id, status, last_error FROM outbox"))}
    assert sorted(report.dead) == sorted([f"{bad_nan.run_id}:0", f"{bad_text.run_id}:0"])
    assert rows[bad_nan.run_id].status == "dead"
    assert "not valid JSON" in rows[bad_nan.run_id].last_error
    assert "NaN" in rows[bad_nan.run_id].last_error
    assert "not valid JSON" in rows[bad_text.run_id].last_error
    # The later entries of both keys were delivered (dead rows do not block their key)
    assert sorted((e.key, e.value) for e in recorder.got) == [("j", 2), ("k", 2)]
    engine.dispose()


def test_sink_errors_are_stored_scrubbed_and_without_nul(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A Slack-style webhook carries its secret in the path, and httpx names the URL in its
    errors; a sink error may hold a NUL character, which PostgreSQL's text type refuses."""
    clock = FakeClock(T0)
    broken = Receiver(status=500)
    refused = f"http://127.0.0.1:{free_port()}/services/T0/B0/refusedTOKEN0123"
    try:
        register_sink("hook", WebhookSink(url=f"{broken.url}/services/T0/B0/s3cr3tTOKEN0123"))
        register_sink("gone", WebhookSink(url=refused))
        register_sink("nul", Failing("the sink said \x00 and hung up"))
        run_with_writes(
            store,
            clock,
            [OutboxWrite("hook", "a", 1), OutboxWrite("gone", "a", 1), OutboxWrite("nul", "a", 1)],
            "r1",
        )
        outbox = OutboxStore(store.engine)
        relay = Relay(outbox, clock)
        with caplog.at_level("WARNING", logger="nightowl.relay"):
            report = relay.step()
        relay.close()
    finally:
        broken.close()
    assert report.failed == 3
    errors = {r.sink: r.last_error for r in outbox.rows()}
    assert errors["hook"].startswith("HTTP 500") and "127.0.0.1" in errors["hook"]
    assert "ConnectError" in errors["gone"]
    assert errors["nul"] == "the sink said \\x00 and hung up"
    for text in [*errors.values(), caplog.text]:
        assert "s3cr3tTOKEN" not in text and "refusedTOKEN" not in text and "/services/" not in text
    assert WebhookSink(url=refused).describe()["url"] == refused.split("/services", maxsplit=1)[0]


def cache_entry(n: int, key: str, seq: int, value: Any) -> Entry:
    return Entry(f"run:{n}", "run", "cache", key, seq, value)


def test_the_cache_keeps_one_hash_per_key_and_a_key_ending_in_seq_is_its_own(
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """DESIGN: one hash per key at <prefix><key>, fields value and seq. The two-string format
    kept the sequence at <prefix><key>:seq, which a user key "<key>:seq" overwrote."""
    sink = RedisCacheSink(prefix=prefix, ttl=60, redis_url=REDIS_URL)
    assert sink.deliver([cache_entry(1, "a", 5, {"v": "a5"}), cache_entry(2, "a:seq", 1, "mine")]) == [
        None,
        None,
    ]
    # An older write of "a" (a redelivery) is still dropped: its sequence was not clobbered
    assert sink.deliver([cache_entry(3, "a", 3, {"v": "a3"})]) == [None]
    assert redis_client.type(f"{prefix}a") == b"hash"
    assert redis_client.hgetall(f"{prefix}a") == {b"value": b'{"v": "a5"}', b"seq": b"5"}
    assert redis_client.hgetall(f"{prefix}a:seq") == {b"value": b'"mine"', b"seq": b"1"}
    assert 0 < redis_client.pttl(f"{prefix}a") <= 60_000
    assert sink.get("a") == {"v": "a5"} and sink.get("a:seq") == "mine" and sink.get("b") is None
    assert sorted(redis_client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}a".encode(),
        f"{prefix}a:seq".encode(),
    ]


def test_an_old_two_string_cache_key_is_converted_on_its_next_write_or_by_upgrade_keys(
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    # Given keys written by the previous version: a value string and a :seq string each
    for key, value, seq in (("old", {"v": 4}, 4), ("idle", {"v": 9}, 9), ("gone", 1, 2)):
        redis_client.set(f"{prefix}{key}", json.dumps(value), px=100_000)
        redis_client.set(f"{prefix}{key}:seq", seq, px=100_000)
    sink = RedisCacheSink(prefix=prefix, redis_url=REDIS_URL)
    # When an older entry of "old" is redelivered, it is dropped, and the key converted
    assert sink.deliver([cache_entry(1, "old", 3, {"v": 3})]) == [None]
    assert redis_client.hgetall(f"{prefix}old") == {b"value": b'{"v": 4}', b"seq": b"4"}
    assert not redis_client.exists(f"{prefix}old:seq")
    assert 0 < redis_client.pttl(f"{prefix}old") <= 100_000  # its TTL carried over
    # and a newer one is written
    assert sink.deliver([cache_entry(2, "old", 5, {"v": 5})]) == [None]
    assert sink.get("old") == {"v": 5}
    # The one-off upgrade converts the keys no write touched, and finds nothing the second time
    assert sink.upgrade_keys() == 2
    assert sink.upgrade_keys() == 0
    assert redis_client.hgetall(f"{prefix}idle") == {b"value": b'{"v": 9}', b"seq": b"9"}
    assert sink.get("gone") == 1
    assert sorted(k.decode() for k in redis_client.scan_iter(match=f"{prefix}*")) == [
        f"{prefix}gone",
        f"{prefix}idle",
        f"{prefix}old",
    ]
    assert sink.deliver([cache_entry(3, "idle", 9, {"v": "repeat"})]) == [None]
    assert sink.get("idle") == {"v": 9}


def test_the_audit_sink_writes_created_at_and_renames_an_old_recorded_at_column(
    db_url: str,
) -> None:
    """DESIGN: columns entry_id (UNIQUE), key, value, seq, created_at. Earlier versions
    created `recorded_at`; such a table is renamed in place when the sink first touches it."""
    tag = f"audit_{uuid.uuid4().hex[:8]}"
    engine = make_engine(db_url)
    with engine.begin() as conn:  # the table as the previous version created it, with a row
        conn.execute(
            sa.text(
                f"CREATE TABLE {tag} (entry_id VARCHAR(64) PRIMARY KEY, run_id VARCHAR(36) NOT NULL, "
                "key VARCHAR(512) NOT NULL, seq BIGINT NOT NULL, value JSON NOT NULL, "
                "recorded_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {tag} (entry_id, run_id, key, seq, value) VALUES ('old:0', 'old', 'k', 1, :v)"
            ),
            {"v": '{"n": 0}'},
        )
    try:
        sink = SqlAppendSink(tag, db_url=db_url)
        assert sink.deliver(
            [
                Entry("new:0", "new", "audit", "k", 2, {"n": 1}),
                Entry("old:0", "old", "audit", "k", 1, {"n": 0}),
            ]
        ) == [None, None]
        columns = {c["name"] for c in sa.inspect(engine).get_columns(tag)}
        assert {"entry_id", "key", "value", "seq", "created_at"} <= columns
        assert "recorded_at" not in columns
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT entry_id, seq, created_at FROM {tag} ORDER BY seq")).all()
        assert [(r.entry_id, r.seq) for r in rows] == [("old:0", 1), ("new:0", 2)]
        assert all(r.created_at is not None for r in rows)
        # A fresh table gets created_at directly
        fresh = SqlAppendSink(f"{tag}_new", db_url=db_url)
        assert fresh.deliver([Entry("x:0", "x", "audit", "k", 1, 1)]) == [None]
        assert "created_at" in {c["name"] for c in sa.inspect(engine).get_columns(f"{tag}_new")}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {tag}"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {tag}_new"))
        engine.dispose()


def test_a_relay_whose_claim_was_taken_over_delivers_no_further_entry_of_it(store: Store) -> None:
    """Relay A is stalled inside a sink call past the claim TTL (as a paused process is);
    relay B takes A's expired claims over and delivers them. When A wakes, it must not hand
    the entries it no longer holds to the sink: B already delivered them, and B may already
    be on the key's next entry."""
    clock = FakeClock(T0)

    class Stalling(Recorder):
        one_at_a_time = True

        def __init__(self) -> None:
            super().__init__()
            self.takeover: Relay | None = None

        def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
            takeover, self.takeover = self.takeover, None
            if takeover is not None:  # A's first call: stall past the TTL; B steps meanwhile
                clock.advance(31)
                takeover.drain()
            return super().deliver(entries)

    sink = Stalling()
    register_sink("rec", sink)
    run_with_writes(store, clock, [OutboxWrite("rec", "k1", 1), OutboxWrite("rec", "k2", 1)], "r1")
    run_with_writes(store, clock, [OutboxWrite("rec", "k2", 2)], "r2")
    a = Relay(OutboxStore(store.engine), clock, relay_id="relay-a", claim_refresh=3600)
    b = Relay(OutboxStore(store.engine), clock, relay_id="relay-b")
    sink.takeover = b
    report = a.step()
    a.close()
    b.close()
    got = [(e.key, e.seq) for e in sink.got]
    # k1 was in flight in A when B took it over (at least once: the sink dedupes on the id),
    # but A never sent k2 after B had delivered k2's first and second entries
    assert got.count(("k2", 1)) == 1 and got.count(("k2", 2)) == 1
    assert [g for g in got if g[0] == "k2"] == [("k2", 1), ("k2", 2)]
    assert report.lost == 1
    assert {r.status for r in OutboxStore(store.engine).rows()} == {"delivered"}


def test_a_relay_loop_whose_database_is_gone_logs_one_line_not_a_traceback_per_step(
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from scheduler.core.clock import SystemClock
    from scheduler.relay.loop import RelayLoop

    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nightowl.db'}")  # no such folder
    loop = RelayLoop(Relay(OutboxStore(engine), SystemClock()), poll=0.01)
    with caplog.at_level("INFO", logger="nightowl.relay"):
        loop.start()
        time.sleep(0.5)
        loop.stop()
    engine.dispose()
    lines = [r for r in caplog.records if r.name == "nightowl.relay"]
    assert len(lines) == 1 and "relay step failed: OperationalError" in lines[0].getMessage()
    assert lines[0].exc_info is None
