"""Store faults: nightowl's Redis killed (with AOF, and with its data gone), PostgreSQL
sessions terminated during commits, PostgreSQL refusing connections for ten seconds."""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa

from tests.faults.harness import wait_until
from tests.faults.scenario import Run, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

REDIS_DOWN_S = 3.0
PG_REFUSED_S = 10.0


def _redis_restart(wipe: bool) -> object:
    def fault(run: Run) -> None:
        c = run.cluster
        for i in range(1 if wipe else 2):
            run.at(7 + i * 12 + run.rng.uniform(0, 3))
            label = "Redis SIGKILL, restarted empty" if wipe else "Redis SIGKILL, restarted (AOF)"
            event = c.faults.begin(label, blinds=True)
            c.redis.kill()
            try:
                if wipe:
                    c.redis.wipe()
                time.sleep(REDIS_DOWN_S)
            finally:
                c.redis.start()
            c.faults.end(event)

    return fault


def test_redis_restart_aof() -> None:
    run_scenario(
        "redis_restart_aof",
        seed=301,
        fault=_redis_restart(wipe=False),  # type: ignore[arg-type]
        summary=f"nightowl's Redis SIGKILLed, down {REDIS_DOWN_S:.0f} s, restarted from its AOF (twice)",
        expected="every process reconnects; at most the last second of writes is lost "
        "(appendfsync everysec); lost messages are republished, leases re-taken",
    )


def test_redis_restart_empty() -> None:
    run_scenario(
        "redis_restart_empty",
        seed=302,
        fault=_redis_restart(wipe=True),  # type: ignore[arg-type]
        summary=f"nightowl's Redis SIGKILLed, down {REDIS_DOWN_S:.0f} s, restarted with no data "
        "(a failover that lost writes)",
        expected="queue, leases and heartbeat index are gone: queued runs are republished within "
        "the lost-message bound, the watchdog rebuilds deadlines from the database",
    )


def _terminate_sessions(run: Run) -> None:
    c = run.cluster
    killed = []
    run.at(4)
    while run.remaining() > 6:
        # aim at commits: wait (briefly) for a session that is busy, then end them all
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: c.dbs.busy_sessions() > 0, 0.5, 0.01, "a busy session")
        n = c.dbs.terminate_sessions()
        killed.append(n)
        c.faults.instant("pg_terminate_backend of nightowl's sessions", sessions=n)
        time.sleep(run.rng.uniform(1.5, 3.5))
    run.figures["sessions_terminated"] = sum(killed)


def test_pg_terminate_backend() -> None:
    run_scenario(
        "pg_terminate_backend",
        seed=303,
        fault=_terminate_sessions,
        summary="pg_terminate_backend of every nightowl session, every 1.5-3.5 s for 20 s",
        expected="each failed statement is retried or its work redone: ticks keep every trigger "
        "scheduled, finished work is not thrown away, nothing is left queued",
    )


def _refuse_connections(run: Run) -> None:
    c = run.cluster
    run.at(8 + run.rng.uniform(0, 3))
    event = c.faults.begin(f"PostgreSQL refuses connections {PG_REFUSED_S:.0f} s", blinds=True)
    c.dbs.allow_connections(False)
    try:
        event["sessions"] = c.dbs.terminate_sessions()
        time.sleep(PG_REFUSED_S)
    finally:
        c.dbs.allow_connections(True)
    c.faults.end(event)
    wait_until(lambda: _answers(c.engine), 10, 0.2, "the database to answer")


def test_pg_refuses_connections() -> None:
    run_scenario(
        "pg_refuses_connections",
        seed=304,
        fault=_refuse_connections,
        summary=f"ALTER DATABASE ... ALLOW_CONNECTIONS false for {PG_REFUSED_S:.0f} s, sessions terminated",
        expected="services wait and retry; deliveries during the outage are not acked away; "
        "cron catch-up fires every missed slot once",
    )


def _answers(engine: sa.Engine) -> bool:
    """The database takes a connection (raises while it does not)."""
    engine.connect().close()
    return True
