"""SQL pieces the stores share."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection


def in_values(conn: Connection, column: sa.Column[Any], values: Iterable[str]) -> sa.ColumnElement[bool]:
    """`column IN (...)` for a list whose length varies (a chunk of ids, a batch of keys).

    On PostgreSQL the list is one JSON parameter: a statement whose placeholder count
    changes is converted and parsed anew each time, and an array parameter is dumped element
    by element in Python. SQLite gets the plain expanding IN.
    """
    if conn.dialect.name == "postgresql":
        document = sa.cast(sa.literal(json.dumps(list(values))), postgresql.JSONB)
        return column.in_(sa.select(sa.func.jsonb_array_elements_text(document)))
    return column.in_(list(values))
