"""The transactional outbox: agents' writes to other stores, all or nothing, exactly once each.

`ctx.outbox.put(sink, key, value)` buffers a write; it commits with the run's
success (or not at all), and `nightowl relay` delivers it to the sink
registered under that name. Register sinks in a trigger module:

    from scheduler.outbox import register_sink, RedisCacheSink
    register_sink("cache", RedisCacheSink(prefix="prefs:", ttl=3600))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.lazy import lazy_names

if TYPE_CHECKING:
    from scheduler.outbox.abc import Entry, Outcome, Sink, SinkError
    from scheduler.outbox.registry import register_sink, registered_sinks, sink_for
    from scheduler.outbox.sinks.http import WebhookSink
    from scheduler.outbox.sinks.redis import RedisCacheSink, RedisStreamSink
    from scheduler.outbox.sinks.sql import SqlAppendSink, SqlUpsertSink, VectorSink

_HOME = {
    "Entry": "scheduler.outbox.abc",
    "Outcome": "scheduler.outbox.abc",
    "Sink": "scheduler.outbox.abc",
    "SinkError": "scheduler.outbox.abc",
    "register_sink": "scheduler.outbox.registry",
    "registered_sinks": "scheduler.outbox.registry",
    "sink_for": "scheduler.outbox.registry",
    "WebhookSink": "scheduler.outbox.sinks.http",
    "RedisCacheSink": "scheduler.outbox.sinks.redis",
    "RedisStreamSink": "scheduler.outbox.sinks.redis",
    "SqlAppendSink": "scheduler.outbox.sinks.sql",
    "SqlUpsertSink": "scheduler.outbox.sinks.sql",
    "VectorSink": "scheduler.outbox.sinks.sql",
}


__getattr__ = lazy_names(__name__, _HOME, globals())


__all__ = [
    "Entry",
    "Outcome",
    "RedisCacheSink",
    "RedisStreamSink",
    "Sink",
    "SinkError",
    "SqlAppendSink",
    "SqlUpsertSink",
    "VectorSink",
    "WebhookSink",
    "register_sink",
    "registered_sinks",
    "sink_for",
]
