"""Option checking shared by `@agent` and the trigger constructors.

Unknown options are the most common typo in a scheduler config; we reject
them at declaration time with the closest valid name, as dramatiq does.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NAME_RULE = "lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 64"


# Names people bring from Celery, APScheduler or Prometheus, mapped to ours.
_SYNONYMS = {
    "timezone": "tz",
    "zone": "tz",
    "retries": "max_attempts",
    "max_retries": "max_attempts",
    "time_limit": "timeout",
    "soft_time_limit": "timeout",
    "for": "for_",
    "misfire_grace_time": "start_deadline",
    "coalesce": "catchup",
    "max_instances": "overlap",
}


def unknown_option_message(what: str, given: Iterable[str], valid: Iterable[str]) -> str | None:
    """A message naming each unknown option and the likely intended one, or None."""
    valid_list = sorted(valid)
    problems = []
    for name in given:
        if name in valid_list:
            continue
        close = difflib.get_close_matches(name, valid_list, n=1)
        if _SYNONYMS.get(name) in valid_list:
            close = [_SYNONYMS[name]]
        hint = f"did you mean {close[0]!r}?" if close else "remove it"
        problems.append(f"unknown option {name!r} ({hint})")
    if not problems:
        return None
    return f"{what}: {'; '.join(problems)}. Valid options: {', '.join(valid_list)}"


def check_name(value: object) -> str | None:
    """Why `value` is not a valid trigger/agent name, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if NAME_RE.fullmatch(value) is None:
        return f"{value!r} is not a valid name: use {NAME_RULE} characters"
    return None


def as_timedelta(value: object, field: str, *, allow_zero: bool = True) -> timedelta:
    """Accept a timedelta or a number of seconds; reject negatives and other types."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ValueError(f"{field} must be a timedelta or seconds as a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number of seconds, got {value!r}")
    try:
        td = value if isinstance(value, timedelta) else timedelta(seconds=float(value))
    except OverflowError:
        raise ValueError(
            f"{field} is out of range ({value!r} seconds); pass a timedelta of at most a few years"
        ) from None
    if td < timedelta(0) or (not allow_zero and td == timedelta(0)):
        bound = "positive" if not allow_zero else "zero or positive"
        raise ValueError(f"{field} must be {bound}, got {td}")
    return td


def check_choice(value: object, field: str, choices: Mapping[str, Any] | Iterable[str]) -> str:
    """Validate a string option against its allowed values."""
    allowed = sorted(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value
