"""The transactional outbox: agents' writes to other stores, all or nothing, exactly once each.

`ctx.outbox.put(sink, key, value)` buffers a write; it commits with the run's
success (or not at all), and `nightowl relay` delivers it to the sink
registered under that name. Register sinks in a trigger module:

    from scheduler.outbox import register_sink, RedisCacheSink
    register_sink("cache", RedisCacheSink(prefix="prefs:", ttl=3600))
"""

from __future__ import annotations

from scheduler.outbox.abc import Entry, Outcome, Sink, SinkError
from scheduler.outbox.registry import register_sink, registered_sinks, sink_for
from scheduler.outbox.sinks.http import WebhookSink
from scheduler.outbox.sinks.redis import RedisCacheSink, RedisStreamSink
from scheduler.outbox.sinks.sql import SqlAppendSink, SqlUpsertSink, VectorSink

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
