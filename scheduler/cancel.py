"""Cancellation requests, carried in Redis so any process can ask and the holder sees it.

The flag is advisory: the worker's heartbeat thread turns it into
`ctx.cancelled`; the run's terminal state is still written under its fence.
"""

from __future__ import annotations

from typing import Any, cast

import redis

FLAG_TTL_S = 24 * 3600
REASONS = ("by_user", "cancel_other", "no_progress")  # no_progress: from the watchdog


def _key(prefix: str, run_id: str) -> str:
    return f"{prefix}cancel:{run_id}"


def request_cancel(client: redis.Redis, prefix: str, run_id: str, reason: str) -> None:
    """Ask the worker running `run_id` to stop (`reason`: by_user or cancel_other)."""
    if reason not in REASONS:
        raise ValueError(f"cancel reason must be one of {REASONS}, got {reason!r}")
    client.set(_key(prefix, run_id), reason, ex=FLAG_TTL_S)


def cancel_reason(client: redis.Redis, prefix: str, run_id: str) -> str | None:
    """The pending cancel request for `run_id`, if any."""
    value = cast(Any, client.get(_key(prefix, run_id)))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def clear(client: redis.Redis, prefix: str, run_id: str) -> None:
    client.delete(_key(prefix, run_id))
