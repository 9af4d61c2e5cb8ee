"""Durations in the environment are seconds (or ISO 8601) and `timedelta` in code."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest

from scheduler.core.service_errors import settings_error
from scheduler.core.settings import Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3", timedelta(seconds=3)),
        ("0.5", timedelta(milliseconds=500)),
        ("PT2M", timedelta(minutes=2)),
        ("1:00:00", timedelta(hours=1)),
    ],
)
def test_a_duration_is_seconds_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: timedelta
) -> None:
    monkeypatch.setenv("NIGHTOWL_LEADER_TTL", raw)
    assert Settings(_env_file=None).leader_ttl == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "nan", "inf"])
def test_a_bad_duration_names_the_setting(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("NIGHTOWL_LEADER_TTL", raw)
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(_env_file=None)
    message = settings_error(caught.value)
    assert message.startswith("invalid setting NIGHTOWL_LEADER_TTL: ")
    assert f"(got {raw!r})" in message or f"(got {raw} s)" in message


def test_zero_is_allowed_where_it_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTOWL_SHUTDOWN_GRACE", "0")
    assert Settings(_env_file=None).shutdown_grace == timedelta(0)
