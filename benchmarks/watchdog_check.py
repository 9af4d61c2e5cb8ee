"""A watchdog check over 100,000 heartbeat entries of which 10 expired: it reads only those 10.

Measured in one run, on the same Redis and PostgreSQL:
- `Watchdog.check()` with 1,000 and with 100,000 live entries, 10 of them expired
  (real running attempts in the database, stalled by the check);
- baseline: reading every entry (`ZRANGE 0 -1 WITHSCORES`), what a check that scans all
  running attempts would at least cost.

Run: `.venv/bin/python benchmarks/watchdog_check.py [--entries 100000] [--repeat 9]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import ManualFire, event_to_json
from benchmarks._db import create_database, drop_database
from benchmarks._harness import Result, Stat, ratio, say
from scheduler.alerts import AlertManager
from scheduler.core.clock import FakeClock
from scheduler.core.heartbeats import HeartbeatIndex, Member
from scheduler.core.values import NewRun
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.store import Store
from scheduler.watchdog.service import Watchdog
from triggers import Registry, load

REDIS = "redis://127.0.0.1:6379/0"
EXPIRED = 10


_round = 0


def one_round(entries: int, store: Store, client: redis.Redis, registry: Registry) -> tuple[float, int]:
    """(seconds for one check, entries it read) with `entries` live deadlines, 10 expired."""
    global _round
    _round += 1
    prefix = f"bench-wd-{uuid.uuid4().hex[:8]}:"
    # Each round an hour apart, so one round's stalls are old history to the next.
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=_round))
    index = HeartbeatIndex(client, prefix)
    far = (clock.now() + timedelta(hours=1)).timestamp()
    index.load(("live", Member(f"busy-{i}", 1, 1), far) for i in range(entries - EXPIRED))
    for i in range(EXPIRED):
        (run,) = store.commit_tick(
            [
                NewRun(
                    idempotency_key=f"{prefix}{i}",
                    trigger=None,
                    agent="steady",
                    queue="agents",
                    event=event_to_json(ManualFire(trigger="manual", fired_by="bench")),
                    logical_time=clock.now(),
                    agent_version=None,
                )
            ],
            [],
            [],
            clock.now(),
        )
        started = store.begin_attempt(run.id, "w", f"t{i}", clock.now(), agent="steady")
        assert started is not None
        index.beat(Member(run.id, 1, started.fence), clock.now().timestamp() + 5, None)
    dog = Watchdog(
        registry=registry,
        store=store,
        alerts=AlertManager(AlertStore(store.engine), clock),
        redis_client=client,
        clock=clock,
        publisher=None,
        key_prefix=prefix,
    )
    dog.check()  # become leader (rebuilds from the database: only the 10 real attempts)
    clock.advance(6)
    t0 = time.perf_counter()
    report = dog.check()
    elapsed = time.perf_counter() - t0
    assert len(report.stalled) == EXPIRED, report.stalled
    dog.resign()
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    return elapsed, report.expired_read


def baseline(entries: int, client: redis.Redis) -> float:
    prefix = f"bench-wd-{uuid.uuid4().hex[:8]}:"
    index = HeartbeatIndex(client, prefix)
    index.load(("live", Member(f"busy-{i}", 1, 1), 1e10) for i in range(entries))
    t0 = time.perf_counter()
    client.zrange(index.live_key, 0, -1, withscores=True)
    elapsed = time.perf_counter() - t0
    client.delete(index.live_key)
    return elapsed


def measure(sizes: list[int], repeat: int) -> list[tuple[list[tuple[float, int]], list[float]]]:
    """For each size: (check seconds, entries read) and read-all seconds, `repeat` times."""
    url = create_database("wd")
    try:
        engine = make_engine(url)
        upgrade(engine)
        store = Store(engine)
        client = redis.Redis.from_url(REDIS)
        registry = load("tests.fixtures.watch_agents")
        out = [
            (
                [one_round(n, store, client, registry) for _ in range(repeat)],
                [baseline(n, client) for _ in range(repeat)],
            )
            for n in sizes
        ]
        engine.dispose()
        return out
    finally:
        drop_database(url)


def run(quick: bool) -> Result:
    """watchdog_scan: one check over N live heartbeats with 10 expired, against reading all
    N entries (what a check scanning every running attempt costs at least)."""
    entries, repeat = (10_000, 3) if quick else (100_000, 9)
    say(f"watchdog_scan: {entries} entries, {EXPIRED} expired, {repeat} rounds")
    ((checks, scans),) = measure([entries], repeat)
    check = Stat([c for c, _ in checks], "s")
    scan = Stat(scans, "s")
    r = ratio(check.median, scan.median)
    return Result(
        name="watchdog_scan",
        figures={"check": check, "entries_read": checks[0][1], "entries": entries},
        baseline={"read_all_entries": scan},
        ratio=r,
        target="check / read-all <= 0.05",
        met=None if quick else r <= 0.05,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    sizes = [1_000, args.entries]
    for entries, (checks, scan) in zip(sizes, measure(sizes, args.repeat), strict=True):
        check_ms = statistics.median(c for c, _ in checks) * 1000
        scan_ms = statistics.median(scan) * 1000
        print(
            f"{entries:>7,} entries, {EXPIRED} expired: check {check_ms:.1f} ms "
            f"(read {checks[0][1]} entries); reading all entries {scan_ms:.1f} ms "
            f"(scan / check = {scan_ms / check_ms:.1f})"
        )


if __name__ == "__main__":
    main()
