"""The JSON that every store accepts, checked where a value enters nightowl.

Python's `json` writes NaN and Infinity, and SQLite and Redis keep them (and NUL
characters) without complaint, but PostgreSQL's jsonb refuses all three. A value
that only fails at the final commit fails far from its cause, after the agent
did its work, and differently on each database. So results, outbox values and
events are checked at the call that produced them, the same way everywhere, and
the error names the JSON path (`result.score is NaN`).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from agents._errors import NonRetryable


class NotSerialisable(NonRetryable):
    """A value nightowl must store is not portable JSON (ends the run `failed/not_serialisable`)."""


def json_problem(value: Any, path: str = "value") -> str | None:
    """What makes `value` unfit for storage, naming its JSON path; None when it is fine.

    Portable JSON: dict (string keys), list/tuple, str, int, finite float, bool, None; no
    NUL character in any string or key.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{where} is {item!r} (NaN and infinities are not JSON)"
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{where} contains a NUL character"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"{where} has a key of type {type(key).__name__} (JSON keys are strings)"
                if "\x00" in key:
                    return f"{where} has a key containing a NUL character"
                stack.append((sub, f"{where}.{key}"))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
        else:
            return f"{where} is a {type(item).__name__}, which JSON cannot carry"
    return None


# Events built only from nightowl's own validated parts (a cron slot: the trigger's name and
# two times) cannot hold an unstorable value; they skip the walk on the dispatch hot path.
_OWN_EVENT_KINDS = frozenset({"cron"})


def event_problem(event: Any, stored: Any = None) -> str | None:
    """What makes a trigger's event unstorable (a non-finite number or a NUL character in
    the row it read, say), naming its path; None when it is fine.

    `stored` is the event's JSON form (`event_to_json(event)`), if the caller has it.
    Judged on what would be stored: pydantic's JSON turns NaN and infinities into null
    silently (that is refused here: the data would change), while a model that encodes
    them itself (`MetricAlert.value` as "+Inf") is fine. Other types (datetimes, decimals)
    are left to the event's own JSON conversion.
    """
    if getattr(event, "kind", None) in _OWN_EVENT_KINDS:
        return None
    if stored is None:  # the caller usually has the stored JSON already
        stored = event.model_dump(mode="json")
    stack: list[tuple[Any, Any, str]] = [(event.model_dump(), stored, "event")]
    while stack:
        item, stored, where = stack.pop()
        if (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, Decimal) and not item.is_finite()
        ):
            if not isinstance(stored, str):
                return f"{where} is {item!r} (NaN and infinities are not JSON)"
        elif isinstance(item, str) and "\x00" in item:
            return f"{where} contains a NUL character"
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{where} has a key containing a NUL character"
                twin = stored.get(key) if isinstance(stored, dict) else None
                stack.append((sub, twin, f"{where}.{key}"))
        elif isinstance(item, list | tuple):
            twins = stored if isinstance(stored, list) else [None] * len(item)
            stack.extend(
                (sub, twins[i] if i < len(twins) else None, f"{where}[{i}]") for i, sub in enumerate(item)
            )
    return None


def storable(value: Any) -> Any:
    """A JSON value with NUL characters removed and non-finite numbers as null: what is kept
    of an event that was refused, so its run row can still record it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


# What to return instead, said by every refusal of a value that must be stored.
PORTABLE = "Return dicts, lists, str, finite numbers, bool or None"


def round_trip(value: Any, path: str, why: str) -> tuple[Any, int]:
    """`value` as it will be read back (a JSON copy: a tuple comes back a list) and its
    encoded size; NotSerialisable naming the path and `why` it must be stored when it is not
    portable JSON. The caller sees exactly what a replay or `runs show` will."""
    problem = json_problem(value, path)
    if problem is not None:
        raise NotSerialisable(f"{why}: {problem}. {PORTABLE}")
    text = json.dumps(value)
    return json.loads(text), len(text.encode())


def check_json(value: Any, path: str) -> None:
    """Raise NotSerialisable naming the path when `value` is not portable JSON."""
    problem = json_problem(value, path)
    if problem is not None:
        raise NotSerialisable(problem)


def finite_details(details: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Heartbeat details with every unstorable entry dropped, and the paths dropped.

    A heartbeat is progress, not data: one bad number must not fail the beat (a live
    attempt would then look dead), so it is dropped, not refused.
    """
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in details.items():
        problem = json_problem(value, f"details.{key}")
        if problem is None and isinstance(key, str) and "\x00" not in key:
            kept[key] = value
        else:
            dropped.append(problem or f"details.{key!r}")
    return kept, dropped
