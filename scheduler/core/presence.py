"""A worker's presence in Redis: who is alive, and which queues it consumes.

`status` used to broadcast a Celery ping and wait out its one-second timeout to learn
which workers are up. Instead the worker's main process rewrites its entry in one hash
(`keys.workers`) every `PRESENCE_EVERY` seconds; a reader counts an entry as live while it
is younger than `PRESENCE_TTL`. The entry goes when the worker shuts down cleanly; a
SIGKILLed worker's entry ages out within `PRESENCE_TTL`. Redis losing its data costs one
period: the next write puts the entry back. A failing write is logged once per outage
(steplog), never per beat.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from scheduler.core import keys
from scheduler.core.steplog import StepFailures

PRESENCE_EVERY = 5.0
PRESENCE_TTL = 15.0  # three missed writes: gone
FORGET_AFTER = 86_400.0  # entries older than a day are deleted by the next live worker

log = logging.getLogger("nightowl.worker")


@dataclass(frozen=True)
class WorkerPresence:
    hostname: str
    pid: int | None
    queues: tuple[str, ...]
    age_s: float


def live_workers(client: redis.Redis, prefix: str, now: float | None = None) -> list[WorkerPresence]:
    """The workers whose entry is younger than PRESENCE_TTL, by hostname."""
    now = time.time() if now is None else now
    live = []
    for host, raw in client.hgetall(keys.workers(prefix)).items():
        entry = _parsed(raw)
        if entry is None:
            continue
        age = now - entry.get("seen_ms", 0) / 1000
        if age <= PRESENCE_TTL:
            name = host.decode() if isinstance(host, bytes) else str(host)
            pid = entry.get("pid")
            queues = tuple(str(q) for q in entry.get("queues", ()))
            live.append(WorkerPresence(name, pid if isinstance(pid, int) else None, queues, age))
    return sorted(live, key=lambda w: w.hostname)


def _parsed(raw: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Presence:
    """The thread that keeps one worker's entry fresh."""

    def __init__(
        self,
        client_factory: Callable[[], redis.Redis],
        prefix: str,
        hostname: str,
        queues: Sequence[str],
        every: float = PRESENCE_EVERY,
    ) -> None:
        self._factory = client_factory
        self._prefix = prefix
        self._hostname = hostname
        self._queues = sorted(queues)
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = StepFailures(log)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nightowl-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing and remove the entry (a clean shutdown is not a lost worker)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)  # a write in flight ends within its socket timeout
        try:
            client = self._factory()
            try:
                client.hdel(keys.workers(self._prefix), self._hostname)
            finally:
                client.close()
        except redis.RedisError:
            pass  # it ages out within PRESENCE_TTL

    def _run(self) -> None:
        client: redis.Redis | None = None
        swept = False
        while not self._stop.is_set():
            try:
                client = client or self._factory()
                self.write(client, sweep=not swept)
                swept = True
                self._failures.succeeded("presence")
            except redis.RedisError as exc:
                self._failures.failed("presence", exc)
                client = None
            self._stop.wait(self._every)
        if client is not None:
            client.close()

    def write(self, client: redis.Redis, now: float | None = None, *, sweep: bool = True) -> None:
        """This worker's entry; with `sweep` (its first write) also delete entries a day old
        (one HGETALL per worker start, not per beat)."""
        now = time.time() if now is None else now
        entry = {"seen_ms": int(now * 1000), "pid": os.getpid(), "queues": self._queues}
        name = keys.workers(self._prefix)
        client.hset(name, self._hostname, json.dumps(entry))
        if not sweep:
            return
        stale = [
            host
            for host, raw in client.hgetall(name).items()
            if (e := _parsed(raw)) is None or now - e.get("seen_ms", 0) / 1000 > FORGET_AFTER
        ]
        if stale:
            client.hdel(name, *stale)
