"""Helpers for polling-trigger tests: declare triggers inline, poll them with carried state."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from triggers import Evaluation, Registry, TriggerSpec, load
from triggers.abc import forget_module

AGENTS = "tests.fixtures.poll_agents"


def registry_with(*specs: TriggerSpec) -> Registry:
    """The poll agents plus the given triggers, as the scheduler would load them."""
    base = load(AGENTS)
    return Registry(base.modules, base.agents, {s.name: s for s in specs})


def forget(module: str) -> Iterator[None]:
    """Fixture body: drop triggers a test module declared (the declaration log is global)."""
    yield
    forget_module(module)


class Poller:
    """Carries a trigger's state between `evaluate` calls the way the scheduler does."""

    def __init__(self, spec: TriggerSpec, now: datetime) -> None:
        self.spec = spec
        self.now = now
        self.state: dict[str, Any] | None = None

    def poll(self, advance: float = 0.0) -> Evaluation:
        self.now += timedelta(seconds=advance)
        ev = self.spec.source.evaluate(self.spec.name, self.now, self.state)
        self.state = ev.state
        return ev

    def keys(self, advance: float = 0.0) -> list[str]:
        return [f.idempotency_key for f in self.poll(advance).firings]


class Gauge:
    """A callable metric source the test sets; it can also fail, hang or return NaN."""

    def __init__(self, value: Any = 0.0) -> None:
        self.value = value
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Any:
        self.calls += 1
        self.release.wait(30)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value
