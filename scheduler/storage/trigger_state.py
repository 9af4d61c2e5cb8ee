"""Trigger state: every trigger's versioned state, read at leadership and written by the tick.

Each write is a compare-and-set on the revision the leader read: a paused ex-leader that
wakes up writes nothing (StateConflictError) instead of rewinding a newer leader's state.
The writes run inside the tick's transaction (`RunStore.commit_tick`), so a run and the
state that fired it commit together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from scheduler.core.errors import StateConflictError
from scheduler.core.values import StateWrite
from scheduler.storage._sql import StoreGroup, state_t
from scheduler.storage.dialect import Dialect
from scheduler.storage.models import TriggerState

# A chunk's compare-and-sets as one statement over one JSON document (Dialect.json_batches).
_CAS_STATES_JSON = sa.text(
    "UPDATE trigger_state AS t SET state = v.state, revision = t.revision + 1, "
    "next_evaluation = v.next, source_failing = v.failing, updated_at = :now "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
    "AS v(name text, rev int, state jsonb, next timestamptz, failing boolean) "
    "WHERE t.name = v.name AND t.revision = v.rev RETURNING t.name"
)
# The same compare-and-set, one row per parameter set (executemany).
_CAS_STATE = (
    sa.update(state_t)
    .where(state_t.c.name == sa.bindparam("b_name"))
    .where(state_t.c.revision == sa.bindparam("b_rev"))
    .values(
        state=sa.bindparam("b_state"),
        revision=state_t.c.revision + 1,
        next_evaluation=sa.bindparam("b_next"),
        source_failing=sa.bindparam("b_failing"),
        updated_at=sa.bindparam("b_now"),
    )
)


def json_default(value: object) -> str:
    """Datetimes in a JSON document for PostgreSQL: ISO 8601 with the offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_states(conn: Connection, dialect: Dialect, states: Sequence[StateWrite], now: datetime) -> None:
    """Create new states and compare-and-set existing ones on `conn`'s transaction.

    Raises StateConflictError when a state was created concurrently or its revision moved
    (the caller's transaction then rolls back: nothing of the tick lands).
    """
    new = [s for s in states if s.expected_revision == 0]
    old = [s for s in states if s.expected_revision > 0]
    if new:
        stmt = (
            dialect.insert(state_t).on_conflict_do_nothing(index_elements=["name"]).returning(state_t.c.name)
        )
        written = {
            row.name
            for row in conn.execute(
                stmt,
                [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "state": s.state,
                        "revision": 1,
                        "next_evaluation": s.next_evaluation,
                        "updated_at": now,
                        "source_failing": s.source_failing,
                        "paused": False,
                    }
                    for s in new
                ],
            )
        }
        if len(written) != len(new):
            lost = sorted({s.name for s in new} - written)
            raise StateConflictError(f"trigger state created concurrently: {lost}")
    if not old:
        return
    if dialect.json_batches:
        # Every compare-and-set of a chunk in one statement (one round trip, not 500).
        document = json.dumps(
            [
                {
                    "name": s.name,
                    "rev": s.expected_revision,
                    "state": s.state,
                    "next": s.next_evaluation,
                    "failing": s.source_failing,
                }
                for s in old
            ],
            default=json_default,
        )
        matched = len(conn.execute(_CAS_STATES_JSON, {"rows": document, "now": now}).fetchall())
    else:
        matched = conn.execute(
            _CAS_STATE,
            [
                {
                    "b_name": s.name,
                    "b_rev": s.expected_revision,
                    "b_state": s.state,
                    "b_next": s.next_evaluation,
                    "b_failing": s.source_failing,
                    "b_now": now,
                }
                for s in old
            ],
        ).rowcount
    if matched != len(old):
        raise StateConflictError(f"{len(old) - matched} trigger state(s) changed under us")


class TriggerStateStore(StoreGroup):
    """The trigger_state table: what the scheduler loads when it becomes leader, and the
    rows the CLI lists."""

    def load_trigger_states(self) -> dict[str, tuple[dict[str, Any], int]]:
        """Every persisted trigger state as (state, revision)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(state_t.c.name, state_t.c.state, state_t.c.revision))
            return {r.name: (r.state, r.revision) for r in rows}

    def trigger_rows(self) -> dict[str, TriggerState]:
        with Session(self.engine, expire_on_commit=False) as session:
            return {row.name: row for row in session.scalars(sa.select(TriggerState))}
