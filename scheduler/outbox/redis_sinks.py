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

from agents._options import as_timedelta
from scheduler.outbox._base import Outcome, SinkError
from scheduler.storage.outbox_store import Entry
from triggers._polling import SourceDefaults, mask_url, secret_url

# KEYS[1] value key, KEYS[2] seq key; ARGV value, seq, ttl ms (0 = none).
_CACHE_SET = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= current then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
"""

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
    """`<prefix><key>` holds the newest value (JSON); an older `seq` never overwrites it."""

    def __init__(self, *, prefix: str, ttl: timedelta | float | None = None,
                 redis_url: str | SecretStr | None = None) -> None:
        super().__init__(redis_url)
        if not isinstance(prefix, str):
            raise SinkError(f"RedisCacheSink prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.ttl = None if ttl is None else as_timedelta(ttl, "ttl", allow_zero=False)

    def describe(self) -> dict[str, Any]:
        return {"kind": "redis_cache", "prefix": self.prefix, "redis_url": self.shown(),
                "ttl_s": self.ttl.total_seconds() if self.ttl else None}

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        client = self.client()
        script = client.register_script(_CACHE_SET)
        ttl_ms = int(self.ttl.total_seconds() * 1000) if self.ttl else 0
        pipe = client.pipeline(transaction=False)
        for e in entries:
            key = f"{self.prefix}{e.key}"
            script(keys=[key, f"{key}:seq"], args=[json.dumps(e.value), e.seq, ttl_ms], client=pipe)
        pipe.execute()
        return [None] * len(entries)


class RedisStreamSink(_RedisSink):
    """An event log: each entry appended once (a marker per entry id, set with NX)."""

    def __init__(self, *, stream: str, redis_url: str | SecretStr | None = None,
                 dedupe_for: timedelta | float = timedelta(days=7)) -> None:
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
            script(keys=[self.stream, f"{self.stream}:seen:{e.id}"],
                   args=[e.id, e.key, e.seq, json.dumps(e.value), ttl_ms], client=pipe)
        pipe.execute()
        return [None] * len(entries)
