"""Fire-time math: Debian cron's DST rules, parsing and rejection, as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers import CronExpr, CronSyntaxError

BERLIN = ZoneInfo("Europe/Berlin")


def fires(expr: str, tz: str, after: datetime, n: int) -> list[str]:
    zone = ZoneInfo(tz)
    out = []
    for t, _ in zip(CronExpr(expr, tz).iter_after(after), range(n), strict=False):
        out.append(t.astimezone(zone).isoformat())
    return out


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # Fixed time in the spring-forward gap: once, right after the gap.
        ("30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=UTC),
         ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"]),
        # Fixed time in the repeated hour: once, at the first occurrence.
        ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC),
         ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        # Several fixed times inside the gap still fire once.
        ("0,30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=UTC),
         ["2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00"]),
        # Wildcard hour: real time, both repeated hours fire.
        ("0 * * * *", datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
         ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
        ("*/30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC),
         ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
          "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"]),
        # Wildcard in a gap: those slots do not exist.
        ("*/30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=UTC),
         ["2027-03-29T02:00:00+02:00", "2027-03-29T02:30:00+02:00"]),
        # The seconds field does not change which rule applies (fixed minute and hour).
        ("15 30 2 * * *", datetime(2027, 3, 27, 12, tzinfo=UTC),
         ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:15+02:00"]),
    ],
)
def test_berlin_dst_follows_debian_cron(expr: str, after: datetime, expected: list[str]) -> None:
    assert fires(expr, "Europe/Berlin", after, len(expected)) == expected


def test_six_fields_lead_with_seconds() -> None:
    assert fires("*/20 * * * * *", "UTC", datetime(2027, 1, 1, tzinfo=UTC), 3) == [
        "2027-01-01T00:00:20+00:00", "2027-01-01T00:00:40+00:00", "2027-01-01T00:01:00+00:00"]


def test_aliases() -> None:
    assert fires("@daily", "UTC", datetime(2027, 1, 1, 5, tzinfo=UTC), 1) == ["2027-01-02T00:00:00+00:00"]
    assert fires("@hourly", "UTC", datetime(2027, 1, 1, 5, tzinfo=UTC), 1) == ["2027-01-01T06:00:00+00:00"]


def test_single_value_range_means_that_value() -> None:
    # croniter expands `5-5` to the whole field; Debian reads it as 5.
    assert fires("5-5 * * * *", "UTC", datetime(2027, 1, 1, tzinfo=UTC), 2) == [
        "2027-01-01T00:05:00+00:00", "2027-01-01T01:05:00+00:00"]


def test_day_of_month_and_weekday_follow_debian() -> None:
    # With a `*`-led day-of-month, Debian ANDs the fields (croniter's implement_cron_bug).
    assert fires("0 0 */2 * mon", "UTC", datetime(2027, 3, 27, tzinfo=UTC), 2) == [
        "2027-03-29T00:00:00+00:00", "2027-04-05T00:00:00+00:00"]


@pytest.mark.parametrize(
    ("expr", "tz", "needle"),
    [
        ("* * * * * * *", "UTC", "7 fields"),
        ("H * * * *", "UTC", "'H' and 'R'"),
        ("R * * * *", "UTC", "'H' and 'R'"),
        ("61 * * * *", "UTC", "out of range"),
        ("@often", "UTC", "unknown alias"),
        ("* * * *", "UTC", "4 fields"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_rejects_with_reason(expr: str, tz: str, needle: str) -> None:
    with pytest.raises(CronSyntaxError, match=needle):
        CronExpr(expr, tz)


def test_weekday_names_are_not_mistaken_for_hash_syntax() -> None:
    assert fires("0 9 * * thu", "UTC", datetime(2027, 3, 27, tzinfo=UTC), 1) == ["2027-04-01T09:00:00+00:00"]


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC", "America/Sao_Paulo"]


@settings(max_examples=150, deadline=None)
@given(
    minute=st.sampled_from(["0", "30", "*/15", "*", "5,45"]),
    hour=st.sampled_from(["2", "*", "1-3", "*/2", "0"]),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1),
                       timezones=st.just(UTC)),
)
def test_fire_times_increase_and_never_land_in_a_gap(minute: str, hour: str, zone: str,
                                                     start: datetime) -> None:
    expr = CronExpr(f"{minute} {hour} * * *", zone)
    prev = start
    tz = ZoneInfo(zone)
    for t, _ in zip(expr.iter_after(start), range(30), strict=False):
        assert t > prev
        local = t.astimezone(tz)
        # A real instant always round-trips through its wall time (never inside a gap).
        assert local.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC) == t or local.fold == 1
        prev = t
