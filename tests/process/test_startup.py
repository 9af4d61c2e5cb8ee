"""Long-running services check what they need at start, and stay quiet during an outage.

Real processes on real PostgreSQL and Redis: a database that does not exist, one without
the schema or with an older one, Redis down, each is one line naming the service, what
failed and the setting to check, then exit 1 (after waiting NIGHTOWL_STARTUP_TIMEOUT);
PostgreSQL or Redis that come up within the wait are waited for; an outage after start is
a bounded number of lines, not a traceback per tick.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from scheduler.core.steplog import StepFailures
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import upgrade
from tests.helpers import PG_ADMIN_URL, REDIS_URL, ROOT, Cli, OutputProcess, RedisServer, free_port, wait_for

MODULE = "tests.fixtures.seconds_triggers"
SECRET = "hunter2-startup"


def _base_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update(
        {
            "NIGHTOWL_DATABASE_URL": database_url,
            "NIGHTOWL_REDIS_URL": redis_url,
            "NIGHTOWL_TRIGGERS": MODULE,
            "PYTHONPATH": str(ROOT),
            "NIGHTOWL_REDIS_PREFIX": f"nightowl-test-{uuid.uuid4().hex[:10]}:",
            "NIGHTOWL_STARTUP_TIMEOUT": "1",
            "NIGHTOWL_SHUTDOWN_GRACE": "0",
        }
    )
    env.update(extra)
    return env


def _pg(name: str, password: bool = False) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    if password:  # trust auth ignores it; it is there to be scrubbed
        base = base.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")
    return f"{base}/{name}"


class Databases:
    """PostgreSQL databases of the test's own, dropped afterwards."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def name(self) -> str:
        value = f"nightowl_startup_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.names.append(value)
        return value

    def create(self, name: str | None = None, revision: str | None = "head") -> str:
        name = name or self.name()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        if revision is not None:
            engine = make_engine(_pg(name))
            upgrade(engine, revision)
            engine.dispose()
        return name

    def drop(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def databases() -> Iterator[Databases]:
    dbs = Databases()
    yield dbs
    dbs.drop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


CELERY_WORKER = "worker (celery)"  # `celery -A scheduler.celery_app worker`, as deployed


def _command(service: str) -> list[str]:
    if service == CELERY_WORKER:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "scheduler.celery_app",
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
        ]
    argv = [sys.executable, "-m", "scheduler.cli", service]
    if service == "worker":
        argv += ["--pool=solo", "--concurrency=1"]
    return argv


def _run(service: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(service),
        cwd=tempfile.mkdtemp(prefix="nightowl-startup-"),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _refused(service: str, env: dict[str, str], *expected: str) -> str:
    """Run `service`; it must exit 1 with one error line holding `expected`, nothing else."""
    out = _run(service, env)
    assert out.returncode == 1, f"{service}: rc={out.returncode}\n{out.stdout}\n{out.stderr}"
    text = out.stdout + out.stderr
    assert "Traceback" not in text and SECRET not in text, text
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith(f"error: nightowl {service} cannot start"), errors[0]
    for word in expected:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    ours = out.stderr.splitlines()
    if service == CELERY_WORKER:  # after Celery's own warning about running as root
        ours = ours[next(i for i, line in enumerate(ours) if line.startswith(("nightowl ", "error:"))) :]
    assert len(ours) <= 2, out.stderr  # the error and one "waiting" note
    assert " ready" not in out.stdout, out.stdout
    return errors[0]


LONG_RUNNING = ("scheduler", "watchdog", "relay", "worker")


def test_a_database_that_does_not_exist_is_one_line_and_exit_1(databases: Databases, cli: Cli) -> None:
    env = _base_env(_pg(databases.name(), password=True), REDIS_URL)
    for service in LONG_RUNNING:
        line = _refused(service, env, "does not exist", "NIGHTOWL_DATABASE_URL", "NIGHTOWL_STARTUP_TIMEOUT")
        assert "db upgrade" not in line  # the URL names the wrong database: no schema to add
    # the short commands say the same (they said "run `nightowl db upgrade`")
    listed = cli("runs", "list", env=env)
    assert listed.returncode == 1 and "does not exist" in listed.stderr, listed.stderr
    assert "db upgrade" not in listed.stderr and "NIGHTOWL_DATABASE_URL" in listed.stderr


def test_a_database_without_the_schema_or_with_an_older_one_is_refused(
    databases: Databases, tmp_path: Path
) -> None:
    empty = _base_env(_pg(databases.create(revision=None), password=True), REDIS_URL)
    for service in LONG_RUNNING:
        _refused(service, empty, "no nightowl schema", "nightowl db upgrade", "NIGHTOWL_DATABASE_URL")
    _refused(CELERY_WORKER, empty, "no nightowl schema", "nightowl db upgrade")
    older = _base_env(_pg(databases.create(revision="0003")), REDIS_URL)
    line = _refused("worker", older, "older than this code's", "nightowl db upgrade")
    assert "0003" in line
    # A SQLite file that is not there is not created behind the operator's back
    missing = tmp_path / "nope" / "nightowl.db"
    _refused(
        "scheduler", _base_env(f"sqlite:///{missing}", REDIS_URL), "does not exist", "NIGHTOWL_DATABASE_URL"
    )
    assert not missing.exists()


def test_redis_down_is_one_line_and_exit_1(databases: Databases) -> None:
    env = _base_env(_pg(databases.create()), f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")
    for service in ("scheduler", "watchdog", "worker", "flower", CELERY_WORKER):
        _refused(service, env, "Redis failed", "NIGHTOWL_REDIS_URL", "Connection refused")
    # a broker of its own is checked and named on its own
    broker = env | {
        "NIGHTOWL_REDIS_URL": REDIS_URL,
        "NIGHTOWL_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
    }
    _refused("scheduler", broker, "Redis failed", "NIGHTOWL_BROKER_URL")


def test_a_setting_that_does_not_parse_is_one_line_naming_it(databases: Databases) -> None:
    env = _base_env(_pg(databases.create()), REDIS_URL)
    for service, bad, words in [
        ("scheduler", {"NIGHTOWL_STARTUP_TIMEOUT": "soon"}, ("NIGHTOWL_STARTUP_TIMEOUT", "'soon'")),
        ("worker", {"NIGHTOWL_TICK_INTERVAL": "-1"}, ("NIGHTOWL_TICK_INTERVAL", "greater than 0")),
        ("relay", {"NIGHTOWL_LOG_LEVEL": "LOUD"}, ("NIGHTOWL_LOG_LEVEL", "'LOUD'")),
        # a value that may hold a secret is named, never shown
        ("watchdog", {"NIGHTOWL_ALERT_URLS": f'["slack://{SECRET}/T0/B0"'}, ("NIGHTOWL_ALERT_URLS",)),
    ]:
        out = _run(service, env | bad)
        assert out.returncode == 1, (service, out.stderr)
        assert "Traceback" not in out.stderr and SECRET not in out.stderr, out.stderr
        assert out.stderr.startswith("error: invalid setting ") and out.stderr.count("\n") == 1
        for word in words:
            assert word in out.stderr, out.stderr


class Service(OutputProcess):
    """A long-running service process whose output is collected as it runs."""

    def __init__(self, service: str, env: dict[str, str]) -> None:
        super().__init__(_command(service), env, cwd=tempfile.mkdtemp())

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None or text in self.output(), (
                f"exited {self.proc.returncode}:\n{self.output()}"
            )
            return text in self.output()

        wait_for(seen, timeout=timeout, interval=0.2, message=f"{text!r} in\n{self.output()}")

    def stop(self, timeout: float = 30) -> str:
        return super().stop(timeout)


def test_redis_that_comes_up_within_the_wait_is_waited_for(
    databases: Databases, private_redis: RedisServer
) -> None:
    env = _base_env(_pg(databases.create()), private_redis.url, NIGHTOWL_STARTUP_TIMEOUT="30")
    started = [Service("scheduler", env), Service("worker", env)]
    try:
        for s in started:
            s.wait_for_line("waiting up to 30s (NIGHTOWL_STARTUP_TIMEOUT) for", timeout=30)
        time.sleep(2)
        private_redis.start()  # Redis comes up a few seconds after the services
        started[0].wait_for_line("fired each-second", timeout=40)
        started[1].wait_for_line(" ready.", timeout=40)
        engine = make_engine(_pg(databases.names[-1]))
        try:
            wait_for(lambda: _succeeded(engine), timeout=40, message="a run to succeed")
        finally:
            engine.dispose()
    finally:
        outputs = [s.stop() for s in started]
    for out in outputs:
        assert "Traceback" not in out and "ready after" in out, out


def _succeeded(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM runs WHERE status = 'succeeded'")).scalar_one())


def test_a_database_created_after_start_is_waited_for(databases: Databases) -> None:
    name = databases.name()
    env = _base_env(_pg(name), REDIS_URL, NIGHTOWL_STARTUP_TIMEOUT="30")
    service = Service("scheduler", env)
    try:
        service.wait_for_line("waiting up to 30s", timeout=30)
        time.sleep(2)
        databases.create(name, revision=None)  # PostgreSQL has booted; the schema comes next
        time.sleep(1)
        engine = make_engine(_pg(name))
        upgrade(engine)
        engine.dispose()
        service.wait_for_line("became scheduler leader", timeout=40)
        service.wait_for_line("fired each-second", timeout=20)
    finally:
        out = service.stop()
    assert service.proc.returncode == 0, out
    assert "Traceback" not in out and "error:" not in out, out


def test_postgresql_refusing_connections_at_start_is_waited_for(databases: Databases) -> None:
    """As PostgreSQL does while it boots (`the database system is starting up`)."""
    name = databases.create()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    service = Service("watchdog", _base_env(_pg(name), REDIS_URL, NIGHTOWL_STARTUP_TIMEOUT="30"))
    try:
        service.wait_for_line("waiting up to 30s (NIGHTOWL_STARTUP_TIMEOUT) for the database")
        time.sleep(3)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        service.wait_for_line("became watchdog leader", timeout=40)
    finally:
        out = service.stop()
    assert "ready after" in out and "Traceback" not in out and "error:" not in out, out


def _outage_lines(out: str, step: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(rf"\b{step} (failed|still failing)", line)]


def test_an_outage_after_start_is_a_few_lines_not_a_traceback_per_tick(
    databases: Databases, private_redis: RedisServer
) -> None:
    private_redis.start()
    name = databases.create()
    env = _base_env(_pg(name), private_redis.url)
    services = [Service("scheduler", env), Service("watchdog", env), Service("relay", env)]
    try:
        services[0].wait_for_line("fired each-second")
        services[1].wait_for_line("became watchdog leader")
        # PostgreSQL refuses connections for 8 s (every session of ours is ended)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            time.sleep(8)
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        services[0].wait_for_line("tick recovered after", timeout=30)
        # then Redis goes away for 6 s
        private_redis.stop()
        time.sleep(6)
        private_redis.start()
        wait_for(
            lambda: services[0].output().count("tick recovered after") >= 2,
            timeout=30,
            message="the tick to recover from the Redis outage",
        )
        time.sleep(3)
    finally:
        outputs = [s.stop() for s in services]
    sched, dog, _relay = outputs
    for out in (sched, dog):
        assert "Traceback" not in out, out
    # about one line per failing step and outage (each is ~15 failed ticks and ~4 sweeps), and
    # its recovery; a tick that backs off between failures may split an outage in two
    assert 2 <= len(_outage_lines(sched, "tick")) <= 4, sched
    assert 2 <= sched.count("tick recovered after") <= 4, sched
    assert 1 <= len(_outage_lines(sched, "sweep")) <= 2 and "sweep recovered after" in sched, sched
    assert 1 <= len(_outage_lines(dog, "watchdog check")) <= 2, dog
    assert "watchdog check recovered after" in dog, dog
    assert len(sched.splitlines()) < 200 and len(dog.splitlines()) < 100, (sched, dog)


def test_a_failing_step_logs_once_then_once_a_minute_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = logging.getLogger("nightowl.test-steplog")
    failures = StepFailures(log, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger=log.name)
    url = f"postgresql://bob:{SECRET}@db.example/x"

    def fail() -> None:
        try:
            raise ConnectionError(f"could not reach {url}\nsecond line of detail")
        except ConnectionError as exc:
            failures.failed("tick", exc)

    for n in range(300):  # two and a half minutes of a tick every half second
        fail()
        if n % 3 == 2:
            failures.succeeded("tick")  # flapping: an empty tick in between is no recovery
        now[0] += 0.5
    while now[0] < 160:  # then it keeps succeeding
        failures.succeeded("tick")
        now[0] += 0.5
    failures.succeeded("tick")  # a success after the episode ended says nothing
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert (
        lines[0].startswith("tick failed: ConnectionError: could not reach") and "second line" not in lines[0]
    )
    assert lines[1].startswith("tick still failing after 60 s (121 failures)")
    assert lines[2].startswith("tick still failing after 120 s")
    assert lines[3] == "tick recovered after 150 s (300 failures)"
    assert all(SECRET not in line for line in lines)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger=log.name)
    fail()
    tracebacks = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(tracebacks) == 1 and "Traceback" in tracebacks[0] and SECRET not in tracebacks[0]
