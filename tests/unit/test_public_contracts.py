"""The public extension contracts: the trigger protocol, the state accessors, typed options.

No service is needed: these are the promises docs/extending.md makes to kind authors.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents import AgentDefinitionError, CronTick, agent
from triggers import (
    CronTrigger,
    DbChangeTrigger,
    Evaluation,
    MetricTrigger,
    PollingTrigger,
    QueueDepthTrigger,
    Registry,
    SourceDefaults,
    SourceHealth,
    Trigger,
    TriggerDefinitionError,
    TriggerStatus,
    cron,
    load,
)
from triggers.abc import forget_module
from triggers.sources import record_failure, record_success

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", [CronTrigger, DbChangeTrigger, MetricTrigger, QueueDepthTrigger])
def test_every_built_in_kind_declares_the_whole_protocol(kind: type[Trigger]) -> None:
    assert Trigger in kind.__mro__  # subclassed, so `polls`, `bind`, `secrets` are inherited
    polling = kind is not CronTrigger
    assert kind.polls is polling
    assert (PollingTrigger in kind.__mro__) is polling


def test_bind_gives_polling_kinds_the_defaults_and_secrets_are_declared() -> None:
    registry = load("examples.demo")
    defaults = SourceDefaults(database_url="postgresql://u:pw@db/x", broker_url="redis://r:6379/0")
    registry.bind_sources(defaults)
    polling = [s.source for s in registry.triggers.values() if s.source.polls]
    assert polling
    assert all(
        PollingTrigger in type(p).__mro__ and p.defaults == defaults  # type: ignore[attr-defined]
        for p in polling
    )
    for spec in registry.triggers.values():
        assert all(s is None or isinstance(s, SecretStr) for s in spec.source.secrets())


def test_status_reads_the_two_keys_that_mean_something_outside_the_kind() -> None:
    assert TriggerStatus.of(None) is TriggerStatus.OK
    assert TriggerStatus.of({"last_slot": "x"}) is TriggerStatus.OK
    assert TriggerStatus.of({"alert_state": "firing"}) is TriggerStatus.FIRING
    failing = {"alert_state": "pending", "source_failing": True}
    assert TriggerStatus.of(failing) is TriggerStatus.SOURCE_FAILING
    assert TriggerStatus.alert_of(failing) is TriggerStatus.PENDING  # frozen where it was
    assert TriggerStatus.alert_of({"alert_state": "bogus"}) is TriggerStatus.OK
    ev = Evaluation([], {"alert_state": "firing"}, T0)
    assert ev.status is TriggerStatus.FIRING


def test_source_health_follows_record_failure_and_record_success() -> None:
    state: dict[str, object] = {"version": 1}
    assert SourceHealth.of(state) == SourceHealth(False, 0, None, None)
    for i in range(3):
        state = record_failure(state, f"boom {i}", T0)
    health = SourceHealth.of(state)
    assert (health.failing, health.failures, health.last_error) == (True, 3, "boom 2")
    assert TriggerStatus.of(state) is TriggerStatus.SOURCE_FAILING
    assert SourceHealth.of(record_success(state)).failing is False


def _extending_module() -> str:
    blocks: list[str] = BLOCK.findall((ROOT / "docs" / "extending.md").read_text())
    (code,) = [b for b in blocks if "class Every(Trigger)" in b]
    return code


@pytest.fixture
def every_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_sinks: None) -> Iterator[Registry]:
    name = f"every_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(_extending_module())
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield load(name)
    finally:
        sys.modules.pop(name, None)


def test_the_kind_in_docs_extending_loads_and_fires_on_its_grid(every_module: Registry) -> None:
    spec = every_module.triggers["tidy-every-5m"]
    assert spec.kind == "every" and spec.source.polls is False
    spec.source.bind(SourceDefaults())  # inherited from Trigger: a no-op
    first = spec.source.evaluate(spec.name, T0 + timedelta(seconds=7), None)
    assert first.firings == [] and first.next_at == T0 + timedelta(minutes=5)
    later = spec.source.evaluate(spec.name, T0 + timedelta(minutes=5, seconds=1), first.state)
    (firing,) = later.firings
    assert firing.idempotency_key == f"every:tidy-every-5m:{(T0 + timedelta(minutes=5)).isoformat()}"
    assert isinstance(firing.event, CronTick)
    again = spec.source.evaluate(spec.name, T0 + timedelta(minutes=6), later.state)
    assert again.firings == []


def test_the_kind_in_docs_extending_says_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_sinks: None
) -> None:
    code = _extending_module().replace('name="tidy-every-5m")', 'name="tidy-every-5m", names="x")')
    namespace: dict[str, object] = {"__name__": "docs_every_typo"}
    with pytest.raises(TriggerDefinitionError, match="did you mean 'name'"):
        exec(compile(code, "docs/extending.md", "exec"), namespace)


def test_a_misspelt_option_is_a_type_error_and_a_did_you_mean_at_run_time() -> None:
    # Each `type: ignore[arg-type]` below is the type test: `make lint` runs mypy --strict
    # with warn_unused_ignores, so the day mypy stops rejecting the typo, lint fails.
    with pytest.raises(AgentDefinitionError, match="did you mean 'max_attempts'"):
        agent("typo-agent", retries=3)  # type: ignore[arg-type]
    with pytest.raises(TriggerDefinitionError, match="did you mean 'tz'"):
        cron("* * * * *", agent="a", name="typo-cron", timezone="UTC")  # type: ignore[arg-type]
    forget_module(__name__)


def test_a_kind_written_to_the_old_contract_fails_at_declaration_with_the_fix() -> None:
    from agents.location import caller_location
    from triggers import TriggerSpec
    from triggers.abc import declare

    class Tiny:  # 0.1's contract: no polls, bind or secrets
        kind = "tiny"
        state_version = 1

        def fingerprint(self) -> str:
            return "tiny"

        def evaluate(self, name: str, now: datetime, state: dict[str, object] | None) -> Evaluation:
            return Evaluation([], {}, now)

        def describe(self) -> dict[str, object]:
            return {}

    spec = TriggerSpec("tiny", "a", "skip", caller_location(), Tiny())  # type: ignore[arg-type]
    with pytest.raises(
        TriggerDefinitionError, match=r"lacks polls, bind, secrets; subclass triggers\.abc\.Trigger"
    ):
        declare(spec)
