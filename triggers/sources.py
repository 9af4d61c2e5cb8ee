"""What every polling trigger shares: source-failure counting, defaults, URLs, engines.

A polling trigger (db_change, queue_depth, metric) does I/O in `evaluate`, so
the scheduler runs it off the dispatch thread. Its source failing is part of
its persisted state: three failed polls in a row set `source_failing`, which
`triggers list` shows and the watchdog alerts on; a failing source never just
goes quiet.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa

from triggers.urls import (
    MAX_ERROR_CHARS,
    SourceDefaults,
    mask_url,
    scrub,
    scrub_url_passwords,
    secret_url,
    shown_url,
    sqlite_dbapi,
)

# Re-exported from triggers.urls (callers import them from here). Listed for mypy's explicit
# re-export; a star import of this module therefore gives these names only (nothing in
# nightowl star-imports it; import what you need by name).
__all__ = [
    "MAX_ERROR_CHARS",
    "SourceDefaults",
    "mask_url",
    "scrub",
    "scrub_url_passwords",
    "secret_url",
    "shown_url",
    "sqlite_dbapi",
]

# Polls in a row that must fail before a trigger is marked `source_failing`.
FAILURES_TO_FLAG = 3


class SourceError(Exception):
    """A poll failed in a way the trigger author can fix; the message says how."""


def record_failure(state: dict[str, Any], error: str, now: datetime) -> dict[str, Any]:
    """Count a failed poll; the third in a row flags the source. Nothing else changes."""
    failures = int(state.get("failures", 0)) + 1
    return {
        **state,
        "failures": failures,
        "last_error": error,
        "last_error_at": now.isoformat(),
        "source_failing": failures >= FAILURES_TO_FLAG or bool(state.get("source_failing")),
    }


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """How a polling trigger's source is doing, as its state records it (`record_failure`
    and `record_success` keep these keys; everyone else reads them through here)."""

    failing: bool
    failures: int
    last_error: str | None
    last_error_at: str | None

    @classmethod
    def of(cls, state: dict[str, Any] | None) -> SourceHealth:
        state = state or {}
        error = state.get("last_error")
        at = state.get("last_error_at")
        return cls(
            failing=bool(state.get("source_failing")),
            failures=int(state.get("failures") or 0),
            last_error=None if error is None else str(error),
            last_error_at=None if at is None else str(at),
        )


def record_success(state: dict[str, Any]) -> dict[str, Any]:
    """A poll that worked: the failure count, the flag and the last error go (a source that
    recovered must not keep showing yesterday's error in `triggers show`)."""
    if not state.get("failures") and not state.get("source_failing") and "last_error" not in state:
        return state
    cleared = {k: v for k, v in state.items() if k not in ("last_error", "last_error_at")}
    return {**cleared, "failures": 0, "source_failing": False}


def check_number(value: object, what: str) -> float | None:
    """A source's reading as a float; None means "no data", and so does NaN (0/0 has no
    value to compare). +Inf and -Inf are readings. Anything else that is not a number fails.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # type: ignore[arg-type]  # Decimal, numeric strings, "+Inf"
        except (TypeError, ValueError, OverflowError):
            raise SourceError(f"{what} returned {value!r:.80}, not a number") from None
    number = float(value)
    return None if math.isnan(number) else number


def poll_interval(value: object, field: str = "every") -> timedelta:
    from agents.options import as_timedelta

    return as_timedelta(value, field, allow_zero=False)


# -- engines for watched databases ----------------------------------------------

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000


def engine_for(url: str) -> sa.Engine:
    """One pooled engine per watched URL, with connect and statement timeouts.

    A database that hangs must fail the poll (and count toward
    `source_failing`), not block the poller thread forever.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _make_engine(url)
            _engines[url] = engine
        return engine


def _make_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["connect_args"] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }
        kwargs["pool_size"] = 2
    elif parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
        module = sqlite_dbapi()
        if module is not None:
            kwargs["module"] = module
    return sa.create_engine(parsed, **kwargs)


def dispose_engines() -> None:
    """Close every watched-database pool (tests and shutdown)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


# -- readings and watched Redis/RabbitMQ queues ----------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll's result. `value=None` means no data (an empty query result)."""

    value: float | None
    extra: dict[str, Any] = field(default_factory=dict)


PRIORITY_SEP = "\x06\x16"
PRIORITIES = range(1, 10)  # kombu's priority lists besides the bare (priority 0) one
PUBLISHED_AT_HEADER = "nightowl_published_at"
# Counting unacked means reading the `unacked` hash; past this size we report None, not guess.
MAX_UNACKED_SCAN = 10_000
SOCKET_TIMEOUT_S = 5.0

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_for(url: str) -> redis.Redis:
    """One client per watched Redis URL, with timeouts so a dead Redis fails the poll."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
            )
            _clients[url] = client
        return client


def close_clients() -> None:
    """Close every watched-Redis client (tests, shutdown)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def celery_redis_reading(client: redis.Redis, queue: str, key_prefix: str, now: datetime) -> Reading:
    """Depth of a kombu Redis queue over all priority lists, plus unacked and oldest age."""
    base = f"{key_prefix}{queue}"
    keys = [base, *(f"{base}{PRIORITY_SEP}{p}" for p in PRIORITIES)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    for key in keys:
        pipe.lindex(key, -1)  # kombu LPUSHes and BRPOPs: the tail is the oldest message
    pipe.hlen(f"{key_prefix}unacked")
    replies = pipe.execute()
    lengths, tails, unacked_total = replies[: len(keys)], replies[len(keys) : 2 * len(keys)], replies[-1]
    depth = int(sum(lengths))
    stamps = [t for t in (_published_at(tail) for tail in tails if tail) if t is not None]
    oldest = max(0.0, now.timestamp() - min(stamps)) if stamps else None
    unacked = _unacked_for(client, key_prefix, queue, int(unacked_total))
    return Reading(float(depth), {"depth": depth, "unacked": unacked, "oldest_age_s": oldest})


def _published_at(raw: bytes) -> float | None:
    try:
        value = json.loads(raw).get("headers", {}).get(PUBLISHED_AT_HEADER)
    except (ValueError, AttributeError):
        return None  # a foreign message we cannot read: no age, but it still counts
    return float(value) if isinstance(value, int | float) else None


def _unacked_for(client: redis.Redis, key_prefix: str, queue: str, total: int) -> int | None:
    """Messages of this queue reserved by workers (kombu's `unacked` hash holds all queues)."""
    if total == 0:
        return 0
    if total > MAX_UNACKED_SCAN:
        return None
    count = 0
    for _, raw in client.hscan_iter(f"{key_prefix}unacked", count=1000):
        try:
            _, _, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        count += routing_key == queue
    return count


def rabbitmq_reading(url: str, queue: str) -> Reading:
    """A RabbitMQ queue's ready-message count through a passive declare."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    try:
        with Connection(url, connect_timeout=SOCKET_TIMEOUT_S) as conn:
            channel: Any = conn.channel()
            try:
                _, depth, _ = channel.queue_declare(queue=queue, passive=True)
            finally:
                channel.close()
    except OperationalError as exc:
        raise SourceError(f"RabbitMQ is unreachable: {exc}") from None
    except Exception as exc:
        if "NOT_FOUND" in str(exc) or "404" in str(exc):
            raise SourceError(f"RabbitMQ has no queue {queue!r}; check the name and vhost") from None
        raise
    return Reading(float(depth), {"depth": int(depth), "unacked": None, "oldest_age_s": None})
