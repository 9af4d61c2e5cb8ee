"""The watchdog's fleet-wide checks: provider outages, budgets that stopped a run, spend caps.

None of these is a failure of nightowl's own machinery; each is something the agents'
owner wants to hear about once, not once per run:

- `provider_unavailable`: one alert per breaker episode of a provider (`RedisBreaker`'s
  episode records), fired while it is open and resolved when a success closes it; an
  episode that opened and closed between two checks is still fired, then resolved;
- `run_budget_exceeded`: one alert per run that ended `budget_exceeded`, found the way
  newly dead runs are (finished since the previous check, with an overlap), naming the
  limit and the run's usage;
- `spend_cap_reached`: one alert per agent per window in which it reached its `SpendCap`,
  resolved when the window turns (or the cap is no longer reached: raised by a deploy).

The breaker gauge (`nightowl_provider_breaker_open`) is refreshed here too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents import BreakerState
from scheduler.alerts import Alert, AlertManager
from scheduler.core import metrics
from scheduler.core.breaker import Episode, RedisBreaker
from scheduler.core.spend import SpendCounter
from scheduler.core.vocabulary import AlertKind, Reason
from scheduler.storage.queries import EndedRun, Queries
from triggers import Registry

# Where each budget limit's use is found in `runs.usage`.
_USAGE_OF_LIMIT: dict[str, str] = {Reason.MAX_STEPS: "steps"}


def provider_key(episode: Episode) -> str:
    return f"{AlertKind.PROVIDER_UNAVAILABLE}:{episode.provider}:{episode.opened_ms}"


class FleetChecks:
    """The three checks, run by the leading watchdog's `check()`; each returns the alerts
    it sent."""

    def __init__(
        self,
        *,
        registry: Registry,
        alerts: AlertManager,
        breaker: RedisBreaker,
        spend: SpendCounter,
        queries: Queries,
    ) -> None:
        self.registry = registry
        self.alerts = alerts
        self.breaker = breaker
        self.spend = spend
        self.queries = queries

    def check(self, now: datetime, since: datetime) -> int:
        # The database's check first: a Redis error in the others must not cost a budget
        # alert of the window the watchdog is about to move past.
        sent = self.budgets(since)
        return sent + self.providers(since) + self.spend_caps(now)

    # provider_unavailable ---------------------------------------------------------------

    def providers(self, since: datetime) -> int:
        states = self.breaker.states()
        metrics.observe_breakers({p: info.state is not BreakerState.CLOSED for p, info in states.items()})
        episodes = self.breaker.episodes()
        recent = [e for e in episodes if e.closed_at is None or e.closed_at > since]
        sent = 0
        if recent:
            users = self._users()
            for e in recent:
                sent += self.alerts.fire_once(self._opened(e, users.get(e.provider, [])))
        by_key = {provider_key(e): e for e in episodes}
        for o in self.alerts.store.open_of_kind(AlertKind.PROVIDER_UNAVAILABLE):
            episode = by_key.get(o.dedupe_key)
            if episode is None or episode.closed_at is not None:
                sent += self.alerts.resolve(self._closed(o.dedupe_key, episode))
        return sent

    def _users(self) -> dict[str, list[str]]:
        """provider -> the registered agents whose calls went to it."""
        out: dict[str, list[str]] = {}
        for name, providers in self.breaker.providers_by_agent(sorted(self.registry.agents)).items():
            for provider in providers:
                out.setdefault(provider, []).append(name)
        return out

    def _opened(self, e: Episode, agents: list[str]) -> Alert:
        p = self.breaker.policy
        return Alert(
            kind=AlertKind.PROVIDER_UNAVAILABLE,
            dedupe_key=provider_key(e),
            message=(
                f"provider {e.provider} is unavailable: its circuit breaker opened at "
                f"{e.opened_at.isoformat()} after {p.failures} transient failures within "
                f"{p.window_s:.0f} s; runs that call it wait (waiting_for=provider_unavailable) "
                f"and resume once a probe call succeeds (every {p.open_for_s:.0f} s)"
            ),
            details={"provider": e.provider, "opened_at": e.opened_at.isoformat(), "agents": agents},
        )

    def _closed(self, dedupe_key: str, e: Episode | None) -> Alert:
        if e is None or e.closed_at is None:
            provider = dedupe_key.split(":", 1)[1].rsplit(":", 1)[0]
            message = f"provider {provider}: its breaker episode is no longer open (its Redis state is gone)"
            details: dict[str, Any] = {"provider": provider}
        else:
            provider = e.provider
            lasted = (e.closed_at - e.opened_at).total_seconds()
            message = (
                f"provider {provider} answers again: its circuit breaker closed at "
                f"{e.closed_at.isoformat()} after {lasted:.0f} s open"
            )
            details = {"provider": provider, "closed_at": e.closed_at.isoformat(), "open_s": lasted}
        return Alert(
            kind=AlertKind.PROVIDER_UNAVAILABLE, dedupe_key=dedupe_key, message=message, details=details
        )

    # run_budget_exceeded ------------------------------------------------------------------

    def budgets(self, since: datetime) -> int:
        ended = self.queries.budget_exceeded_since(since)
        return sum(self.alerts.fire_once(self._over_budget(r)) for r in ended)

    def _over_budget(self, r: EndedRun) -> Alert:
        spec = self.registry.agents.get(r.agent)
        budget = spec.budget.as_dict() if spec is not None and spec.budget is not None else None
        limit = r.terminal_reason or "unknown"
        usage = r.usage or {}
        used = usage.get(_USAGE_OF_LIMIT.get(limit, limit))
        allowed = (budget or {}).get(limit)
        return Alert(
            kind=AlertKind.RUN_BUDGET_EXCEEDED,
            dedupe_key=f"{AlertKind.RUN_BUDGET_EXCEEDED}:{r.id}",
            message=(
                f"run {r.id} of {r.agent} went over its budget ({limit}: {used} used, "
                f"{allowed} allowed) after {r.attempt} attempt(s); it was stopped and is not retried"
            ),
            run_id=r.id,
            trigger=r.trigger,
            agent=r.agent,
            attempt=r.attempt,
            details={"limit": limit, "usage": usage, "budget": budget},
        )

    # spend_cap_reached --------------------------------------------------------------------

    def spend_caps(self, now: datetime) -> int:
        sent = 0
        reached: set[str] = set()
        for name, spec in sorted(self.registry.agents.items()):
            cap = spec.spend_cap
            if cap is None:
                continue
            tokens, cost = self.spend.totals(name, cap, now)
            limit = cap.reached(tokens, cost)
            if limit is None:
                continue
            start, end = cap.window(now)
            key = f"{AlertKind.SPEND_CAP_REACHED}:{name}:{int(start.timestamp())}"
            reached.add(key)
            sent += self.alerts.fire(
                Alert(
                    kind=AlertKind.SPEND_CAP_REACHED,
                    dedupe_key=key,
                    agent=name,
                    message=(
                        f"agent {name} reached its spend cap ({limit}) for the window from "
                        f"{start.isoformat()}: {tokens:.0f} tokens, ${cost:.4f} spent; its new runs "
                        f"wait (waiting_for=spend_cap) until {end.isoformat()}"
                    ),
                    details={
                        "limit": limit,
                        "cap": cap.as_dict(),
                        "tokens": tokens,
                        "cost_usd": cost,
                        "window_start": start.isoformat(),
                        "window_end": end.isoformat(),
                    },
                )
            )
        for o in self.alerts.store.open_of_kind(AlertKind.SPEND_CAP_REACHED):
            if o.dedupe_key in reached:
                continue
            agent = o.dedupe_key.split(":")[1]
            sent += self.alerts.resolve(
                Alert(
                    kind=AlertKind.SPEND_CAP_REACHED,
                    dedupe_key=o.dedupe_key,
                    agent=agent,
                    message=(
                        f"agent {agent} is under its spend cap again (a new window began, or the "
                        "cap was raised): its runs start again"
                    ),
                )
            )
        return sent
