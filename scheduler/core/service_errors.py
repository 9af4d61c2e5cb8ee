"""A database, Redis or broker that fails is a failed operation with one clear line (exit 1),
not a traceback: the operator needs to know which service, what it said, and what to check."""

from __future__ import annotations

import re
from datetime import timedelta

import pydantic
import redis
import sqlalchemy as sa

from triggers.urls import scrub

# A missing table (SQLite, PostgreSQL); not `database "x" does not exist` nor a missing role,
# which are the URL's to fix, not the schema's.
_MISSING_SCHEMA = re.compile(r'no such table|relation "[^"]*" does not exist')


def service_error(exc: BaseException) -> str | None:
    """The message for a service failure or a setting that does not parse, or None when `exc`
    is something else (a bug)."""
    if isinstance(exc, pydantic.ValidationError) and exc.title == "Settings":
        return settings_error(exc)
    if isinstance(exc, sa.exc.DBAPIError) and isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.ProgrammingError
    ):
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if _MISSING_SCHEMA.search(detail):
            return scrubbed(f"the database has no nightowl schema ({detail}): run `nightowl db upgrade`")
        if isinstance(exc, sa.exc.ProgrammingError):
            return None  # our SQL is wrong: a bug, not the operator's to fix
        return scrubbed(
            f"the database failed: {detail} (check NIGHTOWL_DATABASE_URL and that the "
            "server is up; `nightowl doctor` checks every setting)"
        )
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return scrubbed(
            f"Redis failed: {exc} (check NIGHTOWL_REDIS_URL and that the server is up; "
            "`nightowl doctor` checks every setting)"
        )
    import kombu.exceptions  # here: commands that never touch the broker need not import kombu

    if isinstance(exc, kombu.exceptions.OperationalError):
        return scrubbed(
            f"the broker failed: {exc} (check NIGHTOWL_BROKER_URL, or "
            "NIGHTOWL_REDIS_URL when no broker is set)"
        )
    return None


_SECRET_FIELD = re.compile(r"url|secret|auth|password", re.I)


def settings_error(exc: pydantic.ValidationError) -> str:
    """One line for settings that do not parse: which variable, what is wrong, what it got
    (unless it may be a secret)."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"NIGHTOWL_{field.upper()}" if field else "a setting"
        value = error.get("input")
        shown = f"{value.total_seconds():g} s" if isinstance(value, timedelta) else repr(value)
        got = "" if _SECRET_FIELD.search(field) else f" (got {shown})"
        parts.append(f"{name}: {error['msg']}{got}")
    return scrubbed("invalid setting " + "; ".join(parts) + " (see docs/operations.md, Settings)")


def scrubbed(message: str) -> str:
    """No password from any configured URL, even if a driver echoes one."""
    try:
        from scheduler.core.settings import Settings

        s = Settings()
        return scrub(message, s.database_url, s.redis_url, s.broker_url)
    except Exception:  # settings that do not parse: nothing of theirs can be in the message
        return scrub(message)
