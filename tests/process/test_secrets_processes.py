"""Secret-bearing URLs everywhere, real processes, then a grep for the secrets.

nightowl runs as its separate processes (scheduler, worker, watchdog, relay) on a
PostgreSQL role with a password, a private Redis started with --requirepass (broker and
leases), a signed alert webhook whose path is its secret and an apprise URL with a token,
both pointing at a receiver that fails; an agent fails quoting those URLs, a metric
trigger watches a database whose URL carries a password, an outbox webhook sink has a
secret path. Every line any process or CLI command printed, and every stored row of
every table, must be free of each secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa

from tests.helpers import PG_ADMIN_URL, ROOT, OutputProcess, free_port, run_cli_process, wait_for
from tests.receiver import Receiver

MODULE = "tests.fixtures.secret_agents"


class Proc(OutputProcess):
    """A process whose combined output is kept."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        super().__init__(argv, env)

    def stop(self, timeout: float = 30) -> str:
        return super().stop(timeout)


def secret(label: str) -> str:
    return f"{label}{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="module")
def pg_role() -> Iterator[tuple[str, str, str]]:
    """A PostgreSQL role with a password and a database it owns: (role, password, db)."""
    role, password, db = f"owl_{uuid.uuid4().hex[:8]}", secret("pgpw"), f"secrets_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    yield role, password, db
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A redis-server of this test's own that requires a password: (port, password)."""
    port, password = free_port(), secret("redispw")
    tmp_path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=password)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(up, timeout=10, message="the private redis-server")
        yield port, password
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def failing_receiver() -> Iterator[Receiver]:
    r = Receiver(status=500)
    yield r
    r.close()


def dump_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    meta = sa.MetaData()
    meta.reflect(engine)
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            out[table.name] = [dict(row._mapping) for row in conn.execute(sa.select(table))]
    engine.dispose()
    return out


@dataclass
class Scenario:
    secrets: list[str]
    text: str  # everything every process and CLI command printed
    rows: dict[str, list[dict[str, Any]]]  # every stored row, by table


@pytest.fixture(scope="module")
def scenario(
    pg_role: tuple[str, str, str], private_redis: tuple[int, str], failing_receiver: Receiver
) -> Scenario:
    role, pg_password, db = pg_role
    redis_port, redis_password = private_redis
    hook_path, signing, apprise_token = secret("hookpath"), secret("signing"), secret("apprise")
    sink_path, sink_signing = secret("sinkpath"), secret("sinksigning")
    watched_password = secret("watchedpw")
    secrets = [
        pg_password,
        redis_password,
        hook_path,
        signing,
        apprise_token,
        sink_path,
        sink_signing,
        watched_password,
    ]
    database_url = f"postgresql://{role}:{pg_password}@127.0.0.1:5432/{db}"
    receiver = failing_receiver.url.rsplit("/", 1)[0]
    prefix = f"nightowl-test-{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "NIGHTOWL_DATABASE_URL": database_url,
            "NIGHTOWL_REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{redis_port}/0",
            "NIGHTOWL_BROKER_URL": f"redis://:{redis_password}@127.0.0.1:{redis_port}/1",
            "NIGHTOWL_REDIS_PREFIX": prefix,
            "NIGHTOWL_TRIGGERS": MODULE,
            "NIGHTOWL_ALERT_WEBHOOK_URL": f"{receiver}/hook/{hook_path}",
            "NIGHTOWL_ALERT_WEBHOOK_SECRET": signing,
            "NIGHTOWL_ALERT_URLS": f"json://127.0.0.1:{receiver.rsplit(':', 1)[1]}/apprise/{apprise_token}",
            "NIGHTOWL_TEST_SINK_HOOK": f"{receiver}/sink/{sink_path}",
            "NIGHTOWL_TEST_SINK_SECRET": sink_signing,
            "NIGHTOWL_TEST_WATCHED_URL": f"postgresql://{role}:{watched_password}@127.0.0.1:5432/"
            f"no_such_db_{uuid.uuid4().hex[:6]}",
            "NIGHTOWL_HEARTBEAT_INTERVAL": "0.5",
            "NIGHTOWL_WATCHDOG_INTERVAL": "0.5",
            "NIGHTOWL_SWEEP_INTERVAL": "0.5",
            "NIGHTOWL_TICK_INTERVAL": "0.2",
            "NIGHTOWL_LOG_LEVEL": "DEBUG",
        }
    )
    outputs: list[str] = []
    upgrade = run_cli_process(("db", "upgrade"), env, ROOT, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    outputs += [upgrade.stdout, upgrade.stderr]
    nightowl = [sys.executable, "-m", "scheduler.cli"]
    procs = [
        Proc("scheduler", [*nightowl, "scheduler"], env),
        Proc("worker", [*nightowl, "worker", "--pool=solo", "--loglevel=DEBUG"], env),
        Proc("watchdog", [*nightowl, "watchdog"], env),
        Proc("relay", [*nightowl, "relay"], env),
    ]
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))

    def seen() -> bool:
        with engine.connect() as conn:
            kinds = {k for (k,) in conn.execute(sa.text("SELECT kind FROM alerts"))}
            channels = [
                c for (c,) in conn.execute(sa.text("SELECT channels FROM alerts WHERE kind = 'run_dead'"))
            ]
            sink_errors = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE last_error IS NOT NULL")
            ).scalar()
        both_failed = any(len(c or {}) == 2 for c in channels)
        return {"run_dead", "trigger_source_failing"} <= kinds and both_failed and bool(sink_errors)

    try:
        try:
            wait_for(
                seen,
                timeout=90,
                interval=0.5,
                message="a run_dead alert both channels failed, a source alert, a sink error",
            )
        except AssertionError as exc:
            rows = {
                t: r for t, r in dump_rows(database_url).items() if t in ("alerts", "trigger_state", "outbox")
            }
            raise AssertionError(
                f"{exc}\n{json.dumps(rows, default=str)[-6000:]}\n"
                + "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in procs)
            ) from None
        with engine.connect() as conn:
            run_id = conn.execute(sa.text("SELECT id FROM runs WHERE status = 'dead' LIMIT 1")).scalar()
        assert isinstance(run_id, str)
        # The operator's view of it all, while everything runs (four commands at a time)
        commands = (
            ("runs", "list", "--json"),
            ("runs", "show", run_id),
            ("runs", "show", run_id, "--json"),
            ("alerts", "list"),
            ("alerts", "list", "--json"),
            ("status",),
            ("status", "--json"),
            ("deadletters", "list", "--json"),
            ("triggers", "list", "--json"),
            ("triggers", "show", "watched-db"),
            ("outbox", "status", "--json"),
            ("doctor",),
        )
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda a: run_cli_process(a, env, ROOT, timeout=120), commands))
        for args, done in zip(commands, answers, strict=True):
            outputs += [f"$ nightowl {' '.join(args)} -> {done.returncode}", done.stdout, done.stderr]
    finally:
        for p in procs:  # SIGTERM to all first: they stop side by side, not one after another
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in procs:
            p.stop()
        engine.dispose()
    outputs += [f"--- {p.name}\n{p.output()}" for p in procs]
    # A CLI failure quoting a URL: Redis refusing the password
    wrong = dict(env, NIGHTOWL_REDIS_URL=f"redis://:{redis_password}x@127.0.0.1:{redis_port}/0")
    for args in (("status",), ("runs", "cancel", "nope")):
        done = run_cli_process(args, wrong, ROOT, timeout=120)
        outputs += [done.stdout, done.stderr]
    return Scenario(secrets, "\n".join(outputs), dump_rows(database_url))


# The error columns of runs and attempts are written by the worker's executor from the
# agent's exception; everything else is checked by the first test.
EXECUTOR_ERRORS = {("runs", "error"), ("attempts", "error_message")}


def stored_text(scenario: Scenario, *, executor_errors: bool) -> str:
    out = []
    for table, rows in scenario.rows.items():
        for row in rows:
            for column, value in row.items():
                if ((table, column) in EXECUTOR_ERRORS) == executor_errors:
                    out.append(f"{table}.{column}: {json.dumps(value, default=str)}")
    return "\n".join(out)


@pytest.mark.timeout(300)
def test_no_secret_reaches_any_output_or_stored_row(scenario: Scenario) -> None:
    text, rows = scenario.text, stored_text(scenario, executor_errors=False)
    # The secrets' surroundings really were printed and stored (the test saw them happen)
    assert "run_dead" in text and "webhook:http://127.0.0.1:" in text
    assert "webhook:http://127.0.0.1:" in rows and "apprise:json" in rows and "/***" in rows
    assert any(r["last_error"] for r in scenario.rows["outbox"])
    assert any(r["kind"] == "trigger_source_failing" for r in scenario.rows["alerts"])
    for value in scenario.secrets:
        assert value not in text, _context(text, value)
        assert value not in rows, _context(rows, value)


def test_no_secret_in_the_stored_errors_of_runs_and_attempts(scenario: Scenario) -> None:
    rows = stored_text(scenario, executor_errors=True)
    assert "RuntimeError: POST http://127.0.0.1:" in rows
    for value in scenario.secrets:
        assert value not in rows, _context(rows, value)


def _context(text: str, needle: str) -> str:
    at = text.index(needle)
    return f"found {needle!r} in: ...{text[max(0, at - 300) : at + 100]}..."
