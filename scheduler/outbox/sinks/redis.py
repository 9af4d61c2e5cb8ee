"""Redis sinks: a cache (newest value per key wins) and an event stream (each entry once).

Both do their check and their write in one Lua script, so a redelivered entry
cannot slip between the check and the write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from pydantic import SecretStr

from agents.options import as_timedelta
from scheduler.outbox.abc import Entry, Outcome, SinkError
from triggers.sources import SourceDefaults, mask_url, secret_url

# The cache keeps one hash per key at <prefix><key>: fields `value` (JSON) and `seq`.
# Before 0.x it kept two strings, <prefix><key> (the value) and <prefix><key>:seq; such a
# key is converted when it is next written, inside the same script, so no reader sees it
# half-converted. An old value key always had its :seq companion; a string without one
# is itself a companion (or an orphan) and is simply overwritten.
# KEYS[1] <prefix><key>, KEYS[2] <prefix><key>:seq, KEYS[3] <prefix><key>:seq:seq.
_CACHE_CONVERT = """
local function convert()
  if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return -1 end
  if redis.call('TYPE', KEYS[2])['ok'] ~= 'string' then return -1 end
  local seq = tonumber(redis.call('GET', KEYS[2]))
  if not seq then return -1 end
  local value = redis.call('GET', KEYS[1])
  local pttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'value', value, 'seq', seq)
  if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
  -- <key>:seq is ours alone unless a user key '<key>:seq' was written the old way too
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
  return seq
end
"""

# ARGV value, seq, ttl ms (0 = none). 1 written, 0 an older or repeated write dropped.
_CACHE_SET = (
    _CACHE_CONVERT
    + """
convert()
local current = 0
if redis.call('TYPE', KEYS[1])['ok'] == 'hash' then
  current = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') or 0
end
if tonumber(ARGV[2]) <= current then return 0 end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'seq', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"""
)

# The one-off upgrade: convert one old-format key if it is one. The seq, or -1.
_CACHE_UPGRADE = (
    _CACHE_CONVERT
    + """
return convert()
"""
)

# KEYS[1] stream, KEYS[2] dedupe marker; ARGV entry id, key, seq, value, marker ttl ms.
_STREAM_ADD = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'entry_id', ARGV[1], 'key', ARGV[2], 'seq', ARGV[3],
           'value', ARGV[4])
return 1
"""


class _RedisSink:
    def __init__(self, redis_url: str | SecretStr | None) -> None:
        self.redis_url = secret_url(redis_url, "redis_url")
        self._default: str | None = None
        self._client: redis.Redis | None = None

    def bind(self, defaults: SourceDefaults) -> None:
        self._default = defaults.broker_url

    def client(self) -> redis.Redis:
        if self._client is None:
            url = self.redis_url.get_secret_value() if self.redis_url else self._default
            if not url:
                raise SinkError("pass redis_url= or set NIGHTOWL_REDIS_URL")
            self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return self._client

    def shown(self) -> str:
        return mask_url(self.redis_url.get_secret_value()) if self.redis_url else "(nightowl's Redis)"


class RedisCacheSink(_RedisSink):
    """`<prefix><key>` is a hash: `value` (the newest value, JSON) and `seq` (its sequence
    number); an older `seq` never overwrites it. Read it with `HGET <prefix><key> value`
    (or `sink.get(key)`)."""

    def __init__(
        self, *, prefix: str, ttl: timedelta | float | None = None, redis_url: str | SecretStr | None = None
    ) -> None:
        super().__init__(redis_url)
        if not isinstance(prefix, str):
            raise SinkError(f"RedisCacheSink prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.ttl = None if ttl is None else as_timedelta(ttl, "ttl", allow_zero=False)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "redis_cache",
            "prefix": self.prefix,
            "redis_url": self.shown(),
            "ttl_s": self.ttl.total_seconds() if self.ttl else None,
        }

    def _keys(self, key: str) -> list[str]:
        full = f"{self.prefix}{key}"
        return [full, f"{full}:seq", f"{full}:seq:seq"]

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        client = self.client()
        script = client.register_script(_CACHE_SET)
        ttl_ms = int(self.ttl.total_seconds() * 1000) if self.ttl else 0
        pipe = client.pipeline(transaction=False)
        for e in entries:
            script(keys=self._keys(e.key), args=[json.dumps(e.value), e.seq, ttl_ms], client=pipe)
        pipe.execute()
        return [None] * len(entries)

    def get(self, key: str) -> Any:
        """The cached value of `key` (None when absent), as a reader of the cache sees it."""
        raw = self.client().hget(f"{self.prefix}{key}", "value")
        return None if raw is None else json.loads(raw)

    def upgrade_keys(self, batch: int = 1000) -> int:
        """Convert every key left in the two-string format of earlier versions to the hash
        (`nightowl outbox upgrade-cache`); keys are also converted when next written. Safe
        to run while relays deliver, and again. The number of keys converted."""
        client = self.client()
        script = client.register_script(_CACHE_UPGRADE)
        pattern = self.prefix.replace("\\", "\\\\")
        for ch in "*?[]":
            pattern = pattern.replace(ch, f"\\{ch}")
        converted = 0
        names: list[str] = []
        for name in client.scan_iter(match=f"{pattern}*", count=batch, _type="string"):
            names.append(name.decode() if isinstance(name, bytes) else name)
            if len(names) >= batch:
                converted += self._convert(script, names)
                names = []
        return converted + self._convert(script, names)

    def _convert(self, script: Any, names: list[str]) -> int:
        if not names:
            return 0
        pipe = self.client().pipeline(transaction=False)
        for name in names:
            script(keys=[name, f"{name}:seq", f"{name}:seq:seq"], client=pipe)
        return sum(1 for seq in pipe.execute() if int(seq) >= 0)


class RedisStreamSink(_RedisSink):
    """An event log: each entry appended once (a marker per entry id, set with NX)."""

    def __init__(
        self,
        *,
        stream: str,
        redis_url: str | SecretStr | None = None,
        dedupe_for: timedelta | float = timedelta(days=7),
    ) -> None:
        super().__init__(redis_url)
        if not isinstance(stream, str) or not stream:
            raise SinkError(f"RedisStreamSink stream must be a non-empty string, got {stream!r}")
        self.stream = stream
        self.dedupe_for = as_timedelta(dedupe_for, "dedupe_for", allow_zero=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "redis_stream", "stream": self.stream, "redis_url": self.shown()}

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        client = self.client()
        script = client.register_script(_STREAM_ADD)
        ttl_ms = int(self.dedupe_for.total_seconds() * 1000)
        pipe = client.pipeline(transaction=False)
        for e in entries:
            script(
                keys=[self.stream, f"{self.stream}:seen:{e.id}"],
                args=[e.id, e.key, e.seq, json.dumps(e.value), ttl_ms],
                client=pipe,
            )
        pipe.execute()
        return [None] * len(entries)
