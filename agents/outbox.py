"""The outbox contract an agent writes through: `ctx.outbox.put(sink, key, value)`.

Public because both sides use it: the agent puts writes into an `OutboxBuffer` during its
run, and the scheduler commits the buffered `OutboxWrite`s with the run's success (the
relay then delivers them to the sinks registered with `scheduler.outbox.register_sink`).
A value is checked when it is put, so the agent sees a bad value at the line that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from agents._errors import NonRetryable
from agents.values import NotSerialisable, check_json

# The default limit of one outbox value, encoded (NIGHTOWL_OUTBOX_MAX_VALUE_BYTES).
MAX_OUTBOX_VALUE_BYTES = 256 * 1024


class UnknownSinkError(NonRetryable):
    """`ctx.outbox.put` named a sink nobody registered (a retry would fail the same way)."""


class OutboxValueError(NotSerialisable):
    """An outbox value is not portable JSON or is too large (retrying cannot help; the run
    ends `failed/not_serialisable`)."""


@dataclass(frozen=True, slots=True)
class OutboxWrite:
    """One intended write, buffered until the run's success commits."""

    sink: str
    key: str
    value: Any


class OutboxBuffer:
    """Buffers writes in memory; they are committed with the run's success or not at all."""

    def __init__(self, sinks: Collection[str] | None, max_value_bytes: int = MAX_OUTBOX_VALUE_BYTES) -> None:
        """`sinks` are the registered names; None accepts any name (`AgentEnvironment`, which
        cannot see what the trigger modules register)."""
        self._sinks = None if sinks is None else frozenset(sinks)
        self._max = max_value_bytes
        self._writes: list[OutboxWrite] = []

    def put(self, sink: str, key: str, value: Any) -> None:
        """Queue `value` for `sink` under `key`; validated now so the agent sees the error."""
        if self._sinks is not None and sink not in self._sinks:
            known = ", ".join(sorted(self._sinks)) or "none registered"
            raise UnknownSinkError(
                f"unknown outbox sink {sink!r}; registered sinks: {known}. "
                "Register it in your trigger module with register_sink(...)"
            )
        try:
            check_json(value, "value")
            check_json(str(key), "key")
        except NotSerialisable as exc:
            raise OutboxValueError(f"outbox value for {sink}/{key}: {exc}") from None
        encoded = json.dumps(value)
        if len(encoded.encode()) > self._max:
            raise OutboxValueError(
                f"outbox value for {sink}/{key} is {len(encoded.encode())} bytes; the limit is "
                f"{self._max} (NIGHTOWL_OUTBOX_MAX_VALUE_BYTES): store a reference instead"
            )
        self._writes.append(OutboxWrite(sink, str(key), json.loads(encoded)))

    @property
    def writes(self) -> list[OutboxWrite]:
        """The buffered writes, in put order."""
        return list(self._writes)
