"""`nightowl agents list`: every registered agent, as `triggers list` shows triggers.

What an operator asks about an agent during an incident: which version runs, on which
queue, what it may spend (budget per run, spend cap per window), whether the providers it
calls are reachable (their fleet-wide breakers), and how busy it has been (runs created in
the last hour). Redis and the database are read only when configured; a section that is
not configured is empty (`{}` breakers, `null` runs), not an error.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agents import AgentSpec
from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    loaded_registry,
    print_json,
    print_table,
    redis_for,
    settings_for,
    store_for,
)
from scheduler.core.breaker import RedisBreaker
from scheduler.core.pauses import NO_PAUSES, PauseRecord, Pauses
from scheduler.core.settings import Settings
from scheduler.storage.queries import Queries
from triggers import Registry

COLUMNS = ["name", "version", "queue", "paused", "budget", "spend_cap", "breaker", "runs_last_hour"]


def agent_summary(
    spec: AgentSpec, breaker: dict[str, str], runs_last_hour: int | None, pause: PauseRecord | None = None
) -> dict[str, Any]:
    """The `agents list --json` object of one agent."""
    return {
        "name": spec.name,
        "version": spec.version,
        "queue": spec.queue,
        "paused": pause is not None,
        "budget": spec.budget.as_dict() if spec.budget is not None else None,
        "spend_cap": spec.spend_cap.as_dict() if spec.spend_cap is not None else None,
        "breaker": breaker,
        "runs_last_hour": runs_last_hour,
    }


def _breakers(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """agent -> {provider: breaker state} for the providers each agent's calls went to."""
    if settings.redis_url is None:
        return {}
    client = redis_for(settings)
    try:
        breaker = RedisBreaker(client, settings.redis_prefix, settings.breaker_policy())
        used = breaker.providers_by_agent(names)
        states = breaker.states(sorted({p for providers in used.values() for p in providers}))
    finally:
        client.close()
    return {name: {p: str(states[p].state) for p in providers} for name, providers in used.items()}


def _from_database(settings: Settings, now: datetime) -> tuple[dict[str, int] | None, Pauses]:
    """Runs created per agent in the last hour, and the pauses (nothing without a database)."""
    if settings.database_url is None:
        return None, NO_PAUSES
    store = store_for(settings)
    try:
        return Queries(store.engine).runs_created_per_agent(now - timedelta(hours=1)), store.pauses()
    finally:
        store.engine.dispose()


def gather(settings: Settings, registry: Registry, now: datetime) -> tuple[list[dict[str, Any]], Pauses]:
    """One row per registered agent, by name, and the pauses (the table shows their reasons)."""
    names = sorted(registry.agents)
    breakers = _breakers(settings, names)
    runs, pauses = _from_database(settings, now)
    rows = [
        agent_summary(
            registry.agents[name],
            breakers.get(name, {}),
            None if runs is None else runs.get(name, 0),
            pauses.agent(name),
        )
        for name in names
    ]
    return rows, pauses


def _cell(value: Any) -> Any:
    """A dict column as `k=v` pairs (the table is for people; --json keeps the dicts)."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return value


def _paused_cell(pause: PauseRecord | None) -> str:
    if pause is None:
        return "no"
    return f"yes: {pause.reason}" if pause.reason else "yes"


def list_agents(triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Every agent with its version, queue, budget, spend cap, breakers and recent runs."""
    settings = settings_for(triggers)
    registry = loaded_registry(settings)
    rows, pauses = gather(settings, registry, datetime.now(UTC))
    if json_:
        print_json(rows)
    else:
        print_table(
            [
                {k: _cell(v) for k, v in row.items()} | {"paused": _paused_cell(pauses.agent(row["name"]))}
                for row in rows
            ],
            COLUMNS,
        )
