"""Builders shared by service-level tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import redis

from scheduler.alerts import AlertManager, Channel
from scheduler.core.clock import Clock, FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.dispatch.service import SchedulerService
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store
from scheduler.watchdog.service import Watchdog
from scheduler.worker.app import create_app
from tests.conftest import wait_for
from triggers import Registry, load


def registry_of(module: str, only: list[str] | None = None) -> Registry:
    """The module's registry, optionally restricted to some triggers."""
    full = load(module)
    if only is None:
        return full
    return Registry(full.modules, full.agents, {n: full.triggers[n] for n in only})


_open: list[SchedulerService] = []


def close_services() -> None:
    """Close every service `make_service` built (called after each test)."""
    while _open:
        _open.pop().close()


def make_service(settings: Settings, registry: Registry, clock: Clock, *, owner: str | None = None,
                 publisher: Publisher | None = None, leader_ttl: float = 10.0) -> SchedulerService:
    svc = SchedulerService(
        registry=registry,
        store=Store(make_engine(settings.require_database_url())),
        publisher=publisher or Publisher(create_app(settings, registry)),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        key_prefix=settings.redis_prefix,
        leader_ttl=timedelta(seconds=leader_ttl),
        pending_grace=settings.pending_grace,
        owner=owner,
        source_defaults=settings.source_defaults(),
    )
    _open.append(svc)
    return svc


def follow_real_time(clock: FakeClock) -> None:
    """Move a fake clock up to the wall clock, for tests with real worker processes
    (workers stamp leases and retries with real time)."""
    clock.set(max(clock.now(), datetime.now(UTC)))


def fire_then_drain(svc: SchedulerService, clock: FakeClock, store: Store, seconds: float,
                    drain_timeout: float = 40) -> None:
    """Tick and sweep on real time for `seconds`, then stop firing and sweep until every
    run is terminal."""
    def step() -> None:
        follow_real_time(clock)
        svc.tick()
        svc.sweep()

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step()
        time.sleep(0.1)
    svc.registry.triggers.clear()
    wait_for(lambda: (step(), all(r.finished_at for r in store.list_runs()))[1],
             timeout=drain_timeout, interval=0.2, message="every run to finish")


def queue_length(client: redis.Redis, prefix: str, queue: str = "agents") -> int:
    """Messages waiting in a kombu Redis queue (bare list plus priority sub-lists)."""
    total = 0
    for key in client.scan_iter(match=f"{prefix}{queue}*"):
        name = key.decode()
        if name == f"{prefix}{queue}" or name.startswith(f"{prefix}{queue}\x06\x16"):
            total += int(client.llen(key))  # type: ignore[arg-type]
    return total


def make_watchdog(settings: Settings, registry: Registry, clock: Clock, *,
                  channels: Sequence[Channel] = (), owner: str | None = None,
                  revoke: Callable[[str], None] | None = None,
                  repeat: float = 3600) -> Watchdog:
    """A watchdog on the test's Redis prefix and database, closed after the test."""
    store = Store(make_engine(settings.require_database_url()))
    dog = Watchdog(
        registry=registry, store=store,
        alerts=AlertManager(AlertStore(store.engine), clock, channels,
                            repeat=timedelta(seconds=repeat), attempts=3, backoff_max=0.2),
        redis_client=redis.Redis.from_url(settings.require_redis_url()), clock=clock,
        publisher=Publisher(create_app(settings, registry)), key_prefix=settings.redis_prefix,
        leader_ttl=timedelta(seconds=10), revoke=revoke, owner=owner)
    _dogs.append(dog)
    return dog


_dogs: list[Watchdog] = []


def close_watchdogs() -> None:
    while _dogs:
        _dogs.pop().close()


def build_revoke(settings: Settings, registry: Registry) -> Callable[[str], None]:
    """The production revoke (Celery remote control, terminate with SIGKILL)."""
    app = create_app(settings, registry)

    def revoke(task_id: str) -> None:
        app.control.revoke(task_id, terminate=True, signal="SIGKILL")

    return revoke


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server of the test's own, on a free port, to stop and start again
    (Redis going down, or coming up after a service started)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            client = redis.Redis.from_url(self.url)
            wait_for(lambda: _pings(client), timeout=10, message="redis-server to start")
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
