"""SQL sinks: an upserted table, an append-only audit trail, and a vector store.

Each owns its table (created if missing) and is idempotent: the upsert and
vector sinks keep the highest `seq` per key, the audit sink dedupes on the
entry id (a UNIQUE column), so a redelivered batch changes nothing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from scheduler.outbox.abc import Entry, Outcome, SinkError
from scheduler.storage.engine import make_engine
from triggers.sources import SourceDefaults, engine_for, mask_url, secret_url

FLOAT32_MAX = 3.4028234663852886e38
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _ident(value: str, what: str) -> str:
    if not isinstance(value, str) or IDENT.fullmatch(value) is None:
        raise SinkError(f"{what} {value!r} is not a plain SQL identifier (letters, digits, _)")
    return value


class _SqlSink:
    def __init__(self, table: str, db_url: str | SecretStr | None) -> None:
        self.table_name = _ident(table, "table")
        self.db_url = secret_url(db_url, "db_url")
        self._default: str | None = None
        self._table: sa.Table | None = None
        self._lock = threading.Lock()

    def bind(self, defaults: SourceDefaults) -> None:
        self._default = defaults.database_url

    def url(self) -> str:
        url = self.db_url.get_secret_value() if self.db_url else self._default
        if not url:
            raise SinkError(f"sink table {self.table_name!r}: pass db_url= or set NIGHTOWL_DATABASE_URL")
        return url

    def engine(self) -> sa.Engine:
        url = self.url()
        if url.startswith("sqlite"):
            return _sqlite_engine(url)
        return engine_for(url)

    def table(self) -> sa.Table:
        with self._lock:
            if self._table is None:
                meta = sa.MetaData()
                table = self.define(meta)
                engine = self.engine()
                meta.create_all(engine, checkfirst=True)
                self.upgrade(engine)
                self._table = table
            return self._table

    def define(self, meta: sa.MetaData) -> sa.Table:
        raise NotImplementedError

    def upgrade(self, engine: sa.Engine) -> None:
        """Bring a table an earlier version created to today's columns (first use only)."""

    def insert(self, conn: sa.Connection) -> Any:
        """An upsert-capable INSERT; call `table()` before opening `conn`'s transaction (on
        SQLite a second connection creating the table would wait for ours: a self-deadlock)."""
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        return insert(self.table())

    def shown(self) -> str:
        return mask_url(self.db_url.get_secret_value()) if self.db_url else "(nightowl's database)"


class SqlUpsertSink(_SqlSink):
    """One row per key, holding the newest value: `key_column`, value, seq, entry_id."""

    def __init__(self, table: str, *, db_url: str | SecretStr | None = None, key_column: str = "key") -> None:
        super().__init__(table, db_url)
        self.key_column = _ident(key_column, "key_column")

    def define(self, meta: sa.MetaData) -> sa.Table:
        return sa.Table(
            self.table_name,
            meta,
            sa.Column(self.key_column, sa.String(512), primary_key=True),
            sa.Column("value", sa.JSON, nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("entry_id", sa.String(64), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "sql_upsert",
            "table": self.table_name,
            "db_url": self.shown(),
            "key_column": self.key_column,
        }

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        table = self.table()
        newest: dict[str, Entry] = {}
        for e in entries:  # within a batch only the highest seq per key matters
            if e.key not in newest or e.seq > newest[e.key].seq:
                newest[e.key] = e
        with self.engine().begin() as conn:
            for e in newest.values():
                stmt = self.insert(conn).values(
                    {self.key_column: e.key, "value": e.value, "seq": e.seq, "entry_id": e.id}
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[self.key_column],
                        set_={
                            "value": stmt.excluded.value,
                            "seq": stmt.excluded.seq,
                            "entry_id": stmt.excluded.entry_id,
                            "updated_at": sa.func.now(),
                        },
                        where=table.c.seq < stmt.excluded.seq,
                    )
                )
        return [None] * len(entries)


class SqlAppendSink(_SqlSink):
    """An append-only audit trail; the UNIQUE `id_column` makes a redelivery a no-op."""

    def __init__(
        self, table: str, *, db_url: str | SecretStr | None = None, id_column: str = "entry_id"
    ) -> None:
        super().__init__(table, db_url)
        self.id_column = _ident(id_column, "id_column")

    def define(self, meta: sa.MetaData) -> sa.Table:
        return sa.Table(
            self.table_name,
            meta,
            sa.Column(self.id_column, sa.String(64), primary_key=True),
            sa.Column("run_id", sa.String(36), nullable=False),
            sa.Column("key", sa.String(512), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("value", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        )

    def upgrade(self, engine: sa.Engine) -> None:
        """Tables created before DESIGN's column names have `recorded_at`: renamed to
        `created_at`, data kept (two relays racing to rename: the loser finds it done)."""

        def columns() -> set[str]:
            return {c["name"] for c in sa.inspect(engine).get_columns(self.table_name)}

        if "recorded_at" not in columns() or "created_at" in columns():
            return
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(f'ALTER TABLE "{self.table_name}" RENAME COLUMN recorded_at TO created_at')
                )
        except sa.exc.DBAPIError:
            if "created_at" not in columns():
                raise

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "sql_append",
            "table": self.table_name,
            "db_url": self.shown(),
            "id_column": self.id_column,
        }

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        rows = [
            {self.id_column: e.id, "run_id": e.run_id, "key": e.key, "seq": e.seq, "value": e.value}
            for e in entries
        ]
        self.table()  # created (on its own connection) before our write transaction starts
        with self.engine().begin() as conn:
            stmt = self.insert(conn).on_conflict_do_nothing(index_elements=[self.id_column])
            conn.execute(stmt, rows)
        return [None] * len(entries)


class VectorSink(_SqlSink):
    """Embeddings upserted by key: pgvector on PostgreSQL, sqlite-vec on SQLite.

    The agent supplies the vector: `ctx.outbox.put("memory", key, {"vector": [...], ...})`;
    the other fields are kept as metadata.
    """

    def __init__(self, *, table: str, dim: int, db_url: str | SecretStr | None = None) -> None:
        super().__init__(table, db_url)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 16_000:
            raise SinkError(f"VectorSink dim must be an int in 1..16000, got {dim!r}")
        self.dim = dim
        self._ready = False  # the table and index exist (a committed _ensure)

    def describe(self) -> dict[str, Any]:
        return {"kind": "vector", "table": self.table_name, "dim": self.dim, "db_url": self.shown()}

    def engine(self) -> sa.Engine:
        url = self.url()
        if url.startswith("sqlite"):
            return _sqlite_vec_engine(url)
        return engine_for(url)

    def _vector(self, entry: Entry) -> tuple[list[float], dict[str, Any]]:
        value = entry.value
        if not isinstance(value, dict) or not isinstance(value.get("vector"), list):
            raise ValueError(f"entry {entry.id}: a vector sink value is {{'vector': [floats], ...metadata}}")
        try:
            vector = [float(x) for x in value["vector"]]
        except (TypeError, ValueError):
            raise ValueError(f"entry {entry.id}: the vector holds something that is not a number") from None
        if len(vector) != self.dim:
            raise ValueError(f"entry {entry.id}: vector has {len(vector)} dimensions, the sink {self.dim}")
        if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in vector):
            raise ValueError(
                f"entry {entry.id}: the vector holds NaN, an infinity or a number beyond float32 range"
            )
        return vector, {k: v for k, v in value.items() if k != "vector"}

    def _ensure(self) -> None:
        """Create the extension, table and index, in a transaction of their own: the sink
        believes they exist only once that commit succeeded (a first batch that rolled back
        used to take the new table with it, and every later batch failed until a restart)."""
        if self._ready:
            return
        t = self.table_name
        with self._lock, self.engine().begin() as conn:
            if conn.dialect.name == "postgresql":
                try:
                    conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
                except sa.exc.DBAPIError as exc:
                    raise SinkError(
                        "pgvector is not installed on this PostgreSQL: install the "
                        "package postgresql-<major>-pgvector (PGDG apt repository) "
                        f"or use the pgvector/pgvector image: {exc.orig}"
                    ) from None
                conn.execute(
                    sa.text(
                        f'CREATE TABLE IF NOT EXISTS "{t}" (key text PRIMARY KEY, '
                        f"embedding vector({self.dim}) NOT NULL, metadata jsonb NOT NULL, "
                        "seq bigint NOT NULL, entry_id text NOT NULL)"
                    )
                )
                # Recall is a nearest-neighbour query; without an index it scans every row.
                try:
                    conn.execute(
                        sa.text(
                            f'CREATE INDEX IF NOT EXISTS "{t[:57]}_hnsw" ON "{t}" '
                            "USING hnsw (embedding vector_l2_ops)"
                        )
                    )
                except sa.exc.DBAPIError as exc:
                    raise SinkError(
                        "the vector sink's HNSW index needs pgvector >= 0.5 "
                        f"(ALTER EXTENSION vector UPDATE): {exc.orig}"
                    ) from None
            else:
                conn.execute(
                    sa.text(
                        f'CREATE TABLE IF NOT EXISTS "{t}" (key TEXT PRIMARY KEY, metadata TEXT '
                        "NOT NULL, seq INTEGER NOT NULL, entry_id TEXT NOT NULL)"
                    )
                )
                conn.execute(
                    sa.text(
                        f'CREATE VIRTUAL TABLE IF NOT EXISTS "{t}_vec" USING '
                        f"vec0(embedding float[{self.dim}])"
                    )
                )
        self._ready = True

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        """One transaction for the batch; if the database refuses it, each entry again in a
        transaction of its own, so one entry the database rejects fails only itself."""
        self._ensure()
        try:
            return self._write(entries)
        except SinkError:
            raise
        except Exception as exc:
            self._ready = False  # re-checked next time (cheap), in case the table went away
            if len(entries) == 1:
                return [f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"]
        outcomes: list[Outcome] = []
        for e in entries:
            self._ensure()
            try:
                outcomes += self._write([e])
            except Exception as exc:
                self._ready = False
                outcomes.append(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}")
        return outcomes

    def _write(self, entries: Sequence[Entry]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self.engine().begin() as conn:
            for e in entries:
                try:
                    vector, meta = self._vector(e)
                except ValueError as exc:
                    outcomes.append(str(exc))
                    continue
                if conn.dialect.name == "postgresql":
                    self._upsert_pg(conn, e, vector, meta)
                else:
                    self._upsert_sqlite(conn, e, vector, meta)
                outcomes.append(None)
        return outcomes

    def _upsert_pg(self, conn: sa.Connection, e: Entry, vector: list[float], meta: dict[str, Any]) -> None:
        conn.execute(
            sa.text(
                f'INSERT INTO "{self.table_name}" AS t (key, embedding, metadata, seq, entry_id) '  # noqa: S608 - table name checked by _ident
                "VALUES (:k, CAST(:v AS vector), CAST(:m AS jsonb), :s, :i) ON CONFLICT (key) DO UPDATE "
                "SET embedding = excluded.embedding, metadata = excluded.metadata, seq = excluded.seq, "
                "entry_id = excluded.entry_id WHERE t.seq < excluded.seq"
            ),
            {"k": e.key, "v": json.dumps(vector), "m": json.dumps(meta), "s": e.seq, "i": e.id},
        )

    def _upsert_sqlite(
        self, conn: sa.Connection, e: Entry, vector: list[float], meta: dict[str, Any]
    ) -> None:
        t = self.table_name
        row = conn.execute(sa.text(f'SELECT rowid, seq FROM "{t}" WHERE key = :k'), {"k": e.key}).first()  # noqa: S608 - table name checked by _ident
        if row is not None and row.seq >= e.seq:
            return  # an older or repeated write: the newer one stays
        if row is None:
            rowid = conn.execute(
                sa.text(
                    f'INSERT INTO "{t}" (key, metadata, seq, entry_id) VALUES (:k, :m, :s, :i) '  # noqa: S608 - table name checked by _ident
                    "RETURNING rowid"
                ),
                {"k": e.key, "m": json.dumps(meta), "s": e.seq, "i": e.id},
            ).scalar()
        else:
            rowid = row.rowid
            conn.execute(
                sa.text(
                    f'UPDATE "{t}" SET metadata = :m, seq = :s, entry_id = :i '  # noqa: S608 - table name checked by _ident
                    "WHERE rowid = :r"
                ),
                {"m": json.dumps(meta), "s": e.seq, "i": e.id, "r": rowid},
            )
            conn.execute(sa.text(f'DELETE FROM "{t}_vec" WHERE rowid = :r'), {"r": rowid})  # noqa: S608 - table name checked by _ident
        conn.execute(
            sa.text(f'INSERT INTO "{t}_vec" (rowid, embedding) VALUES (:r, :v)'),  # noqa: S608 - table name checked by _ident
            {"r": rowid, "v": json.dumps(vector)},
        )

    def nearest(self, vector: Sequence[float], k: int = 3) -> list[tuple[str, float]]:
        """The `k` keys closest to `vector` (what an agent's recall would query)."""
        t = self.table_name
        with self.engine().connect() as conn:
            if conn.dialect.name == "postgresql":
                rows = conn.execute(
                    sa.text(
                        f'SELECT key, embedding <-> CAST(:v AS vector) AS d FROM "{t}" ORDER BY d LIMIT :k'  # noqa: S608 - table name checked by _ident
                    ),
                    {"v": json.dumps(list(vector)), "k": k},
                )
            else:
                rows = conn.execute(
                    sa.text(
                        f'SELECT t.key, v.distance AS d FROM "{t}_vec" v JOIN "{t}" t ON t.rowid = v.rowid '  # noqa: S608 - table name checked by _ident
                        "WHERE v.embedding MATCH :v AND k = :k ORDER BY v.distance"
                    ),
                    {"v": json.dumps(list(vector)), "k": k},
                )
            return [(r.key, float(r.d)) for r in rows]


def _sqlite_engine(url: str) -> sa.Engine:
    """A writing SQLite engine with nightowl's locking settings (deferred transactions that
    upgrade to writes fail with "database is locked" under concurrency)."""
    with _vec_lock:
        engine = _sql_engines.get(url)
        if engine is None:
            engine = make_engine(url)
            _sql_engines[url] = engine
        return engine


_sql_engines: dict[str, sa.Engine] = {}
_vec_engines: dict[str, sa.Engine] = {}
_vec_lock = threading.Lock()


def _sqlite_vec_engine(url: str) -> sa.Engine:
    """SQLite with sqlite-vec loaded (through pysqlite3: this Python's sqlite3 cannot load
    extensions)."""
    with _vec_lock:
        engine = _vec_engines.get(url)
        if engine is not None:
            return engine
        try:
            import pysqlite3.dbapi2 as sqlite_module  # type: ignore[import-untyped]
            import sqlite_vec  # type: ignore[import-untyped]
        except ImportError as exc:
            raise SinkError(f"the SQLite vector store needs pysqlite3-binary and sqlite-vec: {exc}") from None
        # nightowl's SQLite settings (WAL, busy_timeout, BEGIN IMMEDIATE) on pysqlite3.
        engine = make_engine(url, module=sqlite_module)

        @sa.event.listens_for(engine, "connect")
        def _load(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.enable_load_extension(True)
            sqlite_vec.load(dbapi_conn)
            dbapi_conn.enable_load_extension(False)

        _vec_engines[url] = engine
        return engine


def dispose_sink_engines() -> None:
    """Close the SQLite sink engines this process opened (tests, shutdown)."""
    with _vec_lock:
        for engine in [*_sql_engines.values(), *_vec_engines.values()]:
            engine.dispose()
        _sql_engines.clear()
        _vec_engines.clear()
