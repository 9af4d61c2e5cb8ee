"""db_change: keyset polling, late commits, batches, failures; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.dispatch.service import TickFailedError
from scheduler.storage.store import Store
from tests.helpers import T0, make_service
from tests.polling import Poller, forget, registry_with
from triggers import DbChangeTrigger, TriggerDefinitionError, db_change

BASE = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


class Watched:
    """A table in a real database that a test writes to and a trigger watches."""

    def __init__(self, url: str, *, sequence: bool = False) -> None:
        self.url = url
        self.name = f"orders_{uuid.uuid4().hex[:8]}"
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        meta = sa.MetaData()
        self.table = sa.Table(
            self.name,
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=sequence),
            sa.Column("status", sa.String(16), nullable=False, server_default="new"),
            sa.Column("total", sa.Numeric(10, 2)),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
            sa.Index(f"ix_{self.name}_cursor", "updated_at", "id"),
        )
        meta.create_all(self.engine)

    def insert(self, *rows: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            for row in rows:  # one statement per row: rows may name different columns
                conn.execute(sa.insert(self.table).values(**row))

    def touch(self, row_id: int, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.table).where(self.table.c.id == row_id).values(updated_at=at, status="paid")
            )

    def close(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{self.name}"'))
        self.engine.dispose()


@pytest.fixture
def watched(db_url: str) -> Iterator[Watched]:
    w = Watched(db_url)
    yield w
    w.close()


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def trigger(w: Watched, **options: Any) -> Any:
    options.setdefault("cursor", "updated_at")
    options.setdefault("key", "id")
    return db_change(w.name, agent="on-row", name=options.pop("name", "orders"), db_url=w.url, **options)


def test_new_and_updated_rows_each_fire_once(watched: Watched) -> None:
    # Given rows that existed before the trigger did
    watched.insert({"id": 1, "updated_at": at(0)}, {"id": 2, "updated_at": at(1)})
    poller = Poller(trigger(watched), T0)
    assert poller.keys() == []  # start="now": history is not replayed
    # When new rows arrive, then one of them is updated
    watched.insert({"id": 3, "updated_at": at(2), "total": 12.5}, {"id": 4, "updated_at": at(3)})
    ev = poller.poll(5)
    # Then each new row fires once, keyed by key and cursor value, with the row as the event
    assert [f.idempotency_key for f in ev.firings] == [
        "db:orders:3:2026-03-01T09:00:02+00:00",
        "db:orders:4:2026-03-01T09:00:03+00:00",
    ]
    event = ev.firings[0].event
    assert event.kind == "db_change" and event.key == 3 and event.table == watched.name
    assert isinstance(event.row, dict)  # one row per run unless batch=True
    assert event.row["total"] == "12.50" and event.row["status"] == "new"
    assert ev.firings[0].overlap_key == "3"
    assert ev.firings[0].logical_time == at(2)
    assert poller.keys(5) == []
    watched.touch(3, at(10))
    assert poller.keys(5) == ["db:orders:3:2026-03-01T09:00:10+00:00"]
    assert poller.keys(5) == []


def test_pages_by_keyset_and_polls_again_at_once_when_a_page_is_full(watched: Watched) -> None:
    # Given 1,200 rows, many sharing a cursor value (ties are broken by the key)
    watched.insert(*({"id": i, "updated_at": at(i // 7)} for i in range(1, 1201)))
    poller = Poller(trigger(watched, start="beginning", batch_size=500), T0)
    poller.poll()
    # When polled repeatedly
    seen: list[str] = []
    pages = []
    for _ in range(4):
        ev = poller.poll(1)
        pages.append((len(ev.firings), ev.next_at == poller.now))
        seen.extend(f.idempotency_key for f in ev.firings)
    # Then pages of 500, 500, 200 (the full ones ask to poll again now), each row once, in order
    assert pages[:3] == [(500, True), (500, True), (200, False)]
    assert len(seen) == len(set(seen)) == 1200
    ids = [int(k.split(":")[2]) for k in seen]
    assert ids == sorted(ids)


def test_where_filters_with_bound_values(watched: Watched) -> None:
    poller = Poller(trigger(watched, where="status = :wanted", where_params={"wanted": "paid"}), T0)
    poller.poll()
    watched.insert(
        {"id": 1, "updated_at": at(0), "status": "new"}, {"id": 2, "updated_at": at(1), "status": "paid"}
    )
    assert poller.keys(1) == ["db:orders:2:2026-03-01T09:00:01+00:00"]


def test_batch_mode_fires_one_run_per_poll_and_drops_rows_already_run(watched: Watched) -> None:
    poller = Poller(trigger(watched, batch=True, lookback=timedelta(minutes=5)), T0)
    poller.poll()
    watched.insert({"id": 1, "updated_at": at(0)}, {"id": 2, "updated_at": at(1)})
    ev = poller.poll(1)
    assert [f.idempotency_key for f in ev.firings] == ["db:orders:batch:2026-03-01T09:00:01+00:00:2"]
    assert ev.firings[0].event.key == [1, 2]  # type: ignore[union-attr]
    # A late row behind the cursor joins the next batch; rows already run are not repeated
    watched.insert({"id": 3, "updated_at": at(0.5)}, {"id": 4, "updated_at": at(2)})
    ev = poller.poll(1)
    assert len(ev.firings) == 1
    assert ev.firings[0].event.key == [3, 4]  # type: ignore[union-attr]
    assert poller.keys(1) == []


def test_sequence_cursor_needs_no_lookback(watched: Watched) -> None:
    poller = Poller(trigger(watched, cursor="id", key="id", start="beginning"), T0)
    poller.poll()
    watched.insert({"id": 5, "updated_at": at(0)}, {"id": 6, "updated_at": at(0)})
    assert poller.keys(1) == ["db:orders:5:5", "db:orders:6:6"]
    assert poller.keys(1) == []


def test_a_lookback_of_the_wrong_kind_is_a_source_error_naming_the_fix(watched: Watched) -> None:
    poller = Poller(trigger(watched, cursor="id", key="id", lookback=timedelta(seconds=5)), T0)
    for _ in range(3):
        assert poller.poll(1).firings == []
    assert poller.state is not None and poller.state["source_failing"] is True
    assert "pass an integer" in poller.state["last_error"]


def test_missing_table_and_column_fail_the_source_not_the_module(watched: Watched) -> None:
    poller = Poller(
        db_change(
            "no_such_table", agent="on-row", name="ghost", db_url=watched.url, cursor="updated_at", key="id"
        ),
        T0,
    )
    poller.poll()
    assert poller.state is not None and "does not exist" in poller.state["last_error"]
    poller = Poller(trigger(watched, cursor="changed_at", name="typo"), T0)
    poller.poll()
    assert poller.state is not None and "no column(s) changed_at" in poller.state["last_error"]
    assert "updated_at" in poller.state["last_error"]  # names the columns it has


def test_a_down_database_sets_source_failing_after_three_polls_and_recovers(
    settings: Settings, store: Store, watched: Watched, tmp_path: Any
) -> None:
    # Given a trigger whose database refuses connections (and whose URL has a password)
    down = "postgresql://nightowl:hunter22@127.0.0.1:1/orders"
    spec = db_change(
        "orders",
        agent="on-row",
        name="down",
        db_url=down,
        cursor="updated_at",
        key="id",
        every=timedelta(seconds=5),
    )
    ok = trigger(watched, name="up")
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(spec, ok), clock)
    # When it is polled three times
    for _ in range(3):
        svc.tick()
        clock.advance(5)
    # Then it is flagged (in the column listings read), the error is kept, the password is not,
    # and the healthy trigger beside it is unaffected
    rows = store.trigger_rows()
    assert rows["down"].source_failing is True and rows["up"].source_failing is False
    assert "hunter22" not in rows["down"].state["last_error"]
    assert rows["down"].state["failures"] == 3
    assert "hunter22" not in str(spec.source.describe())
    # And when the database answers again (here: point the trigger at a real one), it recovers
    assert isinstance(spec.source, DbChangeTrigger) and isinstance(ok.source, DbChangeTrigger)
    spec.source.db_url = ok.source.db_url
    spec.source.table = watched.name
    clock.advance(5)
    svc.tick()
    assert store.trigger_rows()["down"].source_failing is False
    # and `triggers show` no longer shows the old error
    assert "last_error" not in store.trigger_rows()["down"].state


def test_runs_and_cursor_commit_together_so_a_lost_commit_replays_exactly_once(
    settings: Settings, store: Store, watched: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(trigger(watched, every=1)), clock)
    svc.tick()
    watched.insert({"id": 1, "updated_at": at(0)}, {"id": 2, "updated_at": at(1)})
    # Given a commit that dies (the process crashing between reading and committing)
    real = store.commit_tick
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        raise sa.exc.OperationalError("commit", {}, Exception("connection lost"))

    monkeypatch.setattr(svc.store, "commit_tick", dying)
    clock.advance(1)
    with pytest.raises(TickFailedError):
        svc.tick()
    assert calls["n"] == 1 and store.list_runs() == []
    # When a fresh scheduler (the restarted process) takes over
    monkeypatch.setattr(svc.store, "commit_tick", real)
    svc.close()
    again = make_service(settings, registry_with(trigger(watched, every=1)), clock)
    clock.advance(1)
    again.tick()
    clock.advance(1)
    again.tick()
    # Then each row produced exactly one run, with its per-row overlap key
    runs = store.list_runs()
    assert sorted(r.idempotency_key for r in runs) == [
        "db:orders:1:2026-03-01T09:00:00+00:00",
        "db:orders:2:2026-03-01T09:00:01+00:00",
    ]
    assert {r.overlap_key for r in runs} == {"orders:1", "orders:2"}
    cursor = store.load_trigger_states()["orders"][0]["cursor"]
    assert cursor[1] == 2


def test_watched_database_may_differ_from_nightowls(settings: Settings, store: Store, tmp_path: Any) -> None:
    other = Watched(f"sqlite:///{tmp_path / 'shop.db'}")
    try:
        clock = FakeClock(T0)
        svc = make_service(settings, registry_with(trigger(other)), clock)
        svc.tick()
        other.insert({"id": 7, "updated_at": at(0)})
        clock.advance(5)
        svc.tick()
        assert [r.idempotency_key for r in store.list_runs()] == ["db:orders:7:2026-03-01T09:00:00+00:00"]
    finally:
        other.close()


def test_default_database_is_nightowls_own(settings: Settings, store: Store, watched: Watched) -> None:
    clock = FakeClock(T0)
    spec = db_change(watched.name, agent="on-row", name="own", cursor="updated_at", key="id")
    svc = make_service(settings, registry_with(spec), clock)
    svc.tick()
    watched.insert({"id": 1, "updated_at": at(0)})
    clock.advance(5)
    assert svc.tick().inserted == 1
    assert "nightowl's database" in spec.source.describe()["db_url"]


def test_sqlite_text_times_with_equal_seconds_are_not_skipped(tmp_path: Any) -> None:
    """SQLite stores CURRENT_TIMESTAMP as 'YYYY-MM-DD HH:MM:SS'; the cursor compares as stored."""
    url = f"sqlite:///{tmp_path / 'text.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE jobs (id INTEGER PRIMARY KEY, "
                "updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
        )
    poller = Poller(
        db_change(
            "jobs",
            agent="on-row",
            name="jobs",
            db_url=url,
            cursor="updated_at",
            key="id",
            batch_size=1,
            lookback=timedelta(0),
            start="beginning",
        ),
        T0,
    )
    poller.poll()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, updated_at) VALUES "
                "(1, '2026-03-01 09:00:00'), (2, '2026-03-01 09:00:00'), "
                "(3, '2026-03-01 09:00:00.5')"
            )
        )
    keys = poller.keys(1) + poller.keys(1) + poller.keys(1) + poller.keys(1)
    assert [k.split(":")[2] for k in keys] == ["1", "2", "3"]
    engine.dispose()


@pytest.mark.parametrize(
    ("options", "field", "needle"),
    [
        ({"table": "orders; DROP TABLE runs"}, "table", "plain SQL identifier"),
        ({"cursor": "updated_at desc"}, "cursor", "plain SQL identifier"),
        ({"key": ["id", "x y"]}, "key", "plain SQL identifier"),
        ({"where": "1=1; DELETE FROM orders"}, "where", "single SQL condition"),
        ({"where_params": {"a": 1}}, "where_params", "without where"),
        ({"lookback": "10s"}, "lookback", "timedelta"),
        ({"batch_size": 0}, "batch_size", "1..100000"),
        ({"every": 0}, "every", "positive"),
        ({"db_url": "orders.db"}, "db_url", "SQLAlchemy URL"),
        ({"start": "yesterday"}, "start", "'now' or 'beginning'"),
        ({"cursur": "updated_at"}, "cursur", "cursor"),
    ],
)
def test_bad_definitions_fail_at_load_naming_file_field_and_fix(
    options: dict[str, Any], field: str, needle: str
) -> None:
    args: dict[str, Any] = {"table": "orders", "cursor": "updated_at", "key": "id"} | options
    table = args.pop("table")
    with pytest.raises(TriggerDefinitionError) as info:
        db_change(table, agent="on-row", name="bad", **args)
    message = str(info.value)
    assert "test_db_change.py:" in message and repr(field) in message and needle in message


# -- late commits: real concurrent transactions on PostgreSQL ---------------------------


@pytest.fixture
def pg_watched(pg_url: str) -> Iterator[Watched]:
    w = Watched(pg_url)
    yield w
    w.close()


def _open_tx(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url)
    conn.execute("BEGIN")
    return conn


def test_a_row_committed_after_a_later_one_was_read_still_fires(pg_watched: Watched) -> None:
    # Given writer A that starts first (now() = its start) but commits last
    poller = Poller(trigger(pg_watched), T0)
    poller.poll()
    slow = _open_tx(pg_watched.url)
    slow.execute(f'INSERT INTO "{pg_watched.name}" (id) VALUES (1)')
    fast = _open_tx(pg_watched.url)
    fast.execute("SELECT pg_sleep(0.05)")
    fast.execute(f'INSERT INTO "{pg_watched.name}" (id) VALUES (2)')
    fast.commit()
    # When the poller reads B (its cursor moves past A's timestamp), then A commits
    first = [k.split(":")[2] for k in poller.keys(1)]
    slow.commit()
    second = [k.split(":")[2] for k in poller.keys(1)]
    # Then A still produces its run, once
    assert (first, second) == (["2"], ["1"])
    assert poller.keys(1) == []
    slow.close()
    fast.close()


def test_a_window_fuller_than_a_page_is_paged_without_stalling_the_cursor(pg_watched: Watched) -> None:
    # Given 12 rows from one long transaction that commits after a later row was read
    poller = Poller(trigger(pg_watched, batch_size=5), T0)
    poller.poll()
    slow = _open_tx(pg_watched.url)
    slow.execute(f'INSERT INTO "{pg_watched.name}" (id) SELECT g FROM generate_series(1, 12) g')
    slow.execute("SELECT pg_sleep(0.05)")
    pg_watched.insert({"id": 100})
    assert [k.split(":")[2] for k in poller.keys(1)] == ["100"]
    slow.commit()
    slow.close()
    # When new rows keep arriving while the window is re-scanned page by page
    fired: list[str] = []
    for i in range(4):
        pg_watched.insert({"id": 200 + i})
        ev = poller.poll(1)
        ids = [f.idempotency_key.split(":")[2] for f in ev.firings]
        assert f"{200 + i}" in ids  # the forward cursor moved in the same poll
        fired.extend(ids)
    # Then every late row fired exactly once across the pages
    late = sorted(int(i) for i in fired if int(i) < 100)
    assert late == list(range(1, 13))
    assert len(fired) == len(set(fired)) == 16


def test_concurrent_writers_lose_no_row(pg_watched: Watched) -> None:
    """Eight writers with overlapping transactions while a poller runs: every row fires once."""
    poller = Poller(trigger(pg_watched, batch_size=50), T0)
    poller.poll()
    fired: list[str] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        with psycopg.connect(pg_watched.url) as conn:
            for j in range(25):
                with conn.transaction():
                    conn.execute(f'INSERT INTO "{pg_watched.name}" (id) VALUES (%s)', (n * 1000 + j,))
                    conn.execute("SELECT pg_sleep(0.002 * (%s %% 3))", (j,))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        fired.extend(poller.keys(0.01))
    stop.set()
    for _ in range(3):
        fired.extend(poller.keys(0.01))
    assert len(fired) == len(set(fired)) == 200


def test_a_text_cursor_of_iso_times_works_on_sqlite(tmp_path: Any) -> None:
    """SQLite has no time type: a TEXT column of ISO 8601 times is a time cursor there."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders_text (id INTEGER PRIMARY KEY, updated_at TEXT NOT NULL)"))
    poller = Poller(
        db_change("orders_text", agent="on-row", name="texty", db_url=url, cursor="updated_at", key="id"), T0
    )
    poller.poll()
    assert poller.state is not None and not poller.state.get("failures"), poller.state
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO orders_text (id, updated_at) VALUES (1, :a), (2, :b)"),
            {"a": "2026-03-01T09:00:00+00:00", "b": "2026-03-01T09:00:01+00:00"},
        )
    assert poller.keys(1) == [
        "db:texty:1:2026-03-01T09:00:00+00:00",
        "db:texty:2:2026-03-01T09:00:01+00:00",
    ]
    assert poller.keys(1) == []
    engine.dispose()
