"""What a long-running service checks before it starts its loop.

A compose start-up brings PostgreSQL and Redis up beside the services, so a service that
finds them unreachable waits for them, a bounded time (NIGHTOWL_STARTUP_TIMEOUT, default
30 s), instead of failing a tick twice a second forever or reporting `ready` on a database
it cannot use. If they are still unreachable, or the database has no nightowl schema or an
older one than this code's, the service prints one line naming itself, what failed and the
setting to check (passwords scrubbed), and exits 1 (the orchestrator's restart policy
decides what happens next).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import kombu
import redis
import sqlalchemy as sa
import typer
from sqlalchemy.pool import NullPool

from scheduler.core.service_errors import scrubbed, service_error
from scheduler.core.settings import Settings
from scheduler.storage.engine import make_engine, normalise_url

# What each check needs: the database (reachable, migrated to this code's head), Redis
# (leases, heartbeats), the broker (when it is not the same Redis).
DATABASE, REDIS, BROKER = "database", "redis", "broker"
CONNECT_TIMEOUT_S = 5  # one attempt; the wait as a whole is NIGHTOWL_STARTUP_TIMEOUT


def database_problem(url: str) -> str | None:
    """Why the database at `url` cannot serve this code, or None when it can."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            # Connecting would create an empty file: a long-running service never does that.
            return (
                f"the database failed: the SQLite file {path} does not exist (check "
                "NIGHTOWL_DATABASE_URL; `nightowl db upgrade` creates it)"
            )
        engine = make_engine(url, poolclass=NullPool)
    else:
        engine = make_engine(
            url, poolclass=NullPool, pool_pre_ping=False, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    try:
        return _schema_problem(engine)
    except Exception as exc:
        message = service_error(exc)
        if message is None:
            raise
        return message
    finally:
        engine.dispose()


def _schema_problem(engine: sa.Engine) -> str | None:
    from alembic.script import ScriptDirectory

    from scheduler.storage.migrate import alembic_config, current, head_revision

    applied = current(engine)
    if applied is None:
        return (
            "the database has no nightowl schema (check NIGHTOWL_DATABASE_URL names the "
            "right database): run `nightowl db upgrade`"
        )
    head = head_revision()
    if applied == head:
        return None
    script = ScriptDirectory.from_config(alembic_config(engine))
    older = {r.revision for r in script.iterate_revisions(head, "base")} - {head}
    if applied in older:
        return (
            f"the database schema is at revision {applied}, older than this code's "
            f"{head}: run `nightowl db upgrade`"
        )
    return None  # a newer revision than we know: a rolling upgrade migrated ahead of us


def redis_problem(url: str, setting: str = "NIGHTOWL_REDIS_URL") -> str | None:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (
            f"Redis failed: {detail} (check {setting} and that the server is up; "
            "`nightowl doctor` checks every setting)"
        )
    finally:
        client.close()
    return None


def broker_problem(url: str, setting: str = "NIGHTOWL_BROKER_URL") -> str | None:
    """The broker, when it is not the Redis already checked (any kombu transport)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return redis_problem(url, setting)
    with kombu.Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        try:
            conn.ensure_connection(max_retries=1)
        except Exception as exc:
            return f"the broker failed: {exc} (check {setting})"
    return None


def _checked(settings: Settings, needs: Iterable[str]) -> list[str]:
    """`needs` less a broker that is the Redis already checked."""
    wanted = [n for n in (DATABASE, REDIS, BROKER) if n in set(needs)]
    separate_broker = (
        settings.broker_url is not None
        and settings.redis_url is not None
        and (settings.broker_url.get_secret_value() != settings.redis_url.get_secret_value())
    )
    if BROKER in wanted and REDIS in wanted and not separate_broker:
        wanted.remove(BROKER)
    return wanted


def problems(settings: Settings, needs: Iterable[str]) -> str | None:
    """The first thing among `needs` that is not ready, as one scrubbed line, or None."""
    for need in _checked(settings, needs):
        if need == DATABASE:
            found = database_problem(settings.require_database_url())
        elif need == REDIS:
            found = redis_problem(settings.require_redis_url())
        else:
            found = broker_problem(
                settings.require_broker_url(),
                "NIGHTOWL_BROKER_URL" if settings.broker_url else "NIGHTOWL_REDIS_URL",
            )
        if found:
            return scrubbed(" ".join(found.split()))
    return None


def wait_until_ready(
    service: str, settings: Settings, needs: Iterable[str], sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once every need is ready; after NIGHTOWL_STARTUP_TIMEOUT, one line and exit 1."""
    needs = tuple(needs)
    timeout = settings.startup_timeout.total_seconds()
    started = time.monotonic()
    delay = 0.25
    waiting_said = False
    while True:
        found = problems(settings, needs)
        if found is None:
            if waiting_said:
                typer.echo(f"nightowl {service}: ready after {time.monotonic() - started:.1f}s", err=True)
            return
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            waited = f" after waiting {timeout:g}s (NIGHTOWL_STARTUP_TIMEOUT)" if timeout else ""
            typer.echo(f"error: nightowl {service} cannot start{waited}: {found}", err=True)
            sys.exit(1)
        if not waiting_said:
            names = {DATABASE: "the database", REDIS: "Redis", BROKER: "the broker"}
            what = " and ".join(names[n] for n in _checked(settings, needs))
            typer.echo(
                f"nightowl {service}: waiting up to {timeout:g}s (NIGHTOWL_STARTUP_TIMEOUT) for {what}",
                err=True,
            )
            waiting_said = True
        sleep(min(delay, left))
        delay = min(delay * 2, 2.0)
