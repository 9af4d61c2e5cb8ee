"""Heartbeat deadlines in Redis sorted sets, so a watchdog check costs O(expired).

Two sets, one member per running attempt (`<run_id>|<attempt>|<fence>`):
- `hb:live`: score = the liveness deadline (last worker beat + heartbeat_timeout);
- `hb:progress`: score = the progress deadline (last `ctx.heartbeat()` + progress_timeout),
  only for agents that declare `progress_timeout`.

`ZRANGEBYSCORE -inf now` returns exactly the attempts past a deadline, however
many are running. Redis is an index here, not the truth: the watchdog confirms
each expired member against the database, and rebuilds the sets from the
database when it becomes leader, so a Redis restart loses no stall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import redis

from scheduler.core import keys

Deadline = Literal["live", "progress"]


@dataclass(frozen=True, slots=True)
class Member:
    run_id: str
    attempt: int
    fence: int

    def encode(self) -> str:
        return f"{self.run_id}|{self.attempt}|{self.fence}"

    @staticmethod
    def decode(raw: bytes | str) -> Member | None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split("|")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return Member(parts[0], int(parts[1]), int(parts[2]))


class HeartbeatIndex:
    """Write side (workers) and read side (watchdog) of the deadline sets."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self.redis = client
        self.live_key = keys.heartbeats_live(key_prefix)
        self.progress_key = keys.heartbeats_progress(key_prefix)

    def beat(self, member: Member, live_deadline: float, progress_deadline: float | None) -> None:
        """One round trip: move the attempt's deadlines forward."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.live_key, {member.encode(): live_deadline})
        if progress_deadline is not None:
            pipe.zadd(self.progress_key, {member.encode(): progress_deadline})
        pipe.execute()

    def clear(self, member: Member, pipe: redis.client.Pipeline | None = None) -> None:
        """Forget the attempt's deadlines; with `pipe`, queued there for the caller to run."""
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if pipe is None else pipe
        pipe.zrem(self.live_key, member.encode())
        pipe.zrem(self.progress_key, member.encode())
        if own:
            pipe.execute()

    def expired(self, now: float, limit: int = 1000) -> list[tuple[Deadline, Member, float]]:
        """Members past a deadline: (which deadline, member, its score). O(log n + expired)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.live_key, "-inf", now, start=0, num=limit, withscores=True)
        pipe.zrangebyscore(self.progress_key, "-inf", now, start=0, num=limit, withscores=True)
        live, progress = pipe.execute()
        out: list[tuple[Deadline, Member, float]] = []
        for which, rows in (("live", live), ("progress", progress)):
            for raw, score in rows:
                member = Member.decode(raw)
                if member is not None:
                    out.append((which, member, float(score)))  # type: ignore[arg-type]
        return out

    def drop(self, which: Deadline, members: Iterable[Member]) -> None:
        keys = [m.encode() for m in members]
        if keys:
            self.redis.zrem(self.live_key if which == "live" else self.progress_key, *keys)

    def load(self, entries: Iterable[tuple[Deadline, Member, float]]) -> int:
        """Bulk (re)insert deadlines, e.g. rebuilt from the database."""
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for which, member, deadline in entries:
            pipe.zadd(self.live_key if which == "live" else self.progress_key, {member.encode(): deadline})
            n += 1
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return n

    def size(self) -> int:
        return int(self.redis.zcard(self.live_key))
