"""What the broker holds for our runs: the lost-message check and `status` read it here.

A `queued` run should have a message somewhere: in its queue's lists (waiting for a
worker), or in kombu's `unacked` hash (a worker took it and is starting it). Three
ordinary faults leave it with neither or with one nobody will act on: a delivery
acknowledged after the database failed before its attempt started, a worker SIGKILLed
after it received messages (they sit in `unacked` until the visibility timeout, hours),
and a Redis that restarted without its data. The sweeper asks this module which of its
old `queued` runs have no live message and republishes exactly those, so a long
legitimate backlog is never republished wholesale.

Reading is cheap: a Lua script pulls only the run id out of each message (the
`nightowl_run_id` header, or the `argsrepr` of messages from older versions), page by
page, so a 100,000-message backlog costs ids, not bodies, on the wire.
Only Redis brokers can be inspected; with others the sweeper falls back to republishing
runs queued longer than the visibility timeout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from scheduler.core import keys

PAGE = 500  # messages per Lua call: Redis is blocked a few milliseconds at a time

_RUN_ID = re.compile(r'"nightowl_run_id": "([0-9A-Za-z-]+)"|"argsrepr": "\[\'([0-9A-Za-z-]+)\'\]')
_SCAN = """
local out = {}
local items = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
for i, msg in ipairs(items) do
  local id = string.match(msg, '"nightowl_run_id": "([%w%-]+)"')
  if not id then id = string.match(msg, '"argsrepr": "%[\\'([%w%-]+)\\'%]') end
  out[i] = id or ''
end
return out
"""


def run_id_of(raw: str) -> str | None:
    """The run a stored message is for (header or argsrepr), without decoding its body."""
    match = _RUN_ID.search(raw)
    if match is None:
        return None
    return match.group(1) or match.group(2)


@dataclass
class Snapshot:
    """Run ids with a message: ready in a queue, or delivered (with the delivery time)."""

    ready: set[str] = field(default_factory=set)
    delivered: dict[str, float] = field(default_factory=dict)
    ready_count: dict[str, int] = field(default_factory=dict)

    def has_live_message(self, run_id: str, delivered_after: float) -> bool:
        """True if the run's message waits in a queue, or a worker took it after
        `delivered_after` (before that, with the run still `queued`, the worker holding it
        died or hangs: Redis would only give the message back after the visibility timeout)."""
        if run_id in self.ready:
            return True
        at = self.delivered.get(run_id)
        return at is not None and at >= delivered_after


class BrokerView:
    """Reads kombu's Redis structures for the queues nightowl publishes to."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._scan = client.register_script(_SCAN)

    def snapshot(self, queues: Iterable[str]) -> Snapshot:
        """The unacked set first, then the lists: a message moving from a list to a worker
        between the two reads is seen twice rather than not at all, except in kombu's own
        pop-then-record step, which the caller's age threshold absorbs."""
        snap = Snapshot()
        snap.delivered = self._delivered()
        for queue in sorted(set(queues)):
            count = 0
            for key in keys.queue_lists(self.prefix, queue):
                start = 0
                while True:
                    ids = cast(list[Any], self._scan(keys=[key], args=[start, start + PAGE - 1]))
                    for raw in ids:
                        text = raw.decode() if isinstance(raw, bytes) else str(raw)
                        if text:
                            snap.ready.add(text)
                    count += len(ids)
                    if len(ids) < PAGE:
                        break
                    start += PAGE
            snap.ready_count[queue] = count
        return snap

    def _delivered(self) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.unacked(self.prefix))
        pipe.zrange(keys.unacked_index(self.prefix), 0, -1, withscores=True)
        entries, index = cast(tuple[dict[bytes, bytes], list[tuple[bytes, float]]], tuple(pipe.execute()))
        times = {tag: score for tag, score in index}
        out: dict[str, float] = {}
        for tag, raw in entries.items():
            run_id = run_id_of(raw.decode(errors="replace"))
            if run_id is not None:
                out[run_id] = max(out.get(run_id, 0.0), times.get(tag, 0.0))
        return out

    def depths(self, queues: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per queue: messages ready, and messages delivered but not acknowledged."""
        pipe = self.client.pipeline(transaction=False)
        names = sorted(set(queues))
        for queue in names:
            for key in keys.queue_lists(self.prefix, queue):
                pipe.llen(key)
        lengths = cast(list[int], pipe.execute())
        unacked: dict[str, int] = {}
        for raw in cast(dict[bytes, bytes], self.client.hgetall(keys.unacked(self.prefix))).values():
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError, TypeError):
                continue
            unacked[str(routing_key)] = unacked.get(str(routing_key), 0) + 1
        steps = len(keys.PRIORITY_STEPS)
        return {
            q: {"ready": sum(lengths[i * steps : (i + 1) * steps]), "unacked": unacked.get(q, 0)}
            for i, q in enumerate(names)
        }
