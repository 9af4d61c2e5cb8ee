"""The sink contract: what a sink receives (`Entry`), what it returns (`Outcome`), and the
`Sink` protocol a custom store implements (docs/extending.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agents import NightowlError


@dataclass(frozen=True, slots=True)
class Entry:
    """What a sink receives: the entry id (`<run_id>:<n>`), the key's sequence number, the value."""

    id: str
    run_id: str
    sink: str
    key: str
    seq: int
    value: Any
    attempts: int = 0


# Per entry: None when delivered (or already there: sinks are idempotent), else the error text.
Outcome = str | None


class SinkError(NightowlError):
    """A sink is misconfigured; the message names it and the fix."""


class Sink(Protocol):
    """A store the relay writes to. `deliver` must be idempotent per entry:

    - upsert-like sinks keep the highest `seq` per key and drop older writes;
    - append-like sinks dedupe on `entry.id`.
    It returns one outcome per entry, in order, and may raise to fail them all.

    Optional members, looked up by the relay so a plain class with `deliver` and `describe`
    stays a sink: `one_at_a_time = True` (one entry per call, each settled as soon as it is
    delivered), `bind(defaults: triggers.SourceDefaults)` (nightowl's own database and
    Redis, for sinks left without a URL) and `close()` (called when the relay stops).
    """

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]: ...

    def describe(self) -> dict[str, Any]: ...
