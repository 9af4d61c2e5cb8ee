"""Stall detection latency: SIGKILL a worker mid-run, time until the signed alert arrives.

Ten times: a real worker runs an agent with heartbeat_timeout=2 s, it is SIGKILLed,
and a real watchdog (checking every `--interval` seconds) alerts `run_stalled` to a
real HTTP receiver. Reports the median against the configured bound,
heartbeat_timeout + 2 x watchdog_interval.

Run: `.venv/bin/python benchmarks/detection_latency.py [--kills 10] [--interval 0.5]`.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._db import create_database, drop_database
from benchmarks._harness import Result, Stat, ratio, say
from scheduler.alerts import AlertManager, WebhookChannel
from scheduler.core.clock import SystemClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.runs import fire
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.store import Store
from scheduler.watchdog.service import Watchdog
from scheduler.worker.app import create_app
from tests.helpers import WorkerProcess, child_env
from tests.receiver import Receiver
from triggers import load

REDIS = "redis://127.0.0.1:6379/0"
MODULE = "tests.fixtures.stall_agents"
HEARTBEAT_TIMEOUT = 2.0  # the plodder agent's


def measure(kills: int, interval: float) -> list[float]:
    """Seconds from each SIGKILL to its signed `run_stalled` alert at the receiver."""
    url = create_database("dl")
    prefix = f"bench-dl-{uuid.uuid4().hex[:6]}:"
    receiver = Receiver()
    stop = threading.Event()
    try:
        engine = make_engine(url)
        upgrade(engine)
        store = Store(engine)
        settings = Settings(
            _env_file=None,
            database_url=url,
            redis_url=REDIS,
            redis_prefix=prefix,
        )
        registry = load(MODULE)
        client = redis.Redis.from_url(REDIS)
        clock = SystemClock()
        manager = AlertManager(AlertStore(engine), clock, [WebhookChannel(receiver.url, SecretStr("bench"))])
        dog = Watchdog(
            registry=registry,
            store=store,
            alerts=manager,
            redis_client=client,
            clock=clock,
            publisher=None,
            key_prefix=prefix,
        )

        def loop() -> None:
            while not stop.wait(interval):
                dog.check()

        threading.Thread(target=loop, daemon=True).start()
        publisher = Publisher(create_app(settings, registry))
        latencies = []
        for i in range(kills):
            worker = WorkerProcess(child_env(settings, MODULE), "solo", 1)
            worker.wait_ready()
            run_id = fire(store, publisher, registry, "x-plodder", datetime.now(UTC)).run_id
            while client.llen(f"{prefix}marks:{run_id}") == 0:
                time.sleep(0.02)
            time.sleep(0.5)
            worker.proc.send_signal(signal.SIGKILL)
            killed = time.time()
            worker.proc.wait()
            worker.stop()
            while not any(
                r["json"]["run_id"] == run_id and r["json"]["kind"] == "run_stalled"
                for r in receiver.requests
            ):
                if time.time() - killed > 30:
                    raise SystemExit(f"no alert for run {run_id} within 30 s")
                time.sleep(0.01)
            arrived = next(r["at"] for r in receiver.requests if r["json"]["run_id"] == run_id)
            latencies.append(arrived - killed)
            say(f"stall_detection: kill {i + 1}: alert after {arrived - killed:.2f} s")
        publisher.close()
        stop.set()
        dog.resign()
        manager.close()
        engine.dispose()
    finally:
        stop.set()
        receiver.close()
        drop_database(url)
    return latencies


def run(quick: bool) -> Result:
    """stall_detection: SIGKILL a worker mid-run, time to the signed alert, against the
    configured bound heartbeat_timeout + 2 x watchdog_interval."""
    kills, interval = (2, 0.5) if quick else (10, 0.5)
    got = Stat(measure(kills, interval), "s")
    bound = HEARTBEAT_TIMEOUT + 2 * interval
    r = ratio(got.median, bound)
    return Result(
        name="stall_detection",
        figures={"kill_to_alert": got, "kills": kills},
        baseline={
            "bound_s": bound,
            "heartbeat_timeout_s": HEARTBEAT_TIMEOUT,
            "watchdog_interval_s": interval,
        },
        ratio=r,
        target="median kill-to-alert <= the bound (ratio <= 1)",
        met=None if quick else r <= 1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    latencies = measure(args.kills, args.interval)
    bound = HEARTBEAT_TIMEOUT + 2 * args.interval
    print(
        f"median detection latency {statistics.median(latencies):.2f} s "
        f"(min {min(latencies):.2f}, max {max(latencies):.2f}) over {len(latencies)} SIGKILLs; "
        f"configured bound {bound:.2f} s"
    )


if __name__ == "__main__":
    main()
