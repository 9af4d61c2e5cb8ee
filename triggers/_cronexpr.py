"""Cron fire-time math with Debian cron's DST rules, as a pure function.

croniter iterates *wall-clock* times (naive datetimes); this module maps each
wall time to real instants the way Debian's cron does:

* fixed-time expressions (no leading `*` in the minute or hour field): a wall
  time inside a spring-forward gap fires once, at the end of the gap; a wall
  time in a repeated (fall-back) hour fires once, at its first occurrence;
* wildcard expressions (`*` or `*/n` in minute or hour) run on real time:
  wall times inside a gap do not exist, and both repeated hours fire.

croniter's own tz handling has open DST bugs, so it never sees a timezone.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SINGLE_RANGE = re.compile(r"(?<![\d/])(\d+)-(\1)(?![\d])")
# A DST shift never exceeds this (Troll station: 2 h); it bounds our look-around.
_MAX_SHIFT = timedelta(hours=3)
_ONE_SECOND = timedelta(seconds=1)


class CronSyntaxError(ValueError):
    """The expression or time zone is not one nightowl accepts; the message says why."""


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names and what a name is ("a day (mon..sun)")
_FIELDS: dict[str, tuple[int, int, tuple[str, ...], str]] = {
    "seconds": (0, 59, (), ""),
    "minute": (0, 59, (), ""),
    "hour": (0, 23, (), ""),
    "day-of-month": (1, 31, (), ""),
    "month": (1, 12, _MONTHS, "a month (jan..dec)"),
    "day-of-week": (0, 7, _DAYS, "a day (mon..sun)"),
}
_YEAR = re.compile(r"^(19|20|21)\d\d$")


def _check_value(field: str, part: str, token: str) -> None:
    low, high, names, what = _FIELDS[field]
    if token.isdigit():
        if not low <= int(token) <= high:
            raise CronSyntaxError(f"{field}: {part} is out of range ({low}-{high})")
    elif token.lower() not in names:
        if what:
            raise CronSyntaxError(f"{field}: {token!r} is not {what} or a number {low}-{high}")
        raise CronSyntaxError(f"{field}: {token!r} is not a number {low}-{high}")


def _check_part(field: str, part: str) -> None:
    """One comma-separated part: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n` (and `?`, `L`, `#`
    forms croniter judges itself)."""
    base, _, step = part.partition("/")
    if step:
        low, high = _FIELDS[field][:2]
        span = high - low + 1  # a larger step can only ever hit the first value: a mistake
        if not step.isdigit() or not 1 <= int(step) <= span:
            raise CronSyntaxError(f"{field}: {part} is out of range (a step of 1-{span})")
    if base in ("*", "?") or any(c in base.upper() for c in "LW#"):
        return
    for token in base.split("-", 1):
        _check_value(field, part, token)


def check_fields(fields: list[str]) -> None:
    """Name the field and the value that is wrong, as a person reads a crontab."""
    names = list(_FIELDS)[1:] if len(fields) == 5 else list(_FIELDS)
    if len(fields) == 6 and _YEAR.match(fields[5]):
        raise CronSyntaxError(
            f"6 fields mean a leading seconds field, not a trailing year: {fields[5]!r} would be "
            "the day of the week; drop the year (cron has none)"
        )
    for field, text in zip(names, fields, strict=True):
        for part in text.split(","):
            if not part:
                raise CronSyntaxError(f"{field}: an empty value in {text!r}")
            _check_part(field, part)


def _normalise(expr: str) -> tuple[str, list[str]]:
    """Expand aliases, reject what Debian cron lacks, fix croniter's `a-a` reading."""
    text = " ".join(expr.split())
    text = _ALIASES.get(text.lower(), text)
    if text.startswith("@"):
        raise CronSyntaxError(
            f"unknown alias {text!r}; use one of {', '.join(sorted(_ALIASES))} or 5/6 fields"
        )
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise CronSyntaxError(
            f"{len(fields)} fields; use 5 (minute hour day month weekday) or 6 (second first)"
        )
    tokens = {tok.upper() for f in fields for tok in re.split(r"[,/()\-]", f)}
    if tokens & {"H", "R"}:
        raise CronSyntaxError("'H' and 'R' (hashed/random) are not cron syntax; use explicit values")
    check_fields(fields)
    fields = [_SINGLE_RANGE.sub(r"\1", f) for f in fields]
    return " ".join(fields), fields


class CronExpr:
    """A validated cron expression bound to an IANA time zone."""

    __slots__ = ("_croniter_expr", "expr", "tz", "wildcard", "zone")

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        if not isinstance(expr, str):
            raise CronSyntaxError(f"expression must be a string, got {type(expr).__name__}")
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise CronSyntaxError(
                f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin' or 'UTC'"
            ) from None
        normalised, fields = _normalise(expr)
        minute, hour = (fields[1], fields[2]) if len(fields) == 6 else (fields[0], fields[1])
        self.expr = expr
        self.tz = tz
        self.wildcard = minute.startswith("*") or hour.startswith("*")
        self._croniter_expr = normalised
        try:
            probe = croniter(normalised, datetime(2000, 1, 1), **_CRONITER_OPTS)  # noqa: DTZ001 - wall time
        except (CroniterError, ValueError, KeyError) as exc:
            raise CronSyntaxError(f"invalid cron expression {expr!r}: {exc}") from None
        try:
            # Debian cron silently never runs `0 0 31 4 *`; we refuse it at load instead of
            # failing every evaluation later.
            probe.get_next(datetime)
        except CroniterError:
            raise CronSyntaxError(
                f"cron expression {expr!r} never fires (no such date, e.g. April 31)"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronExpr):
            return NotImplemented
        return (self._croniter_expr, self.tz) == (other._croniter_expr, other.tz)

    def __hash__(self) -> int:
        return hash((self._croniter_expr, self.tz))

    def __repr__(self) -> str:
        return f"CronExpr({self.expr!r}, tz={self.tz!r})"

    def _offset(self, instant: datetime) -> timedelta:
        off = instant.astimezone(self.zone).utcoffset()
        assert off is not None
        return off

    def _near_transition(self, instant: datetime) -> bool:
        return self._offset(instant - _MAX_SHIFT) != self._offset(instant + _MAX_SHIFT)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The real instants at which wall-clock time `wall` fires (0, 1 or 2)."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            # Repeated hour: `first` is the earlier occurrence.
            return [first, second] if self.wildcard else [first]
        # Gap: this wall time never happens.
        return [] if self.wildcard else [self._gap_end(second, first)]

    def _gap_end(self, lo: datetime, hi: datetime) -> datetime:
        """The transition instant in (lo, hi]: the first real time after the gap."""
        before = self._offset(lo)
        while hi - lo > _ONE_SECOND:
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if self._offset(mid) == before:
                lo = mid
            else:
                hi = mid
        return hi

    def _walls(self, start_wall: datetime) -> Iterator[datetime]:
        it = croniter(self._croniter_expr, start_wall, **_CRONITER_OPTS)
        while True:
            yield it.get_next(datetime)

    def next_after(self, after: datetime) -> datetime:
        """The first fire instant strictly after `after` (aware), in UTC.

        Cached across instances: thousands of triggers on `0 * * * *` share one
        computation per slot, so a tick's cost follows distinct schedules.
        """
        return _next_after_cached(self, after.astimezone(UTC))

    def _compute_next_after(self, after: datetime) -> datetime:
        margin = _MAX_SHIFT if self._near_transition(after) else timedelta(0)
        start_wall = after.astimezone(self.zone).replace(tzinfo=None) - margin
        best: datetime | None = None
        stop_wall: datetime | None = None
        for wall in self._walls(start_wall):
            if stop_wall is not None and wall > stop_wall:
                break
            for instant in self._instants(wall):
                if instant > after and (best is None or instant < best):
                    best = instant
                    near = self._near_transition(instant)
                    stop_wall = wall + (_MAX_SHIFT if near else timedelta(0))
        assert best is not None
        return best

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after `after`, in order, without end."""
        current = after
        while True:
            current = self.next_after(current)
            yield current


_CRONITER_OPTS = {"implement_cron_bug": True, "second_at_beginning": True}


@functools.lru_cache(maxsize=8192)
def _next_after_cached(expr: CronExpr, after: datetime) -> datetime:
    # Equal expressions (same normalised fields and zone) hash alike, so they share entries.
    return expr._compute_next_after(after)
