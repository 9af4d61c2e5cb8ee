"""The sink registry trigger modules fill with `register_sink(name, sink)`."""

from __future__ import annotations

import threading

from agents.location import caller_location
from agents.options import check_name
from scheduler.outbox.abc import Sink, SinkError

_lock = threading.Lock()
_sinks: dict[str, tuple[Sink, str]] = {}


def register_sink(name: str, sink: Sink) -> Sink:
    """Make `sink` available as `ctx.outbox.put(name, ...)` and to the relay."""
    where = str(caller_location())
    why = check_name(name)
    if why:
        raise SinkError(f"{where}: register_sink: {why}")
    if not callable(getattr(sink, "deliver", None)):
        raise SinkError(
            f"{where}: register_sink({name!r}): {sink!r} has no deliver(entries) "
            "method; see docs/extending.md"
        )
    with _lock:
        existing = _sinks.get(name)
        if existing is not None and existing[1] != where:
            raise SinkError(
                f"{where}: sink {name!r} is already registered at {existing[1]}; pick another name"
            )
        _sinks[name] = (sink, where)
    return sink


def registered_sinks() -> frozenset[str]:
    with _lock:
        return frozenset(_sinks)


def sink_for(name: str) -> Sink | None:
    with _lock:
        found = _sinks.get(name)
    return found[0] if found else None
