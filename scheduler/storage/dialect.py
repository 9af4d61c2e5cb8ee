"""What nightowl's own database can do, chosen once per engine: the one place that asks
whether it is SQLite or PostgreSQL.

The stores run the same statements on both databases except where PostgreSQL offers a
faster or safer form, and each such difference is a capability here, not a branch at the
statement (as APScheduler v4's SQLAlchemy data store decides its capabilities once, from the
engine, when it starts):

- `insert(table)`: an INSERT with `on_conflict_do_nothing` / `on_conflict_do_update`
  (both dialects have one; they are different classes).
- `in_values(column, values)`: `IN` over a list whose length varies, as ONE JSON parameter
  on PostgreSQL (a statement whose placeholder count changes is parsed anew each time).
- `json_batches`: whole chunks of rows as one JSON document (`jsonb_to_recordset`) for the
  tick's run inserts and trigger-state compare-and-sets: one round trip, not 500.
- `single_statement`: the worker's start and finish as one data-modifying CTE run in
  autocommit (`autocommit(engine)`), no BEGIN/COMMIT (scheduler/storage/attempts.py).
- `agent_lock(agent)` and `migration_lock()`: transaction-scoped advisory locks; SQLite's
  `BEGIN IMMEDIATE` (scheduler/storage/engine.py) already serialises writers, so none.
- `skip_locked(select)`: `FOR UPDATE SKIP LOCKED` so relays claim disjoint rows.
- `naive_datetimes`: SQLite stores no offset, so `UTCDateTime` (models.py) binds naive UTC
  there (it is handed SQLAlchemy's dialect, and asks `Dialect.named(dialect.name)`).

Code that talks to a USER's database (the db_change trigger, the SQL sinks) keeps its own
branches: it may face any dialect, this module only the two nightowl runs on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

# pg_advisory_xact_lock key for migrations ("nightowl" in ASCII, as a bigint).
MIGRATION_LOCK = 0x6E696768746F776C


@dataclass(frozen=True, slots=True)
class Dialect:
    """The capabilities of one of the two databases nightowl stores its state in."""

    name: str
    json_batches: bool
    single_statement: bool
    advisory_locks: bool
    skip_locked_rows: bool
    naive_datetimes: bool

    @staticmethod
    def named(name: str) -> Dialect:
        """The capabilities of the database SQLAlchemy calls `name`."""
        return POSTGRESQL if name == "postgresql" else SQLITE

    @staticmethod
    def for_engine(engine: Engine | Connection) -> Dialect:
        """The capabilities of `engine` (or of a connection's engine)."""
        return Dialect.named(engine.dialect.name)

    of = for_engine

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that can say what to do on a conflict (typed Any: the two dialects'
        classes share no base that has `on_conflict_do_nothing`)."""
        return postgresql.insert(table) if self.name == "postgresql" else sqlite.insert(table)

    def in_values(self, column: sa.ColumnElement[Any], values: Iterable[str]) -> sa.ColumnElement[bool]:
        """`column IN (...)` for a list whose length varies (a chunk of ids, a batch of keys).

        On PostgreSQL the list is one JSON parameter: a statement whose placeholder count
        changes is converted and parsed anew each time, and an array parameter is dumped
        element by element in Python. SQLite gets the plain expanding IN.
        """
        if self.json_batches:
            document = sa.cast(sa.literal(json.dumps(list(values))), postgresql.JSONB)
            return column.in_(sa.select(sa.func.jsonb_array_elements_text(document)))
        return column.in_(list(values))

    def autocommit(self, engine: Engine) -> Engine | None:
        """An engine for single statements without BEGIN/COMMIT, or None if this dialect
        has no single-statement plan."""
        return engine.execution_options(isolation_level="AUTOCOMMIT") if self.single_statement else None

    def agent_lock(self, agent: str) -> sa.Select[Any] | None:
        """A transaction-scoped lock per agent that makes a concurrency cap's count-then-start
        atomic across workers; None where the transaction already is (SQLite)."""
        if not self.advisory_locks:
            return None
        return sa.select(
            sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.literal(f"nightowl:agent:{agent}")))
        )

    def migration_lock(self) -> sa.TextClause | None:
        """The lock that makes replicas' concurrent `db upgrade` wait for each other."""
        if not self.advisory_locks:
            return None
        return sa.text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=MIGRATION_LOCK)

    def skip_locked(self, select: sa.Select[Any], of: sa.Table) -> sa.Select[Any]:
        """`select` taking row locks that concurrent claimers skip, where the database has
        them (SQLite's writer lock already makes claims disjoint)."""
        return select.with_for_update(skip_locked=True, of=of) if self.skip_locked_rows else select

    def without_single_statement(self) -> Dialect:
        """The same database with every write on the transaction plan (the contract tests
        run both plans on PostgreSQL)."""
        return replace(self, single_statement=False)


POSTGRESQL = Dialect(
    "postgresql",
    json_batches=True,
    single_statement=True,
    advisory_locks=True,
    skip_locked_rows=True,
    naive_datetimes=False,
)
SQLITE = Dialect(
    "sqlite",
    json_batches=False,
    single_statement=False,
    advisory_locks=False,
    skip_locked_rows=False,
    naive_datetimes=True,
)


def in_values(
    conn: Connection, column: sa.ColumnElement[Any], values: Iterable[str]
) -> sa.ColumnElement[bool]:
    """`Dialect.in_values` for the connection's database (for statements built per call)."""
    return Dialect.of(conn).in_values(column, values)
