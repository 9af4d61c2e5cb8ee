"""The sink contract and the registry trigger modules fill."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from agents import NightowlError
from agents._location import caller_location
from agents._options import check_name
from scheduler.storage.outbox_store import Entry

# Per entry: None when delivered (or already there: sinks are idempotent), else the error text.
Outcome = str | None


class SinkError(NightowlError):
    """A sink is misconfigured; the message names it and the fix."""


class Sink(Protocol):
    """A store the relay writes to. `deliver` must be idempotent per entry:

    - upsert-like sinks keep the highest `seq` per key and drop older writes;
    - append-like sinks dedupe on `entry.id`.
    It returns one outcome per entry, in order, and may raise to fail them all.
    """

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]: ...

    def describe(self) -> dict[str, Any]: ...


_lock = threading.Lock()
_sinks: dict[str, tuple[Sink, str]] = {}


def register_sink(name: str, sink: Sink) -> Sink:
    """Make `sink` available as `ctx.outbox.put(name, ...)` and to the relay."""
    where = str(caller_location())
    why = check_name(name)
    if why:
        raise SinkError(f"{where}: register_sink: {why}")
    if not callable(getattr(sink, "deliver", None)):
        raise SinkError(f"{where}: register_sink({name!r}): {sink!r} has no deliver(entries) "
                        "method; see docs/extending.md")
    with _lock:
        existing = _sinks.get(name)
        if existing is not None and existing[1] != where:
            raise SinkError(f"{where}: sink {name!r} is already registered at {existing[1]}; "
                            "pick another name")
        _sinks[name] = (sink, where)
    return sink


def registered_sinks() -> frozenset[str]:
    with _lock:
        return frozenset(_sinks)


def sink_for(name: str) -> Sink | None:
    with _lock:
        found = _sinks.get(name)
    return found[0] if found else None
