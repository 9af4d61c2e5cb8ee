"""The baseline: a plain Celery app with a no-op task (Celery's defaults, JSON)."""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "bench-plain:")
app = Celery("plain", broker=BROKER)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_transport_options={"global_keyprefix": PREFIX},
    worker_hijack_root_logger=False,
)
if os.environ.get("BENCH_SAFE") == "1":
    # The reliability settings nightowl always uses, to split their cost from nightowl's own.
    # Task events too: nightowl sends them so Flower can show every agent task, and the
    # worker's main process spends a large share of its time publishing them.
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
_counter = redis.Redis.from_url(BROKER)


@app.task(name="bench.noop")
def noop(i: int) -> None:
    _counter.incr(f"{PREFIX}done")
