"""Builders shared by service-level tests."""

from __future__ import annotations

import redis

from scheduler.app import create_app
from scheduler.clock import Clock
from scheduler.publish import Publisher
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.engine import make_engine
from scheduler.storage.store import Store
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
        leader_ttl=leader_ttl,
        pending_grace=settings.pending_grace,
        owner=owner,
    )
    _open.append(svc)
    return svc


def queue_length(client: redis.Redis, prefix: str, queue: str = "agents") -> int:
    """Messages waiting in a kombu Redis queue (bare list plus priority sub-lists)."""
    total = 0
    for key in client.scan_iter(match=f"{prefix}{queue}*"):
        name = key.decode()
        if name == f"{prefix}{queue}" or name.startswith(f"{prefix}{queue}\x06\x16"):
            total += int(client.llen(key))  # type: ignore[arg-type]
    return total
