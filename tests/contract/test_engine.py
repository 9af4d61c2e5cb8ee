"""Pooled PostgreSQL connections: a connection that sat idle is checked before use, so a
database restart (here: the server ending our session) costs no failed statement."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPIConnection

from scheduler.storage import engine as engine_module
from scheduler.storage.engine import make_engine


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _kill(admin: sa.Engine, pid: int) -> None:
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    admin = make_engine(pg_url, pool_pre_ping=False)
    try:
        first = _backend_pid(engine)
        _kill(admin, first)
        monkeypatch.setattr(engine_module, "IDLE_PING_S", 0.0)  # it has been idle "long enough"
        second = _backend_pid(engine)  # no error: the ping found it dead and reconnected
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_in_constant_use_is_not_pinged(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path (a worker starting and finishing runs back to back) pays no ping."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    pings: list[DBAPIConnection] = []
    original = engine.dialect._do_ping_w_event

    def counting(dbapi_conn: DBAPIConnection) -> bool:
        pings.append(dbapi_conn)
        return original(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "_do_ping_w_event", counting)
    try:
        assert len({_backend_pid(engine) for _ in range(20)}) == 1  # one pooled connection
        assert pings == []
    finally:
        engine.dispose()


def test_a_pinged_connection_can_still_switch_to_autocommit(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's single statements run in autocommit on a pooled connection; the ping
    must not leave a transaction open (psycopg refuses to switch then)."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        _backend_pid(engine)
        monkeypatch.setattr(engine_module, "IDLE_PING_S", 0.0)
        with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_every_sqlite_engine_in_a_process_uses_one_sqlite_library(tmp_path: Path) -> None:
    """Two copies of SQLite in one process corrupt a shared file (POSIX locks are per
    process): `make demo` reported `database disk image is malformed` within a minute while
    its relay wrote the vector sink through pysqlite3 and the outbox through the stdlib."""
    from scheduler.outbox.sinks.sql import VectorSink
    from triggers.sources import engine_for

    url = f"sqlite:///{tmp_path / 'one.db'}"
    ours = make_engine(url)
    watched = engine_for(url)
    sink = VectorSink(table="vectors", dim=2, db_url=url)
    try:
        modules = {ours.dialect.dbapi, watched.dialect.dbapi, sink.engine().dialect.dbapi}
        assert len(modules) == 1, modules
        with ours.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        ours.dispose()
