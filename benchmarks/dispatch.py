"""10,000 cron triggers due at once: time to first and last message, RSS, against baselines.

Baselines measured in the same run on the same Redis:
- plain Celery `send_task`, one message at a time, 10,000 messages;
- the same messages through kombu's pipelined `Producer.batch`.
Run: `.venv/bin/python benchmarks/dispatch.py [--triggers 10000] [--db postgresql|sqlite]`.
Needs Redis on 127.0.0.1:6379 and, for PostgreSQL, the `test` database on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import types
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._db import create_database, drop_database
from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.core.values import Dispatch
from scheduler.dispatch.service import SchedulerService
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from triggers import load

REDIS = "redis://127.0.0.1:6379/0"


class TimedPublisher(Publisher):
    """Records when each chunk's messages have left for the broker."""

    def __init__(self, app: object) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.count = 0

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        super().publish(dispatches)
        now = time.perf_counter()
        self.count += len(dispatches)
        if self.t_first is None:
            self.t_first = now
        self.t_last = now


def build_module(n: int) -> str:
    name = f"bench_triggers_{uuid.uuid4().hex[:6]}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    code = (
        "from agents import agent\nfrom triggers import cron\n"
        "@agent('noop')\ndef noop(ctx, event):\n    return None\n"
        f"for i in range({n}):\n    cron('0 * * * *', agent=noop, name=f't{{i}}')\n"
    )
    exec(compile(code, f"<{name}>", "exec"), module.__dict__)
    return name


def baseline_send_task(settings: Settings, n: int) -> float:
    """Plain Celery: one `send_task` per message."""
    app = create_app(settings, load([]))
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("agent.noop", args=[str(i)], queue="bench-baseline", producer=producer)
    elapsed = time.perf_counter() - t0
    app.close()
    return elapsed


def baseline_batch(settings: Settings, n: int) -> float:
    """Pipelined publishing alone (no database), as the scheduler does it."""
    app = create_app(settings, load([]))
    pub = Publisher(app)
    ds = [Dispatch(str(uuid.uuid4()), "noop", "bench-baseline", "t", 0) for _ in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, 500):
        pub.publish(ds[i : i + 500])
    elapsed = time.perf_counter() - t0
    app.close()
    return elapsed


def dispatch_once(n: int, db: str, module: str) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    url = create_database("dispatch", db)
    try:
        settings = Settings(
            _env_file=None,
            database_url=url,
            redis_url=REDIS,  # type: ignore[arg-type]
            redis_prefix=prefix,
            triggers=[module],
        )
        engine = make_engine(url)
        upgrade(engine)
        registry = load(module)
        clock = FakeClock(datetime(2026, 3, 1, 11, 59, 30, tzinfo=UTC))
        pub = TimedPublisher(create_app(settings, registry))
        client = redis.Redis.from_url(REDIS)
        svc = SchedulerService(
            registry=registry,
            store=Store(engine),
            publisher=pub,
            redis_client=client,
            clock=clock,
            key_prefix=prefix,
        )
        svc.tick()  # first sight: every trigger starts from now
        clock.set(datetime(2026, 3, 1, 12, 0, tzinfo=UTC) + timedelta(milliseconds=1))
        t0 = time.perf_counter()
        report = svc.tick()
        t_end = time.perf_counter()
        assert report.inserted == n and pub.count == n, report
        assert pub.t_first is not None and pub.t_last is not None
        queued = sum(int(client.llen(k)) for k in client.scan_iter(match=f"{prefix}agents*"))
        assert queued == n, queued
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        svc.close()
        return {
            "first_ms": (pub.t_first - t0) * 1000,
            "last_ms": (pub.t_last - t0) * 1000,
            "tick_ms": (t_end - t0) * 1000,
        }
    finally:
        drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--triggers", type=int, default=10_000)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.triggers
    module = build_module(n)
    settings = Settings(_env_file=None, redis_url=REDIS, redis_prefix="bench-base:")  # type: ignore[arg-type]
    runs = [dispatch_once(n, args.db, module) for _ in range(args.repeat)]
    send_task_s = statistics.median(baseline_send_task(settings, n) for _ in range(args.repeat))
    batch_s = statistics.median(baseline_batch(settings, n) for _ in range(args.repeat))
    client = redis.Redis.from_url(REDIS)
    client.delete("bench-base:bench-baseline")
    first = statistics.median(r["first_ms"] for r in runs)
    last = statistics.median(r["last_ms"] for r in runs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} triggers due at once on {args.db} (median of {args.repeat}):")
    print(f"  first message after {first:.1f} ms, last after {last:.1f} ms")
    print(
        f"  baseline plain send_task x{n}: {send_task_s * 1000:.0f} ms "
        f"-> nightowl end-to-end dispatch is {send_task_s * 1000 / last:.2f}x its speed"
    )
    print(
        f"  baseline pipelined publish only x{n}: {batch_s * 1000:.0f} ms "
        f"-> nightowl dispatch costs {last / (batch_s * 1000):.2f}x publishing alone"
    )
    print(f"  peak RSS of this process: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
