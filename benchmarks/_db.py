"""A scratch database per benchmark run, so a run never sees another's rows."""

from __future__ import annotations

import os
import tempfile
import uuid

import psycopg

PG_ADMIN = os.environ.get("NIGHTOWL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def create_database(tag: str, kind: str = "postgresql") -> str:
    """A new, empty database (a PostgreSQL database, or an SQLite file); its URL."""
    if kind == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    name = f"nightowl_bench_{tag}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database `create_database` made (its connections are ended)."""
    if url.startswith("postgresql"):
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
