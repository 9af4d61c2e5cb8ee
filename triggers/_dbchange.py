"""`db_change(...)`: wake an agent for each new or changed row, found by keyset polling.

Why polling with a keyset on `(cursor, key)`: it works against any SQLAlchemy
database without triggers or replication slots, and each poll costs
O(changes) with an index on `(cursor, key)`, not O(table).

Why a separate look-back re-scan: on PostgreSQL `now()` is the start of the
writer's transaction, so a row can commit *after* a row with a later cursor
value was already read (Kafka Connect JDBC loses these). Each poll re-reads
the `lookback` window behind the cursor, paged on its own so a full window
never stalls the forward cursor; rows already seen are remembered (by a short
hash, only while inside the window) and the idempotency key
`db:<name>:<key>:<cursor value>` makes any re-read harmless anyway.

The cursor advances only in the transaction that inserts the runs it
produced (the scheduler commits state and runs together), so a crash between
reading and committing loses and duplicates nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Never

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from agents import AgentSpec, RowChange
from agents.location import caller_location
from agents.options import as_timedelta, check_choice
from triggers._common import check_common, collects, fail, field_check, reject_unknown
from triggers._rowvalues import (
    CursorKind,
    as_time,
    bounded,
    cursor_kind,
    decode,
    encode,
    json_safe,
    logical_time,
    minus,
    render,
    sort_key,
)
from triggers.abc import Evaluation, Firing, Overlap, PollingTrigger, TriggerSpec, check_state, declare
from triggers.sources import (
    SourceDefaults,
    SourceError,
    engine_for,
    poll_interval,
    record_failure,
    record_success,
    scrub,
    secret_url,
    shown_url,
)

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
DEFAULT_TIME_LOOKBACK = timedelta(seconds=10)
# Hashes of rows seen inside the look-back window; beyond this the oldest are forgotten
# (their runs still dedupe on the idempotency key; only batch mode could re-send them).
MAX_SEEN = 50_000
KEY_LIMIT = 512
CURSOR = "_nightowl_cursor"  # the cursor column as read (SQLite times: the stored text)

Start = Literal["now", "beginning"]


@dataclass(frozen=True, slots=True)
class _Table:
    """What reflection found: the table, its cursor kind, and how to read the cursor."""

    url: str
    table: sa.Table
    cursor: sa.ColumnElement[Any]
    keys: tuple[sa.Column[Any], ...]
    kind: CursorKind
    text_time: bool  # SQLite keeps times as text: compare them as stored, never reformatted


class DbChangeTrigger(PollingTrigger):
    """Keyset poller; the scheduler runs `evaluate` off its dispatch thread."""

    kind = "db_change"
    state_version = 1
    consumes = True  # paused: not polled, so the cursor waits and no changed row is lost

    def __init__(
        self,
        table: str,
        *,
        schema: str | None,
        db_url: SecretStr | None,
        cursor: str,
        key: tuple[str, ...],
        where: str | None,
        where_params: Mapping[str, Any],
        every: timedelta,
        batch_size: int,
        lookback: timedelta | int | None,
        batch: bool,
        start: Start,
    ) -> None:
        self.table = table
        self.schema = schema
        self.db_url = db_url
        self.cursor = cursor
        self.key = key
        self.where = where
        self.where_params = dict(where_params)
        self.every = every
        self.batch_size = batch_size
        self.lookback = lookback
        self.batch = batch
        self.start = start
        self.defaults = SourceDefaults()
        self._reflected: _Table | None = None

    # -- contract ---------------------------------------------------------------

    def secrets(self) -> tuple[SecretStr | None, ...]:
        return (self.db_url,)

    def fingerprint(self) -> str:
        params = json.dumps(self.where_params, sort_keys=True, default=str)
        return (
            f"{self.schema or ''}.{self.table}|{self.cursor}|{','.join(self.key)}|"
            f"{self.where or ''}|{params}|batch={self.batch}"
        )

    def describe(self) -> dict[str, Any]:
        lookback: Any = self.lookback
        if isinstance(lookback, timedelta):
            lookback = f"{lookback.total_seconds()}s"
        return {
            "table": f"{self.schema}.{self.table}" if self.schema else self.table,
            "db_url": shown_url(self.db_url, "(nightowl's database)"),
            "cursor": self.cursor,
            "key": list(self.key),
            "where": self.where,
            "every_s": self.every.total_seconds(),
            "batch_size": self.batch_size,
            "lookback": lookback if lookback is not None else "10s, or 0 for a sequence cursor",
            "batch": self.batch,
            "start": self.start,
        }

    def evaluate(self, name: str, now: datetime, state: dict[str, Any] | None) -> Evaluation:
        state = check_state(state, self.state_version, self.kind)
        fp = self.fingerprint()
        if state is None or state.get("fingerprint") != fp:
            state = {
                "version": self.state_version,
                "fingerprint": fp,
                "initialised": False,
                "cursor": None,
                "floor": None,
                "rescan": None,
                "seen": [],
            }
        try:
            found = self._reflect()
            with engine_for(found.url).connect() as conn:  # short: never held across polls
                if not state["initialised"]:
                    return Evaluation(
                        [], record_success(self._initialise(conn, found, state)), now + self.every
                    )
                return self._poll(conn, found, name, now, state)
        except (SQLAlchemyError, SourceError, OSError) as exc:
            self._reflected = None  # reflect again once the source answers
            message = scrub(f"{type(exc).__name__}: {exc}", self.db_url, _secret(self.defaults.database_url))
            return Evaluation([], record_failure(state, message, now), now + self.every)

    # -- reflection --------------------------------------------------------------

    def _url(self) -> str:
        if self.db_url is not None:
            return self.db_url.get_secret_value()
        if self.defaults.database_url:
            return self.defaults.database_url
        raise SourceError("no database to watch: pass db_url= to db_change or set NIGHTOWL_DATABASE_URL")

    def _reflect(self) -> _Table:
        url = self._url()
        if self._reflected is not None and self._reflected.url == url:
            return self._reflected
        engine = engine_for(url)
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema, autoload_with=engine)
        except NoSuchTableError:
            where = f"schema {self.schema!r}" if self.schema else "the watched database"
            raise SourceError(
                f"table {self.table!r} does not exist in {where}; create it or fix table=/db_url="
            ) from None
        missing = [c for c in (self.cursor, *self.key) if c not in table.c]
        if missing:
            raise SourceError(
                f"table {self.table!r} has no column(s) {', '.join(missing)}; "
                f"it has {', '.join(table.c.keys())}. Fix cursor=/key="
            )
        column = table.c[self.cursor]
        kind = cursor_kind(column)
        if kind is None and engine.dialect.name == "sqlite" and isinstance(column.type, sa.String):
            # SQLite has no time type: a TEXT column holding ISO 8601 times (what
            # datetime('now') and Python's isoformat() write) is read as one, compared as
            # stored, as SQLite compares its TIMESTAMP columns.
            kind = "time"
        if kind is None:
            raise SourceError(
                f"cursor column {self.cursor!r} is {column.type}; db_change needs a "
                "timestamp or an integer column (on SQLite a TEXT column of ISO 8601 times "
                "works too; declare it TIMESTAMP to say so)"
            )
        self._check_lookback(kind)
        text_time = kind == "time" and engine.dialect.name == "sqlite"
        cursor: sa.ColumnElement[Any] = sa.type_coerce(column, sa.String) if text_time else column
        keys = tuple(table.c[k] for k in self.key)
        self._reflected = _Table(url, table, cursor, keys, kind, text_time)
        return self._reflected

    def _check_lookback(self, kind: CursorKind) -> None:
        lb = self.lookback
        if kind == "time" and lb is not None and not isinstance(lb, timedelta):
            raise SourceError(
                f"lookback={lb!r} is a number but cursor {self.cursor!r} is a "
                "timestamp; pass lookback=timedelta(seconds=...)"
            )
        if kind == "sequence" and isinstance(lb, timedelta):
            raise SourceError(
                f"lookback={lb} is a duration but cursor {self.cursor!r} is a "
                "sequence; pass an integer (how many values back), or 0"
            )

    def _lookback(self, kind: CursorKind) -> timedelta | int:
        if self.lookback is not None:
            return self.lookback
        return DEFAULT_TIME_LOOKBACK if kind == "time" else 0

    # -- polling -------------------------------------------------------------------

    def _select(self, found: _Table) -> sa.Select[Any]:
        query = sa.select(found.cursor.label(CURSOR), *found.table.c)
        if self.where:
            query = query.where(sa.text(self.where).bindparams(**self.where_params))
        return query

    def _position(self, found: _Table, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`(cursor, key...) > (:c, :k...)` with values bound, typed like their columns."""
        cols = [found.cursor, *found.keys]
        params = [sa.bindparam(None, v, type_=c.type) for c, v in zip(cols, values, strict=True)]
        return sa.tuple_(*cols) > sa.tuple_(*params)

    def _order(self, found: _Table, descending: bool = False) -> list[sa.ColumnElement[Any]]:
        cols = [found.cursor, *found.keys]
        return [c.desc() for c in cols] if descending else [c.asc() for c in cols]

    def _initialise(self, conn: sa.Connection, found: _Table, state: dict[str, Any]) -> dict[str, Any]:
        """`start="now"`: begin after the newest existing row; rows before it are history."""
        if self.start == "beginning":
            return {**state, "initialised": True}
        query = sa.select(found.cursor, *found.keys)
        if self.where:
            query = query.where(sa.text(self.where).bindparams(**self.where_params))
        newest = conn.execute(query.order_by(*self._order(found, descending=True)).limit(1)).first()
        position = [encode(v) for v in newest] if newest is not None else None
        return {**state, "initialised": True, "cursor": position, "floor": position}

    def _poll(
        self, conn: sa.Connection, found: _Table, name: str, now: datetime, state: dict[str, Any]
    ) -> Evaluation:
        cursor = [decode(v) for v in state["cursor"]] if state["cursor"] else None
        floor = [decode(v) for v in state["floor"]] if state["floor"] else None
        forward_q = self._select(found)
        if cursor is not None:
            forward_q = forward_q.where(self._position(found, cursor))
        forward = list(conn.execute(forward_q.order_by(*self._order(found)).limit(self.batch_size)))
        rescan, rescan_pos = self._rescan(conn, found, state, cursor, floor)

        seen = [tuple(e) for e in state.get("seen", [])]
        seen_hashes = {h for _, h in seen}
        fresh: list[sa.Row[Any]] = []
        for row in [*rescan, *forward]:
            digest = self._digest(row)
            if digest in seen_hashes:
                continue
            seen_hashes.add(digest)
            seen.append((self._ordinal(found, row._mapping[CURSOR]), digest))
            fresh.append(row)
        fresh.sort(key=lambda r: tuple(sort_key(v) for v in self._position_of(r)))

        new_cursor = state["cursor"]
        if forward:
            new_cursor = [encode(v) for v in self._position_of(forward[-1])]
        low = self._low_ordinal(found, new_cursor)
        seen = [e for e in seen if low is not None and e[0] >= low][-MAX_SEEN:]
        firings = self._firings(name, found, fresh, now)
        busy = len(forward) >= self.batch_size or rescan_pos is not None
        new_state = record_success(
            {**state, "cursor": new_cursor, "rescan": rescan_pos, "seen": [list(e) for e in seen]}
        )
        return Evaluation(firings, new_state, now if busy else now + self.every)

    def _rescan(
        self,
        conn: sa.Connection,
        found: _Table,
        state: dict[str, Any],
        cursor: list[Any] | None,
        floor: list[Any] | None,
    ) -> tuple[list[sa.Row[Any]], Any]:
        """One page of the look-back window behind the cursor; where the next page starts."""
        lookback = self._lookback(found.kind)
        if cursor is None or not lookback:
            return [], None
        low = minus(cursor[0], lookback, found.text_time)
        query = self._select(found).where(
            found.cursor >= sa.bindparam(None, low, type_=found.cursor.type),
            sa.not_(self._position(found, cursor)),
        )
        if floor is not None:
            query = query.where(self._position(found, floor))
        if state.get("rescan"):
            query = query.where(self._position(found, [decode(v) for v in state["rescan"]]))
        rows = list(conn.execute(query.order_by(*self._order(found)).limit(self.batch_size)))
        if len(rows) < self.batch_size:
            return rows, None
        return rows, [encode(v) for v in self._position_of(rows[-1])]

    def _position_of(self, row: sa.Row[Any]) -> list[Any]:
        data = row._mapping
        return [data[CURSOR], *(data[k] for k in self.key)]

    def _key_of(self, row: sa.Row[Any]) -> Any:
        data = row._mapping
        if len(self.key) == 1:
            return json_safe(data[self.key[0]])
        return [json_safe(data[k]) for k in self.key]

    def _digest(self, row: sa.Row[Any]) -> str:
        text = json.dumps([render(v) for v in self._position_of(row)])
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]

    def _ordinal(self, found: _Table, value: Any) -> float:
        """A cursor value as a number, to forget seen rows once they leave the window."""
        if found.kind == "sequence":
            return float(value)
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if isinstance(moment, datetime):
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        return datetime.combine(moment, datetime.min.time(), UTC).timestamp()

    def _low_ordinal(self, found: _Table, cursor: list[Any] | None) -> float | None:
        if not cursor:
            return None
        lookback = self._lookback(found.kind)
        base = self._ordinal(found, decode(cursor[0]))
        return base - (lookback.total_seconds() if isinstance(lookback, timedelta) else lookback)

    def _firings(self, name: str, found: _Table, rows: list[sa.Row[Any]], now: datetime) -> list[Firing]:
        if not rows:
            return []
        table = found.table.name

        def row_dict(row: sa.Row[Any]) -> dict[str, Any]:
            return {k: json_safe(v) for k, v in row._mapping.items() if k != CURSOR}

        def version_of(row: sa.Row[Any]) -> Any:
            raw = row._mapping[CURSOR]
            return as_time(raw) if found.text_time else raw

        if self.batch:
            last = rows[-1]
            version, key = version_of(last), self._key_of(last)
            idem = bounded(f"db:{name}:batch:{render(version)}:{render(key)}", KEY_LIMIT)
            event = RowChange(
                table=table,
                key=[self._key_of(r) for r in rows],
                version=[json_safe(version_of(r)) for r in rows],
                row=[row_dict(r) for r in rows],
            )
            return [Firing(idem, logical_time(version, now), event, overlap_key=None)]
        out = []
        for row in rows:
            version, key = version_of(row), self._key_of(row)
            idem = bounded(f"db:{name}:{render(key)}:{render(version)}", KEY_LIMIT)
            event = RowChange(table=table, key=key, version=json_safe(version), row=row_dict(row))
            out.append(Firing(idem, logical_time(version, now), event, overlap_key=bounded(render(key), 200)))
        return out


def _secret(url: str | None) -> SecretStr | None:
    return SecretStr(url) if url else None


def _identifier(value: object, field: str) -> str:
    if not isinstance(value, str) or IDENT_RE.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a plain SQL identifier (letters, digits, _; at most "
            "63 characters); identifiers are never pasted into SQL"
        )
    return value


def _lookback_arg(value: object) -> timedelta | int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"lookback must be zero or positive, got {value}")
        return value
    if isinstance(value, timedelta | float):
        return as_timedelta(value, "lookback")
    raise ValueError(
        f"lookback must be a timedelta (timestamp cursor) or an int (sequence cursor), got {value!r}"
    )


_OPTIONS = (
    "db_url",
    "cursor",
    "key",
    "where",
    "where_params",
    "every",
    "batch_size",
    "lookback",
    "batch",
    "overlap",
    "schema",
    "start",
)


@collects
def db_change(
    table: str,
    *,
    agent: AgentSpec | str,
    name: str,
    cursor: str,
    key: str | Sequence[str],
    db_url: str | SecretStr | None = None,
    where: str | None = None,
    where_params: Mapping[str, Any] | None = None,
    every: timedelta | float = timedelta(seconds=5),
    batch_size: int = 500,
    lookback: timedelta | float | int | None = None,
    batch: bool = False,
    overlap: Overlap = "per_key",
    schema: str | None = None,
    start: Start = "now",
    **unknown: Never,  # mypy rejects an unknown option; at run time it gets "did you mean"
) -> TriggerSpec:
    """Run `agent` for each new or updated row of `table` (one run per row, or per poll).

    `db_change("orders", agent=triage, name="new-orders", cursor="updated_at", key="id")`
    """
    location = caller_location()
    call = f"db_change({table!r}, name={name!r})"
    reject_unknown(location, call, unknown, ("table", "agent", "name", *_OPTIONS))
    trigger_name, agent_ref, policy = check_common(location, call, name, agent, overlap)
    fix_ident = "name a real table/column with letters, digits and _ only"
    tbl = field_check(location, call, "table", fix_ident, lambda: _identifier(table, "table"))
    sch = (
        None
        if schema is None
        else field_check(location, call, "schema", fix_ident, lambda: _identifier(schema, "schema"))
    )
    cur = field_check(
        location,
        call,
        "cursor",
        "name the timestamp or sequence column",
        lambda: _identifier(cursor, "cursor"),
    )
    keys = (key,) if isinstance(key, str) else tuple(key) if isinstance(key, Sequence) else (key,)
    if not keys:
        raise fail(location, call, "key", "no key column given", "name the primary key column")
    key_cols = tuple(
        field_check(location, call, "key", fix_ident, lambda k=k: _identifier(k, "key"))  # type: ignore[misc]
        for k in keys
    )
    url = field_check(location, call, "db_url", "pass a SQLAlchemy URL", lambda: secret_url(db_url, "db_url"))
    if where is not None and (not isinstance(where, str) or ";" in where or not where.strip()):
        raise fail(
            location,
            call,
            "where",
            f"{where!r} is not a single SQL condition",
            'write one boolean expression like "status = :status" and bind values with '
            "where_params={'status': 'new'}",
        )
    if where_params is not None and (
        not isinstance(where_params, Mapping) or not all(isinstance(k, str) for k in where_params)
    ):
        raise fail(
            location,
            call,
            "where_params",
            f"got {where_params!r:.60}, not a mapping",
            "pass a dict of bound values, e.g. where_params={'status': 'new'}",
        )
    params = dict(where_params or {})
    if where is None and params:
        raise fail(location, call, "where_params", "given without where=", "add where= or drop it")
    interval = field_check(location, call, "every", "pass a positive timedelta", lambda: poll_interval(every))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise fail(location, call, "batch_size", f"got {batch_size!r}", "pass an int in 1..100000")
    back = field_check(
        location,
        call,
        "lookback",
        "pass timedelta(seconds=10) for a timestamp cursor, an int for a sequence",
        lambda: _lookback_arg(lookback),
    )
    if not isinstance(batch, bool):
        raise fail(location, call, "batch", f"got {batch!r}", "pass True or False")
    mode = field_check(
        location,
        call,
        "start",
        "use 'now' or 'beginning'",
        lambda: check_choice(start, "start", ("now", "beginning")),
    )
    source = DbChangeTrigger(
        tbl,
        schema=sch,
        db_url=url,
        cursor=cur,
        key=key_cols,
        where=where,
        where_params=params,
        every=interval,
        batch_size=batch_size,
        lookback=back,
        batch=batch,
        start=mode,  # type: ignore[arg-type]
    )
    return declare(TriggerSpec(trigger_name, agent_ref, policy, location, source))
