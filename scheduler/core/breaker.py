"""The fleet's circuit breaker: `agents.breaker`'s policy, with its state in Redis.

`LocalBreaker` protects one process; during a provider outage every worker would still
need its own `failures` calls to learn what another worker already knows. `RedisBreaker`
keeps the same state machine in Redis, so one worker's failures open the breaker for all
of them, and exactly one caller across the fleet becomes the half-open probe.

Semantics, exactly `LocalBreaker`'s (agents/breaker.py), per provider:

1. closed: each transient failure is recorded; `policy.failures` of them within
   `policy.window_s` (no success in between: a success clears them) open the breaker;
2. open for `policy.open_for_s`: `check` raises `ProviderUnavailable(provider, retry_in)`;
3. half-open after that: the first caller takes the probe slot (SET NX PX
   `probe_timeout_s`, so a probe that dies frees it); everyone else is refused until the
   probe reports. A success (the probe's, or any call's) closes the breaker; a failure
   while half-open opens it again for another `open_for_s`.

Each step is one Lua script (atomic across workers). Every opening starts an episode
record (provider, opened at, closed at once closed) that the watchdog turns into one
`provider_unavailable` alert and its resolve; a failed probe continues the same episode.

The breaker is an optimisation, not a safety guarantee: when Redis fails, every gate lets
calls through (and records nothing), with one log line per outage rather than a traceback
per call. After a Redis error the breaker leaves Redis alone for `outage_backoff_s`, so a
Redis that hangs (a partition, not a refusal) delays one call, not every call.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import redis

from agents import BreakerPolicy, BreakerState, ProviderUnavailable
from scheduler.core import keys
from scheduler.core.leases import identity
from scheduler.core.steplog import StepFailures

log = logging.getLogger("nightowl.breaker")

OUTAGE = "the circuit breaker's Redis (LLM calls go ahead unguarded meanwhile)"
AGENT_PROVIDERS_TTL = timedelta(days=30)  # an agent that stopped calling a provider drops it
KEEP_EPISODES = 100  # records per provider (the watchdog needs only recent ones)

# -> {code, retry_in}: 0 closed, 1 open, 2 this caller is the probe, 3 a probe is out.
_CHECK = """
redis.call('SADD', KEYS[3], ARGV[5])
if KEYS[4] then
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return {0, '0'} end
local wait = tonumber(opened) + tonumber(ARGV[2]) - tonumber(ARGV[1])
if wait > 0 then return {1, tostring(wait)} end
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then return {2, '0'} end
return {3, '0'}
"""
# -> 1 when it closed an open breaker.
_SUCCEEDED = """
local since = redis.call('HGET', KEYS[1], 'since')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if since then
  redis.call('HSET', KEYS[4], since, ARGV[1])
  return 1
end
return 0
"""
# -> 0 still closed, 1 already open, 2 the probe failed (open again), 3 it opened now.
_FAILED = """
redis.call('SADD', KEYS[5], ARGV[8])
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if opened then
  if tonumber(ARGV[1]) - tonumber(opened) >= tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[1], 'opened_at', ARGV[1])
    redis.call('DEL', KEYS[3])
    return 2
  end
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  return 0
end
local since = tonumber(ARGV[6])
while redis.call('HEXISTS', KEYS[4], string.format('%d', since)) == 1 do since = since + 1 end
since = string.format('%d', since)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'opened_at', ARGV[1], 'since', since)
redis.call('HSET', KEYS[4], since, '')
local n = redis.call('HLEN', KEYS[4])
local keep = tonumber(ARGV[9])
if n > keep then
  local ids = redis.call('HKEYS', KEYS[4])
  table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
  for i = 1, n - keep do redis.call('HDEL', KEYS[4], ids[i]) end
end
return 3
"""

T = TypeVar("T")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class BreakerInfo:
    """One provider's breaker as `status`, `agents list` and metrics show it."""

    state: BreakerState
    opened_at: datetime | None  # when this episode began (a failed probe does not move it)
    failures: int  # transient failures counted within the window (while closed)
    retry_in: float | None  # seconds until a probe may go (0 half-open; None closed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
            "failures": self.failures,
            "retry_in": self.retry_in,
        }


@dataclass(frozen=True, slots=True)
class Episode:
    """One opening of a provider's breaker, until a success closes it."""

    provider: str
    opened_ms: int  # its identity too: the episode's first opening, Unix milliseconds
    closed_ms: int | None = None

    @property
    def opened_at(self) -> datetime:
        return _at(self.opened_ms)

    @property
    def closed_at(self) -> datetime | None:
        return None if self.closed_ms is None else _at(self.closed_ms)


class RedisBreaker:
    """`BreakerPolicy` shared by every process on one Redis (`clock`: Unix seconds, so
    workers on different machines agree; tests inject one)."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.time,
        *,
        outage: StepFailures | None = None,
        outage_backoff_s: float = 5.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.policy = policy
        self._clock = clock
        self._owner = identity("probe")
        self._outage = outage or StepFailures(log)
        self._outage_backoff_s = outage_backoff_s
        self._skip_redis_until = 0.0  # monotonic: calls go ahead without asking Redis until then
        self._check = client.register_script(_CHECK)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._failed = client.register_script(_FAILED)

    # -- the ProviderGate protocol ---------------------------------------------------

    def check(self, provider: str) -> None:
        """Return when a call may go ahead (or Redis fails); raise `ProviderUnavailable`
        while open, or half-open with the probe already out."""
        self._gate_check(provider, None)

    def succeeded(self, provider: str) -> None:
        """A call got an answer: clears the failures, closes an open breaker."""
        now = self._clock()
        closed = self._guard(lambda: self._succeeded(keys=self._keys(provider)[:4], args=[_ms(now)]), 0)
        if closed:
            log.info("provider %s answers again: its circuit breaker is closed", provider)

    def failed(self, provider: str) -> bool:
        """A call failed transiently; True when the breaker is (now) open."""
        now, p = self._clock(), self.policy
        args: list[Any] = [
            repr(now),
            repr(now - p.window_s),
            p.failures,
            repr(p.open_for_s),
            uuid.uuid4().hex,
            _ms(now),
            _ms(p.window_s) + 1000,
            provider,
            KEEP_EPISODES,
        ]
        code = int(self._guard(lambda: self._failed(keys=self._keys(provider), args=args), 0))
        if code == 3:
            log.warning(
                "provider %s: %d transient failures within %.0f s: circuit breaker open for %.0f s",
                provider,
                p.failures,
                p.window_s,
                p.open_for_s,
            )
        elif code == 2:
            log.info("provider %s: the half-open probe failed: open again", provider)
        return code > 0

    def state(self, provider: str) -> BreakerState:
        key = keys.breaker_state(self.prefix, provider)
        raw = self._guard(lambda: self.client.hget(key, "opened_at"), None)
        return self._state_of(raw, self._clock())

    def gate(self, agent: str) -> AgentGate:
        """This breaker as one agent's `ctx.breaker`: it also records which providers the
        agent calls (`agents list`)."""
        return AgentGate(self, agent)

    # -- what operators and the watchdog read ----------------------------------------

    def providers(self) -> list[str]:
        members = cast(set[Any], self.client.smembers(keys.breaker_providers(self.prefix)))
        return sorted(_text(p) for p in members)

    def providers_of(self, agent: str) -> list[str]:
        """The providers the agent's calls went to (through `gate(agent)`)."""
        return self.providers_by_agent([agent])[agent]

    def providers_by_agent(self, agents: list[str]) -> dict[str, list[str]]:
        """`providers_of` for many agents in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for agent in agents:
            pipe.smembers(keys.agent_providers(self.prefix, agent))
        replies = zip(agents, pipe.execute(), strict=True)
        return {agent: sorted(_text(p) for p in members) for agent, members in replies}

    def states(self, providers: list[str] | None = None) -> dict[str, BreakerInfo]:
        """Each provider's breaker (every provider ever asked about, by default)."""
        names = self.providers() if providers is None else providers
        now = self._clock()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(keys.breaker_state(self.prefix, name), ["opened_at", "since"])
            pipe.zcount(keys.breaker_failures(self.prefix, name), f"({now - self.policy.window_s!r}", "+inf")
        replies = pipe.execute()
        out: dict[str, BreakerInfo] = {}
        for i, name in enumerate(names):
            (opened, since), failures = replies[2 * i], int(replies[2 * i + 1])
            state = self._state_of(opened, now)
            retry_in = None
            if opened is not None:
                retry_in = max(0.0, float(opened) + self.policy.open_for_s - now)
            out[name] = BreakerInfo(state, _at(int(since)) if since is not None else None, failures, retry_in)
        return out

    def episodes(self) -> list[Episode]:
        """Every recorded episode: each provider's open one (if any) and its recent closed
        ones. A record left open by a lost state hash is not reported (it is not open)."""
        names = self.providers()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.breaker_state(self.prefix, name), "since")
            pipe.hgetall(keys.breaker_episodes(self.prefix, name))
        replies = pipe.execute()
        out: list[Episode] = []
        for i, name in enumerate(names):
            since, records = replies[2 * i], cast(dict[Any, Any], replies[2 * i + 1])
            current = int(since) if since is not None else None
            for opened, closed in records.items():
                opened_ms, closed_text = int(opened), _text(closed)
                if closed_text:
                    out.append(Episode(name, opened_ms, int(closed_text)))
                elif opened_ms == current:
                    out.append(Episode(name, opened_ms))
        return sorted(out, key=lambda e: (e.opened_ms, e.provider))

    # -- internals ---------------------------------------------------------------------

    def _gate_check(self, provider: str, agent: str | None) -> None:
        p = self.policy
        names = self._keys(provider)
        script_keys = [names[0], names[2], names[4]]
        if agent is not None:
            script_keys.append(keys.agent_providers(self.prefix, agent))
        args: list[Any] = [
            repr(self._clock()),
            repr(p.open_for_s),
            _ms(p.probe_timeout_s),
            self._owner,
            provider,
            _ms(AGENT_PROVIDERS_TTL.total_seconds()),
        ]
        reply = self._guard(lambda: self._check(keys=script_keys, args=args), None)
        if reply is None:
            return
        code, retry_in = int(reply[0]), float(_text(reply[1]))
        if code == 1:
            raise ProviderUnavailable(provider, retry_in)
        if code == 3:
            raise ProviderUnavailable(provider, p.open_for_s, "a probe is under way")

    def _keys(self, provider: str) -> list[str]:
        """state, failures, probe, episodes, providers: the order the scripts take them."""
        return [
            keys.breaker_state(self.prefix, provider),
            keys.breaker_failures(self.prefix, provider),
            keys.breaker_probe(self.prefix, provider),
            keys.breaker_episodes(self.prefix, provider),
            keys.breaker_providers(self.prefix),
        ]

    def _state_of(self, opened: Any, now: float) -> BreakerState:
        if opened is None:
            return BreakerState.CLOSED
        if now - float(opened) < self.policy.open_for_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def _guard(self, call: Callable[[], T], fallback: T) -> T:
        """Run one Redis call; on a Redis failure let the LLM call go ahead (`fallback`)."""
        if time.monotonic() < self._skip_redis_until:
            return fallback
        try:
            result = call()
        except (redis.RedisError, OSError) as exc:
            self._skip_redis_until = time.monotonic() + self._outage_backoff_s
            self._outage.failed(OUTAGE, exc)
            return fallback
        self._outage.succeeded(OUTAGE)
        return result


class AgentGate:
    """`RedisBreaker` bound to one agent: the same breaker, plus a record of the providers
    the agent calls. A `ProviderGate`."""

    def __init__(self, breaker: RedisBreaker, agent: str) -> None:
        self.breaker = breaker
        self.agent = agent

    def check(self, provider: str) -> None:
        self.breaker._gate_check(provider, self.agent)

    def succeeded(self, provider: str) -> None:
        self.breaker.succeeded(provider)

    def failed(self, provider: str) -> bool:
        return self.breaker.failed(provider)

    def state(self, provider: str) -> BreakerState:
        return self.breaker.state(provider)
