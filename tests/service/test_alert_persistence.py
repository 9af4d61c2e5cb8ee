"""The alert state machine through the scheduler service: state survives restarts and
leader changes, and what it stores (±Inf included) is the same on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import T0, make_service
from tests.polling import Gauge, Poller, forget, registry_with
from triggers import metric


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


def alert(gauge: Gauge, **options: Any) -> Any:
    options.setdefault("every", 10)
    return metric(gauge, agent="on-alert", name=options.pop("name", "errors"), **options)


def test_a_restart_keeps_pending_and_firing(settings: Settings, store: Store) -> None:
    # Given a scheduler that saw the breach begin (pending, for_=60 s)
    gauge = Gauge(20)
    clock = FakeClock(T0)
    first = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    first.tick()
    clock.advance(30)
    first.tick()
    assert store.trigger_rows()["errors"].state["alert_state"] == "pending"
    first.close()
    # When a new scheduler process takes over 30 s later (not a fresh 60 s wait)
    clock.advance(30)
    second = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    report = second.tick()
    # Then the breach that began before the restart fires now, once
    assert report.inserted == 1
    clock.advance(10)
    second.close()
    third = make_service(settings, registry_with(alert(gauge, above=10, for_=60)), clock)
    assert third.tick().inserted == 0  # still firing after another restart: no re-fire
    assert [r.idempotency_key for r in store.list_runs()] == ["alert:errors:1:firing"]


def test_a_paused_ex_leader_cannot_write_an_older_episode_back(settings: Settings, store: Store) -> None:
    # Given leader A whose poll of the source is stuck (a paused process, as far as we care)
    gauge = Gauge(20)
    clock = FakeClock(T0)
    a = make_service(settings, registry_with(alert(gauge, above=10, on_resolve=True)), clock, owner="a")
    a.poll_wait = timedelta(seconds=0.2)
    gauge.release.clear()
    a.tick()
    # When A loses the lease and B runs a whole episode (firing, then resolved)
    a.resign()
    b_gauge = Gauge(20)
    b = make_service(settings, registry_with(alert(b_gauge, above=10, on_resolve=True)), clock, owner="b")
    b.tick()
    clock.advance(10)
    b_gauge.value = 1
    b.tick()
    b.resign()
    after_b = store.trigger_rows()["errors"]
    assert after_b.state["alert_state"] == "ok"
    # And A takes the lease back and its stale poll (breach seen long ago) completes
    gauge.release.set()
    time.sleep(0.5)  # the stuck poll finishes
    clock.advance(10)
    report = a.tick()
    # Then A's write loses the compare-and-set: B's episode stands, nothing fires twice
    assert report.conflicts == 1
    assert store.trigger_rows()["errors"].revision == after_b.revision
    keys = sorted(r.idempotency_key for r in store.list_runs())
    assert keys == ["alert:errors:1:firing", "alert:errors:1:resolved"]


def test_state_transitions_are_listed(settings: Settings, store: Store) -> None:
    gauge = Gauge(20)
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(alert(gauge, above=10, for_=timedelta(minutes=1))), clock)
    svc.tick()
    row = store.trigger_rows()["errors"]
    assert row.state["alert_state"] == "pending" and row.state["last_value"] == 20
    assert row.next_evaluation == T0 + timedelta(seconds=10)


def test_sql_source_reads_a_scalar_with_bound_values(db_url: str) -> None:
    import sqlalchemy as sa

    from triggers import sql

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    table = f"jobs_{T0:%H%M%S}_{id(engine) % 10000}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, status TEXT)"))
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 'failed'), (2, 'failed'), (3, 'ok')"))
    try:
        spec = metric(
            sql(f"SELECT count(*) FROM {table} WHERE status = :s", db_url=db_url, params={"s": "failed"}),
            agent="on-alert",
            name="failed-jobs",
            above=1,
        )
        poller = Poller(spec, T0)
        fired = poller.poll().firings
        assert [(f.event.state, f.event.value) for f in fired] == [("firing", 2.0)]  # type: ignore[union-attr]
        empty = Poller(
            metric(
                sql(f"SELECT max(id) FROM {table} WHERE status = 'none'", db_url=db_url),
                agent="on-alert",
                name="none",
                above=1,
                empty="fail",
            ),
            T0,
        )
        empty.poll()
        assert empty.state is not None and "no data" in empty.state["last_error"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()


def test_an_infinite_reading_is_stored_and_runs_on_both_databases(settings: Settings, store: Store) -> None:
    """jsonb refuses Infinity: the state and the run's event must be stored in a form it takes,
    the same on SQLite and PostgreSQL, and the agent still gets a float."""
    from agents import event_from_json

    gauge = Gauge(float("inf"))
    clock = FakeClock(T0)
    svc = make_service(settings, registry_with(alert(gauge, above=0.05, on_resolve=True)), clock)
    report = svc.tick()
    assert (report.inserted, report.errors) == (1, 0)
    row = store.trigger_rows()["errors"]
    assert (row.state["alert_state"], row.state["last_value"], row.state["episode"]) == ("firing", "+Inf", 1)
    (run,) = store.list_runs()
    assert run.idempotency_key == "alert:errors:1:firing"
    assert run.event is not None and run.event["value"] == "+Inf"
    event = event_from_json(run.event)
    assert event.value == float("inf")  # type: ignore[union-attr]
    # And a NaN reading afterwards (0/0: traffic stopped) is no data: the alert resolves
    gauge.value = float("nan")
    clock.advance(10)
    assert svc.tick().inserted == 1
    assert store.trigger_rows()["errors"].state["alert_state"] == "ok"
