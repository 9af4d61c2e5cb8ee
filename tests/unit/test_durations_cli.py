"""`--since` durations of the bulk run actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
import typer

from scheduler.cli.runs_actions import parse_duration


def test_durations_parse_and_absurd_ones_are_usage_errors() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("inf", "nan", "1e12", "100000000d", "-5m", "soon", "3x"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)
