"""The events an agent receives: one pydantic model per trigger kind.

Each carries a `kind` tag so a run's stored event JSON rebuilds into the
right model on whichever worker picks it up.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer

AlertState = Literal["firing", "resolved"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CronTick(_Event):
    """A cron slot came due. `scheduled_for` is the slot, not the wall clock.

    `nightowl fire` on a cron trigger sends one too, so an agent typed `event: CronTick`
    works when run by hand: `manual` is True, `fired_by` says who, `scheduled_for` is
    `--slot` (or the time of the fire), and `payload` is `--payload`, if any."""

    kind: Literal["cron"] = "cron"
    trigger: str
    scheduled_for: datetime
    fired_at: datetime
    manual: bool = False
    fired_by: str | None = None
    payload: Any = None


class RowChange(_Event):
    """A watched row changed; `key` is a list of keys when the trigger batches."""

    kind: Literal["db_change"] = "db_change"
    table: str
    key: Any
    version: Any
    row: dict[str, Any] | list[dict[str, Any]]


class QueueDepth(_Event):
    """A queue crossed its threshold (`firing`) or came back below it (`resolved`)."""

    kind: Literal["queue_depth"] = "queue_depth"
    queue: str
    depth: int
    unacked: int | None = None
    oldest_age_s: float | None = None
    threshold: float
    state: AlertState
    since: datetime


class MetricAlert(_Event):
    """A metric left its bounds (`firing`) or returned inside them (`resolved`)."""

    kind: Literal["metric"] = "metric"
    name: str
    # None: the source had no data (an empty Prometheus result, or NaN, resolves). +Inf and
    # -Inf are readings; stored JSON carries them as "+Inf"/"-Inf" (jsonb refuses Infinity)
    # and they come back as floats.
    value: float | None
    threshold: float
    state: AlertState
    since: datetime

    @field_serializer("value", when_used="json")
    def _finite_json(self, value: float | None) -> float | str | None:
        if value is None or math.isfinite(value):
            return value
        return "+Inf" if value > 0 else "-Inf"


class ManualFire(_Event):
    """A person or script ran `nightowl fire`."""

    kind: Literal["manual"] = "manual"
    trigger: str
    payload: Any = None
    fired_by: str


Event = Annotated[CronTick | RowChange | QueueDepth | MetricAlert | ManualFire, Field(discriminator="kind")]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_from_json(data: Any) -> Event:
    """Rebuild a stored event (as written by `event_to_json`)."""
    return _EVENT_ADAPTER.validate_python(data)


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON-safe dict stored on the run row (a live cron tick without the manual-fire
    fields: 10,000 of them in one slot should not carry three nulls each)."""
    if isinstance(event, CronTick) and not event.manual:
        return event.model_dump(mode="json", exclude=_MANUAL_FIELDS)
    return event.model_dump(mode="json")


_MANUAL_FIELDS = {"manual", "fired_by", "payload"}
