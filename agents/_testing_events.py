"""Event builders for agent tests: each trigger kind's event with sensible defaults.

Every field can be given; what is not given is a fixed, plausible value (times are
`DEFAULT_TIME`), so a test states only what it is about and runs the same every day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agents._events import (
    AlertState,
    CronTick,
    Event,
    ManualFire,
    MetricAlert,
    QueueDepth,
    RowChange,
)

# A Monday, 09:00 UTC: the default logical time and the time of every default event.
DEFAULT_TIME = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def cron_tick(
    trigger: str = "test", *, scheduled_for: datetime | None = None, fired_at: datetime | None = None
) -> CronTick:
    """A cron slot: `scheduled_for` defaults to `DEFAULT_TIME`, `fired_at` to the slot."""
    slot = DEFAULT_TIME if scheduled_for is None else scheduled_for
    return CronTick(trigger=trigger, scheduled_for=slot, fired_at=slot if fired_at is None else fired_at)


def row_change(
    table: str = "orders",
    *,
    key: Any = 1,
    version: Any = None,
    row: dict[str, Any] | list[dict[str, Any]] | None = None,
) -> RowChange:
    """A changed row as `db_change` delivers it. A list `key` makes a batch (`batch=True`):
    `version` and `row` then default to one entry per key. `version` defaults to
    `DEFAULT_TIME` in ISO 8601, as a timestamp cursor arrives (the event carries JSON)."""
    stamp = DEFAULT_TIME.isoformat()
    if isinstance(key, list):
        version = [stamp] * len(key) if version is None else version
        row = [{"id": k} for k in key] if row is None else row
    else:
        version = stamp if version is None else version
        row = {"id": key} if row is None else row
    return RowChange(table=table, key=key, version=version, row=row)


def queue_depth(
    queue: str = "emails",
    *,
    depth: int = 1000,
    threshold: float = 500.0,
    state: AlertState = "firing",
    since: datetime | None = None,
    unacked: int | None = None,
    oldest_age_s: float | None = None,
) -> QueueDepth:
    """A queue past its threshold (`firing`) or back below it (`resolved`)."""
    return QueueDepth(
        queue=queue,
        depth=depth,
        unacked=unacked,
        oldest_age_s=oldest_age_s,
        threshold=threshold,
        state=state,
        since=DEFAULT_TIME if since is None else since,
    )


def metric_alert(
    name: str = "error-rate",
    *,
    value: float | None = 0.1,
    threshold: float = 0.05,
    state: AlertState = "firing",
    since: datetime | None = None,
) -> MetricAlert:
    """A metric out of its bounds (`firing`) or back inside them (`resolved`)."""
    since = DEFAULT_TIME if since is None else since
    return MetricAlert(name=name, value=value, threshold=threshold, state=state, since=since)


def manual_fire(trigger: str = "test", *, payload: Any = None, fired_by: str = "test") -> ManualFire:
    """What `nightowl fire TRIGGER --payload JSON` hands the agent."""
    return ManualFire(trigger=trigger, payload=payload, fired_by=fired_by)


# Each event kind (and its builder's name) -> the builder and the fields that are times.
_BUILDERS: dict[str, tuple[Callable[..., Event], tuple[str, ...]]] = {
    "cron": (cron_tick, ("scheduled_for",)),
    "db_change": (row_change, ()),
    "queue_depth": (queue_depth, ("since",)),
    "metric": (metric_alert, ("since",)),
    "manual": (manual_fire, ()),
}
_ALIASES = {"cron_tick": "cron", "row_change": "db_change", "metric_alert": "metric", "manual_fire": "manual"}
EVENT_KINDS = tuple(_BUILDERS)


def event_for(kind: str, /, *, at: datetime | None = None, **fields: Any) -> Event:
    """The event of a trigger kind (`cron`, `db_change`, `queue_depth`, `metric`, `manual`,
    or a builder's name such as `cron_tick`) with `fields` over the builder's defaults.

    `at` replaces `DEFAULT_TIME` in the time fields not given (the CLI passes now). Fields
    may be in their JSON form (ISO 8601 strings): the event model parses them, so the
    object `event_to_json` writes, minus its `kind`, builds the same event again.
    """
    name = _ALIASES.get(kind, kind)
    if name not in _BUILDERS:
        known = ", ".join([*EVENT_KINDS, *_ALIASES])
        raise ValueError(f"unknown event kind {kind!r}; use one of {known}")
    build, times = _BUILDERS[name]
    if at is not None:
        for field in times:
            fields.setdefault(field, at)
    return build(**fields)


def logical_time_of(event: Event) -> datetime | None:
    """The logical time the scheduler gives a run of this event when the event holds it:
    the cron slot, or the row's timestamp cursor. None for the others (an alert, a manual
    fire, a sequence cursor): their runs' logical time is when they fired."""
    if isinstance(event, CronTick):
        return event.scheduled_for
    if isinstance(event, RowChange):
        version = event.version[-1] if isinstance(event.version, list) and event.version else event.version
        return _as_time(version)
    return None


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None
