"""Calling an agent the way every runner does: the worker and `agents.testing` share this, so
an agent behaves the same under test as in production."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from agents.location import SourceLocation
from agents.values import round_trip

# How often an async agent's loop looks at the cancel flag (set from another thread, which
# cannot wake the loop itself).
CANCEL_POLL_S = 0.1


async def cancellable(coro: Any, cancel_event: threading.Event) -> Any:
    """Run an async agent; cancel its task when the run is cancelled or times out.

    The flag is a `threading.Event` because the watch thread sets it; the task sees a
    `CancelledError` at its next await, so an async agent stops without polling
    `ctx.cancelled` itself.
    """
    task = asyncio.ensure_future(coro)
    while not task.done():
        if cancel_event.is_set():
            task.cancel()
            break
        await asyncio.wait({task}, timeout=CANCEL_POLL_S)
    return await task


def stored_result(result: Any, agent: str, location: SourceLocation | str) -> Any:
    """The agent's result as it will be stored: portable JSON, round-tripped, so the caller
    sees exactly what `runs show` will. Anything else raises `NotSerialisable` naming the
    agent's file:line and the JSON path of the problem."""
    kept, _ = round_trip(
        result, "result", f"agent {agent!r} ({location}) returned a value that cannot be stored"
    )
    return kept
