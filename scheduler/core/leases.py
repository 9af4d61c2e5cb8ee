"""Redis leases as explicit verbs: acquire, renew, release, each checked against the owner.

Eligibility rule, in one place: a lease can be taken when the key is free
(absent or expired by Redis TTL) or already ours. Renew and release only act
when the stored owner is ours, so a paused process that wakes up after
losing its lease cannot extend or delete someone else's (RedBeat #127).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import redis

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def identity(role: str = "") -> str:
    """An owner identity `host-pid-random`, unique per process start."""
    base = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return f"{role}:{base}" if role else base


log = logging.getLogger("nightowl.leases")


def _ms(ttl: timedelta) -> int:
    """Redis PX: whole milliseconds, at least one."""
    return max(1, int(ttl.total_seconds() * 1000))


class LeaseScripts:
    """The three Lua scripts, registered once per client (a worker makes a lease per run)."""

    def __init__(self, client: redis.Redis) -> None:
        self.acquire = client.register_script(_ACQUIRE)
        self.renew = client.register_script(_RENEW)
        self.release = client.register_script(_RELEASE)


class Lease:
    """One named lease held by `owner` for `ttl` at a time (Redis keeps milliseconds)."""

    def __init__(
        self, client: redis.Redis, key: str, owner: str, ttl: timedelta, scripts: LeaseScripts | None = None
    ) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl = ttl
        s = scripts or LeaseScripts(client)
        self._acquire, self._renew, self._release = s.acquire, s.renew, s.release

    def acquire(self, ttl: timedelta | None = None) -> bool:
        """Take the lease if free or ours (then also extend it)."""
        return bool(self._acquire(keys=[self.key], args=[self.owner, _ms(ttl or self.ttl)]))

    def renew(self, ttl: timedelta | None = None) -> bool:
        """Extend only if still ours; False means we lost it and must stop acting."""
        return bool(self._renew(keys=[self.key], args=[self.owner, _ms(ttl or self.ttl)]))

    def release(self, pipe: redis.client.Pipeline | None = None) -> bool:
        """Delete only if still ours. With `pipe`, queue it there (the caller executes it,
        and the result is not known yet: True is returned)."""
        if pipe is not None:
            self._release(keys=[self.key], args=[self.owner], client=pipe)
            return True
        return bool(self._release(keys=[self.key], args=[self.owner]))

    def holder(self) -> str | None:
        value = cast(Any, self.client.get(self.key))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def remaining(self) -> timedelta:
        """How long until the current holder's lease expires (zero if free)."""
        return timedelta(milliseconds=max(0, int(cast(Any, self.client.pttl(self.key)))))


class Leadership:
    """One role's leadership among replicas: take or renew the lease on each step.

    `on_gain` runs when the lease is won (reload state, rebuild indexes), so a
    replica that takes over never acts on what it remembered from before.
    """

    def __init__(self, lease: Lease, role: str, on_gain: Callable[[], None]) -> None:
        self.lease = lease
        self.role = role
        self.on_gain = on_gain
        self.leading = False

    def hold(self) -> bool:
        from scheduler.core.metrics import LEADER

        gained = self.lease.renew() if self.leading else self.lease.acquire()
        LEADER.labels(self.role).set(1 if gained else 0)
        if gained and not self.leading:
            self.on_gain()
            self.leading = True
            log.info("became %s leader (%s)", self.role, self.lease.owner)
        elif not gained and self.leading:
            log.warning("lost the %s leader lease; standing by", self.role)
            self.leading = False
        return gained

    def resign(self) -> None:
        """Give the lease up now (clean shutdown), so a standby takes over at once."""
        if self.leading:
            self.lease.release()
        self.leading = False
