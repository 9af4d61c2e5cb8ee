"""`Budget`: how much one attempt of an agent may spend before it is stopped.

Agents fail by being alive but looping: calling the model again and again, each call
cheap, the run expensive. A liveness watchdog sees a healthy process; a progress timeout
sees progress notes. A budget sees the spend the agent reports with `ctx.usage(...)`.
Past any limit, `ctx.cancelled` is set at once (the agent should stop and return what it
has); an agent that keeps going is terminated after `cancel_grace`, like a timeout. The run
ends `budget_exceeded` with the limit as its reason, and is not retried: another attempt
would spend the same again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-attempt limits on what `ctx.usage(...)` reports; None means no limit."""

    tokens: int | None = None
    cost_usd: float | None = None
    tool_calls: int | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "cost_usd", "tool_calls"):
            value = getattr(self, name)
            if value is None:
                continue
            number = (int,) if name != "cost_usd" else (int, float)
            if isinstance(value, bool) or not isinstance(value, number) or value <= 0:
                raise ValueError(f"Budget {name} must be a positive number, got {value!r}")
        if self.tokens is None and self.cost_usd is None and self.tool_calls is None:
            raise ValueError("Budget needs at least one limit: tokens=, cost_usd= or tool_calls=")

    def exceeded(self, tokens: int, cost_usd: float, tool_calls: int) -> str | None:
        """The first limit the totals have gone past, or None."""
        for name, used, limit in (
            ("tokens", tokens, self.tokens),
            ("cost_usd", cost_usd, self.cost_usd),
            ("tool_calls", tool_calls, self.tool_calls),
        ):
            if limit is not None and used > limit:
                return name
        return None

    @classmethod
    def coerce(cls, value: Any) -> Budget | None:
        """`budget=` accepts a Budget, a dict of its fields, or None."""
        if value is None or isinstance(value, Budget):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"tokens", "cost_usd", "tool_calls"})
            if unknown:
                raise ValueError(f"budget has unknown limit(s) {unknown}; use tokens, cost_usd, tool_calls")
            return cls(**value)
        raise ValueError(f"budget must be Budget(tokens=, cost_usd=, tool_calls=) or a dict, got {value!r}")
