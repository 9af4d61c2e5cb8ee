"""Fire-time math: Debian cron's DST rules, parsing and rejection, as tables."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
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
        (
            "30 2 * * *",
            datetime(2027, 3, 27, 12, tzinfo=UTC),
            ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"],
        ),
        # Fixed time in the repeated hour: once, at the first occurrence.
        (
            "30 2 * * *",
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        # Several fixed times inside the gap still fire once.
        (
            "0,30 2 * * *",
            datetime(2027, 3, 27, 12, tzinfo=UTC),
            ["2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00"],
        ),
        # Wildcard hour: real time, both repeated hours fire.
        (
            "0 * * * *",
            datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
            ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"],
        ),
        (
            "*/30 2 * * *",
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
            ],
        ),
        # Wildcard in a gap: those slots do not exist.
        (
            "*/30 2 * * *",
            datetime(2027, 3, 27, 12, tzinfo=UTC),
            ["2027-03-29T02:00:00+02:00", "2027-03-29T02:30:00+02:00"],
        ),
        # The seconds field does not change which rule applies (fixed minute and hour).
        (
            "15 30 2 * * *",
            datetime(2027, 3, 27, 12, tzinfo=UTC),
            ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:15+02:00"],
        ),
    ],
)
def test_berlin_dst_follows_debian_cron(expr: str, after: datetime, expected: list[str]) -> None:
    assert fires(expr, "Europe/Berlin", after, len(expected)) == expected


def test_six_fields_lead_with_seconds() -> None:
    assert fires("*/20 * * * * *", "UTC", datetime(2027, 1, 1, tzinfo=UTC), 3) == [
        "2027-01-01T00:00:20+00:00",
        "2027-01-01T00:00:40+00:00",
        "2027-01-01T00:01:00+00:00",
    ]


def test_aliases() -> None:
    assert fires("@daily", "UTC", datetime(2027, 1, 1, 5, tzinfo=UTC), 1) == ["2027-01-02T00:00:00+00:00"]
    assert fires("@hourly", "UTC", datetime(2027, 1, 1, 5, tzinfo=UTC), 1) == ["2027-01-01T06:00:00+00:00"]


def test_single_value_range_means_that_value() -> None:
    # croniter expands `5-5` to the whole field; Debian reads it as 5.
    assert fires("5-5 * * * *", "UTC", datetime(2027, 1, 1, tzinfo=UTC), 2) == [
        "2027-01-01T00:05:00+00:00",
        "2027-01-01T01:05:00+00:00",
    ]


def test_day_of_month_and_weekday_follow_debian() -> None:
    # With a `*`-led day-of-month, Debian ANDs the fields (croniter's implement_cron_bug).
    assert fires("0 0 */2 * mon", "UTC", datetime(2027, 3, 27, tzinfo=UTC), 2) == [
        "2027-03-29T00:00:00+00:00",
        "2027-04-05T00:00:00+00:00",
    ]


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
        ("0 0 31 4 *", "UTC", "never fires"),
        ("0 0 30 2 *", "UTC", "never fires"),
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
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
)
def test_fire_times_increase_and_never_land_in_a_gap(
    minute: str, hour: str, zone: str, start: datetime
) -> None:
    expr = CronExpr(f"{minute} {hour} * * *", zone)
    prev = start
    tz = ZoneInfo(zone)
    for t, _ in zip(expr.iter_after(start), range(30), strict=False):
        assert t > prev
        local = t.astimezone(tz)
        # A real instant always round-trips through its wall time (never inside a gap).
        assert local.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC) == t or local.fold == 1
        prev = t


# Zones whose DST shift is a whole hour, north and south, plus one without DST. Zones
# that change at midnight (America/Havana, America/Santiago) are left out: cronsim
# builds each new day at 00:00 local and so fires inside their gap (see below).
ORACLE_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "America/Chicago",
    "Europe/London",
    "Asia/Tokyo",
    "Pacific/Auckland",
    "Asia/Jerusalem",
]
_field = st.one_of
MINUTES = _field(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.sampled_from(["*/15", "*/7", "0,30", "5-10", "50-59/3", "59"]),
)
HOURS = _field(
    st.just("*"), st.integers(0, 23).map(str), st.sampled_from(["*/2", "1-3", "0,2,4", "2", "22-23", "*/5"])
)
DOMS = st.sampled_from(["*", "*", "1", "15", "*/2", "1-7", "30", "28-31"])
MONTHS = st.sampled_from(["*", "*", "3", "10", "3,10,11", "*/3", "4", "9-11"])
DOWS = st.sampled_from(["*", "*", "0", "sun", "1-5", "6", "sat,sun", "*/2"])


def _transitions(zone: str) -> list[datetime]:
    """UTC instants near this zone's DST changes in 2026-2028 (a start point for each)."""
    tz = ZoneInfo(zone)
    out = []
    t = datetime(2026, 1, 1, tzinfo=UTC)
    prev = t.astimezone(tz).utcoffset()
    while t < datetime(2028, 6, 1, tzinfo=UTC):
        off = t.astimezone(tz).utcoffset()
        if off != prev:
            out.append(t)
            prev = off
        t += timedelta(hours=1)
    return out or [datetime(2027, 3, 1, tzinfo=UTC)]


_TRANSITIONS = {z: _transitions(z) for z in ORACLE_ZONES}


@settings(max_examples=300, deadline=None)
@given(
    minute=MINUTES,
    hour=HOURS,
    dom=DOMS,
    month=MONTHS,
    dow=DOWS,
    zone=st.sampled_from(ORACLE_ZONES),
    which=st.integers(0, 100),
    offset_h=st.integers(-72, 24),
)
def test_matches_cronsim_oracle(
    minute: str, hour: str, dom: str, month: str, dow: str, zone: str, which: int, offset_h: int
) -> None:
    """Our fire times equal cronsim's (Healthchecks.io's Debian-faithful evaluator)."""
    from cronsim import CronSim

    expr_text = f"{minute} {hour} {dom} {month} {dow}"
    near = _TRANSITIONS[zone]
    start = near[which % len(near)] + timedelta(hours=offset_h)
    tz = ZoneInfo(zone)
    ours = [
        t.astimezone(UTC)
        for t, _ in zip(CronExpr(expr_text, zone).iter_after(start), range(12), strict=False)
    ]
    # cronsim drops the fold when it starts inside a repeated hour and may answer a slot
    # before the start; fire times are strictly after the start, so those are skipped.
    later = (u for u in (t.astimezone(UTC) for t in CronSim(expr_text, start.astimezone(tz))) if u > start)
    oracle = [t for t, _ in zip(later, range(12), strict=False)]
    assert ours == oracle, expr_text
    for a, b in itertools.pairwise(ours):
        assert a < b
    for t in ours:
        local = t.astimezone(tz)
        assert local.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC) == t or local.fold == 1


def test_midnight_gap_has_no_slots_where_cronsim_invents_one() -> None:
    """Havana springs forward at 00:00; `* 0 * * 0` runs on real time, so that Sunday has no hour 0.

    cronsim returns the non-existent 00:00 (which is 01:00 real time); the rules win:
    the next slot is the following Sunday.
    """
    assert fires("* 0 * * 0", "America/Havana", datetime(2026, 3, 8, 4, tzinfo=UTC), 1) == [
        "2026-03-15T00:00:00-04:00"
    ]
