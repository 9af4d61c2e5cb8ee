"""End-to-end throughput of no-op runs: nightowl's safe path against plain Celery, one run.

Both sides: two prefork processes, the same Redis, N messages published in one
pipeline, a no-op that INCRs a Redis counter; the clock stops when the counter
reaches N. nightowl additionally loads the run, takes the lease, takes a fence
and commits the fenced result for every run.
Run: `.venv/bin/python benchmarks/throughput.py [--runs 2000] [--db postgresql|sqlite]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._db import create_database, drop_database  # noqa: E402
from benchmarks._harness import Result, ratio, say, stats  # noqa: E402
from scheduler.core.publish import Publisher  # noqa: E402
from scheduler.core.settings import Settings  # noqa: E402
from scheduler.core.values import Dispatch, NewRun  # noqa: E402
from scheduler.storage.engine import make_engine  # noqa: E402
from scheduler.storage.migrate import upgrade  # noqa: E402
from scheduler.storage.store import Store  # noqa: E402
from scheduler.worker.app import create_app  # noqa: E402
from triggers import load  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if b" ready." in line:
            # Keep draining its output, or a full pipe stalls the worker.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("worker did not start")


def wait_count(client: redis.Redis, key: str, n: int, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    while int(client.get(key) or 0) < n:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"only {client.get(key)!r} of {n} done")
        time.sleep(0.005)
    return time.perf_counter()


def plain_celery(n: int, safe: bool = False) -> float:
    prefix = f"bench-plain-{uuid.uuid4().hex[:6]}:"
    env = {**os.environ, "BENCH_PREFIX": prefix, "PYTHONPATH": str(ROOT), "BENCH_SAFE": "1" if safe else "0"}
    proc = start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "benchmarks.plain_celery",
            "worker",
            "--pool=prefork",
            "--concurrency=2",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        env,
    )
    try:
        app = Celery("plain-publisher", broker=REDIS, set_as_current=False)
        app.conf.update(task_serializer="json", broker_transport_options={"global_keyprefix": prefix})
        client = redis.Redis.from_url(REDIS)
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
            for i in range(n):
                app.send_task("bench.noop", args=[i], producer=producer)
        t1 = wait_count(client, f"{prefix}done", n)
        app.close()
        return n / (t1 - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def nightowl(n: int, db: str) -> float:
    """Runs per second of N no-op runs, each published once."""
    return n / nightowl_runs(n, db)["elapsed_s"]


def _drained(client: redis.Redis, prefix: str) -> bool:
    lists = [f"{prefix}agents"] + [f"{prefix}agents\x06\x16{p}" for p in (3, 6, 9)]
    return sum(int(client.llen(k)) for k in lists) == 0 and int(client.hlen(f"{prefix}unacked")) == 0


def nightowl_runs(n: int, db: str, copies: int = 1) -> dict[str, float]:
    """N no-op runs, each run's message published `copies` times: seconds until every run
    executed and every message was consumed, and how many times the agent ran."""
    prefix = f"bench-nightowl-{uuid.uuid4().hex[:6]}:"
    url = create_database("throughput", db)
    try:
        upgrade(make_engine(url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
        env.update(
            {
                "NIGHTOWL_DATABASE_URL": url,
                "NIGHTOWL_REDIS_URL": REDIS,
                "NIGHTOWL_REDIS_PREFIX": prefix,
                "NIGHTOWL_TRIGGERS": "benchmarks.bench_agents",
                "NIGHTOWL_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        proc = start(
            [
                sys.executable,
                "-m",
                "scheduler.cli",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
            ],
            env,
        )
        try:
            settings = Settings(
                _env_file=None,
                database_url=url,
                redis_url=REDIS,
                redis_prefix=prefix,
            )
            store = Store(make_engine(url))
            now = datetime.now(UTC)
            event = {"kind": "manual", "trigger": "bench", "fired_by": "bench"}
            runs = store.commit_tick(
                [
                    NewRun(
                        idempotency_key=f"manual:bench:{i}",
                        trigger="bench",
                        agent="noop",
                        queue="agents",
                        event=event,
                        logical_time=now,
                        agent_version="v",
                    )
                    for i in range(n)
                ],
                [],
                [],
                now,
            )
            publisher = Publisher(create_app(settings, load("benchmarks.bench_agents")))
            client = redis.Redis.from_url(REDIS)
            t0 = time.perf_counter()
            for i in range(0, n, 500):
                chunk = [Dispatch(r.id, "noop", "agents", "bench", 0) for r in runs[i : i + 500]]
                publisher.publish([d for d in chunk for _ in range(copies)])
            t1 = wait_count(client, f"{prefix}done", n)
            while copies > 1 and not _drained(client, prefix):  # the duplicates are consumed too
                time.sleep(0.005)
                t1 = time.perf_counter()
            deadline = time.monotonic() + 60
            while len(store.list_runs(status="succeeded", limit=n)) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not all reach succeeded")
                time.sleep(0.1)
            time.sleep(0.5)  # a duplicate executed late would count now
            executions = int(client.get(f"{prefix}done") or 0)
            publisher.close()
            store.engine.dispose()
            return {"elapsed_s": t1 - t0, "executions": float(executions)}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        drop_database(url)


def run(quick: bool) -> Result:
    """run_throughput: N no-op runs end to end, 2 prefork worker processes, PostgreSQL,
    against plain Celery with its defaults and with the same knobs (acks_late, prefetch 1,
    task events), interleaved so the machine's drift hits every side alike."""
    n, repeat = (300, 1) if quick else (10_000, 3)
    rows: list[dict[str, float]] = []
    for r in range(repeat):
        say(f"run_throughput: {n} runs, round {r + 1}/{repeat}")
        rows.append(
            {
                "plain_defaults": plain_celery(n),
                "plain_same_knobs": plain_celery(n, safe=True),
                "nightowl": nightowl(n, "postgresql"),
            }
        )
    got = stats(rows, {k: "runs/s" for k in rows[0]})
    to_plain = ratio(got["nightowl"].median, got["plain_defaults"].median)
    to_safe = ratio(got["nightowl"].median, got["plain_same_knobs"].median)
    return Result(
        name="run_throughput",
        figures={"nightowl_runs_per_s": got["nightowl"], "ratio_to_same_knobs": to_safe, "n": n},
        baseline={"plain_defaults": got["plain_defaults"], "plain_same_knobs": got["plain_same_knobs"]},
        ratio=to_plain,
        target=">= 0.5x plain Celery with defaults (ratio), >= 0.8x with the same knobs",
        met=None if quick else to_plain >= 0.5 and to_safe >= 0.8,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plain, safe, ours = [], [], []
    for _ in range(args.repeat):  # interleaved, so drift hits every side alike
        plain.append(plain_celery(args.runs))
        safe.append(plain_celery(args.runs, safe=True))
        ours.append(nightowl(args.runs, args.db))
    p, s, o = statistics.median(plain), statistics.median(safe), statistics.median(ours)
    print(f"{args.runs} no-op runs, 2 prefork processes, median of {args.repeat}:")
    print(f"  plain Celery (defaults):                 {p:7.0f} tasks/s")
    print(f"  plain Celery (acks_late, prefetch 1, events): {s:3.0f} tasks/s")
    print(f"  nightowl safe runs ({args.db}):        {o:7.0f} runs/s")
    print(f"  ratio nightowl / plain defaults: {o / p:.2f}x; / plain with the same knobs: {o / s:.2f}x")


if __name__ == "__main__":
    main()
