"""Values read from a watched table: as JSON for the event, encoded for the persisted
cursor (typed, so it binds back exactly), rendered into idempotency keys.

db_change reads any SQLAlchemy database; these conversions are the part of it that does
not talk to one, so they are small pure functions.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa

CursorKind = Literal["time", "sequence"]


def bounded(text: str, limit: int) -> str:
    """Keep a key within its column; a long one keeps a readable head and a hash tail."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"{text[: limit - 26]}~{digest}"


def json_safe(value: Any) -> Any:
    """A database value as JSON for the event (the agent gets what the row holds)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def encode(value: Any) -> Any:
    """A cursor or key value for the persisted state, typed so it binds back exactly."""
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"dec": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "dt" in value:
            return datetime.fromisoformat(value["dt"])
        if "d" in value:
            return date.fromisoformat(value["d"])
        if "dec" in value:
            return Decimal(value["dec"])
        if "uuid" in value:
            return uuid.UUID(value["uuid"])
    return value


def render(value: Any) -> str:
    """A cursor/key value inside an idempotency key: UTC ISO for times, text otherwise."""
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    return str(json_safe(value))


def sort_key(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def as_time(text: Any) -> Any:
    """SQLite's stored time text as an aware datetime (naive means UTC), or as is."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return text
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def logical_time(version: Any, now: datetime) -> datetime:
    """The run's logical time: the row's timestamp cursor, or the poll time for sequences."""
    if isinstance(version, str):
        try:
            version = datetime.fromisoformat(version)
        except ValueError:
            return now
    if isinstance(version, datetime):
        return version if version.tzinfo else version.replace(tzinfo=UTC)
    return now


def minus(value: Any, lookback: timedelta | int, text_time: bool) -> Any:
    """The start of the look-back window, in the cursor's own representation."""
    if text_time:
        moment = datetime.fromisoformat(str(value)) - lookback  # type: ignore[operator]
        sep = "T" if "T" in str(value) else " "
        return moment.isoformat(sep=sep, timespec="seconds").split("+")[0]
    return value - lookback


def cursor_kind(column: sa.Column[Any]) -> CursorKind | None:
    if isinstance(column.type, sa.DateTime | sa.Date):
        return "time"
    if isinstance(column.type, sa.Integer | sa.Numeric):
        return "sequence"
    return None
