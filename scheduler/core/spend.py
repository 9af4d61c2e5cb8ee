"""What each agent has spent in its `SpendCap` window, counted across the fleet in Redis.

A spend cap is per agent, not per worker: ten workers each under a tenth of the cap must
add up to it. Each worker adds the usage its runs report to one Redis hash per agent per
window (`HINCRBY`/`HINCRBYFLOAT` are atomic, so concurrent adds never lose one); the hash
names the window's start, so a new window starts at zero with no reset step, and it expires
an hour after its window ends. Windows are `SpendCap.window(now)`: fixed, aligned to the
Unix epoch in UTC, so every worker agrees where one starts.

Redis errors reach the caller: whether a run may start while the count is unknown is the
caller's decision, not this counter's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import redis

from agents import SpendCap
from scheduler.core import keys

KEEP_AFTER_WINDOW = timedelta(hours=1)  # a window's hash outlives it (late reports, `status`)


class SpendCounter:
    """Per-agent spend per window: `add` from workers, `totals` and `reached` for everyone."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, agent: str, cap: SpendCap, now: datetime) -> tuple[str, datetime]:
        start, end = cap.window(now)
        return keys.spend(self.prefix, agent, int(start.timestamp())), end

    def add(self, agent: str, cap: SpendCap, now: datetime, tokens: int, cost_usd: float) -> None:
        """Count usage reported at `now` towards the agent's current window."""
        if not tokens and not cost_usd:
            return
        key, end = self._key(agent, cap, now)
        pipe = self.client.pipeline(transaction=True)
        if tokens:
            pipe.hincrby(key, "tokens", int(tokens))
        if cost_usd:
            pipe.hincrbyfloat(key, "cost_usd", float(cost_usd))
        pipe.expireat(key, int((end + KEEP_AFTER_WINDOW).timestamp()))
        pipe.execute()

    def totals(self, agent: str, cap: SpendCap, now: datetime) -> tuple[float, float]:
        """(tokens, cost in USD) spent in the window `now` falls in."""
        key, _ = self._key(agent, cap, now)
        tokens, cost = cast(list[Any], self.client.hmget(key, ["tokens", "cost_usd"]))
        return float(tokens or 0), float(cost or 0)

    def reached(self, agent: str, cap: SpendCap, now: datetime) -> tuple[str, datetime] | None:
        """(the limit reached, when the window ends), or None while under the cap."""
        limit = cap.reached(*self.totals(agent, cap, now))
        if limit is None:
            return None
        return limit, cap.window(now)[1]
