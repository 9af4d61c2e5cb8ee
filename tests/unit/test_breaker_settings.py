"""The fleet breaker's settings: seconds in the environment, one BreakerPolicy in code."""

from __future__ import annotations

import pydantic
import pytest

from agents import BreakerPolicy
from scheduler.core.service_errors import settings_error
from scheduler.core.settings import Settings


def test_the_defaults_are_the_documented_ones() -> None:
    assert Settings(_env_file=None).breaker_policy() == BreakerPolicy(failures=5, window_s=60, open_for_s=30)


def test_the_environment_sets_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTOWL_BREAKER_FAILURES", "3")
    monkeypatch.setenv("NIGHTOWL_BREAKER_WINDOW", "PT2M")
    monkeypatch.setenv("NIGHTOWL_BREAKER_OPEN_FOR", "7.5")
    policy = Settings(_env_file=None).breaker_policy()
    assert (policy.failures, policy.window_s, policy.open_for_s) == (3, 120.0, 7.5)


@pytest.mark.parametrize(("name", "raw"), [("FAILURES", "0"), ("WINDOW", "0"), ("OPEN_FOR", "-1")])
def test_a_policy_that_could_never_work_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    monkeypatch.setenv(f"NIGHTOWL_BREAKER_{name}", raw)
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(_env_file=None)
    assert settings_error(caught.value).startswith(f"invalid setting NIGHTOWL_BREAKER_{name}: ")
