"""`Budget` and `SpendCap`: how much one run, and one agent across the fleet, may spend.

Agents fail by being alive but looping: calling the model again and again, each call
cheap, the run expensive. A liveness watchdog sees a healthy process; a progress timeout
sees progress notes. A budget sees the spend the agent reports with `ctx.usage(...)` and the
steps it takes with `ctx.step(...)`.

A budget is for the whole run, summed over its attempts: a runaway that crashes its process
and is retried must not spend `max_attempts` times its limit. Usage is persisted as it is
reported (with each step and each heartbeat), so the spend of an attempt whose process died
still counts, and replayed steps cost nothing. Past any limit, `ctx.cancelled` is set at once
and the next `ctx.step` raises `BudgetExceeded`; an agent that keeps going is terminated
after `cancel_grace`, like a timeout. The run ends `budget_exceeded/<limit>`, not retried.

A spend cap is per agent and per window of time, counted across every worker (in Redis):
new attempts beyond it wait (`waiting_for=spend_cap`) until the window turns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agents._errors import AgentError

BUDGET_LIMITS = ("tokens", "cost_usd", "tool_calls", "max_steps")


class BudgetExceeded(AgentError):
    """Raised by `ctx.step` once the run is over its budget: no new costly work starts."""

    def __init__(self, limit: str, usage: dict[str, Any]) -> None:
        self.limit = limit
        super().__init__(f"the run is over its budget ({limit}): {usage}")


def _check_positive(owner: str, name: str, value: object, *, integer: bool) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and isinstance(value, float))
    ):
        ok = False
    else:
        ok = math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(
            f"{owner} {name} must be a positive {'integer' if integer else 'number'}, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """Run-wide limits on what `ctx.usage(...)` reports and on the number of `ctx.step`
    calls; None means no limit."""

    tokens: int | None = None
    cost_usd: float | None = None
    tool_calls: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in BUDGET_LIMITS:
            _check_positive("Budget", name, getattr(self, name), integer=name != "cost_usd")
        if all(getattr(self, name) is None for name in BUDGET_LIMITS):
            raise ValueError("Budget needs at least one limit: tokens=, cost_usd=, tool_calls= or max_steps=")

    def exceeded(self, tokens: int, cost_usd: float, tool_calls: int, steps: int = 0) -> str | None:
        """The first limit the run's totals have gone past, or None."""
        for name, used, limit in (
            ("tokens", tokens, self.tokens),
            ("cost_usd", cost_usd, self.cost_usd),
            ("tool_calls", tool_calls, self.tool_calls),
            ("max_steps", steps, self.max_steps),
        ):
            if limit is not None and used > limit:
                return name
        return None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in BUDGET_LIMITS if getattr(self, name) is not None}

    @classmethod
    def coerce(cls, value: Any) -> Budget | None:
        """`budget=` accepts a Budget, a dict of its fields, or None."""
        if value is None or isinstance(value, Budget):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(BUDGET_LIMITS))
            if unknown:
                raise ValueError(f"budget has unknown limit(s) {unknown}; use {', '.join(BUDGET_LIMITS)}")
            return cls(**value)
        raise ValueError(
            f"budget must be Budget(tokens=, cost_usd=, tool_calls=, max_steps=) or a dict, got {value!r}"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SpendCap:
    """What one agent may spend across the fleet per window of `per` (fixed windows aligned
    to the Unix epoch in UTC, so every worker agrees where a window starts)."""

    cost_usd: float | None = None
    tokens: int | None = None
    per: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        _check_positive("SpendCap", "cost_usd", self.cost_usd, integer=False)
        _check_positive("SpendCap", "tokens", self.tokens, integer=True)
        if self.cost_usd is None and self.tokens is None:
            raise ValueError("SpendCap needs a limit: cost_usd= or tokens=")
        if not isinstance(self.per, timedelta) or self.per < timedelta(seconds=1):
            raise ValueError(f"SpendCap per must be a timedelta of at least a second, got {self.per!r}")

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The window `now` falls in: [start, end)."""
        length = self.per.total_seconds()
        index = math.floor((now - _EPOCH).total_seconds() / length)
        start = _EPOCH + timedelta(seconds=index * length)
        return start, start + self.per

    def reached(self, tokens: float, cost_usd: float) -> str | None:
        """The limit the window's totals have reached, or None."""
        if self.cost_usd is not None and cost_usd >= self.cost_usd:
            return "cost_usd"
        if self.tokens is not None and tokens >= self.tokens:
            return "tokens"
        return None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_s": self.per.total_seconds()}
        if self.cost_usd is not None:
            out["cost_usd"] = self.cost_usd
        if self.tokens is not None:
            out["tokens"] = self.tokens
        return out

    @classmethod
    def coerce(cls, value: Any) -> SpendCap | None:
        if value is None or isinstance(value, SpendCap):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"cost_usd", "tokens", "per"})
            if unknown:
                raise ValueError(f"spend_cap has unknown field(s) {unknown}; use cost_usd, tokens, per")
            return cls(**value)
        raise ValueError(f"spend_cap must be SpendCap(cost_usd=, tokens=, per=) or a dict, got {value!r}")
