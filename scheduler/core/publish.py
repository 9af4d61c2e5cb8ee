"""Publishing `agent.<name>(run_id)` messages, many per Redis round trip.

On a Redis broker the scheduler writes kombu's wire format itself: Celery
builds the task headers (`amqp.as_task_v2`), we wrap them the way kombu's
Redis transport does and LPUSH a whole chunk through one pipeline. Going
through `send_task` per message costs ~0.3 ms of Python each (3k/s); this path
runs at pipeline speed. `tests/contract/test_publish.py` checks the result against a
message Celery published itself, so a kombu change cannot drift unnoticed.
Other brokers use `send_task` inside kombu's `Producer.batch()`.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis

from scheduler.core import keys
from scheduler.core.values import Dispatch, new_run_id
from scheduler.storage.runs import RunStore

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("nightowl.publish")

PUBLISHED_AT_HEADER = "nightowl_published_at"
# The run a message is for, readable without decoding the body: the lost-message check
# matches it in the broker's lists (scheduler/core/broker_view.py).
RUN_ID_HEADER = "nightowl_run_id"
BATCH_MAX = 1000
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def dispatch(
    store: RunStore,
    publisher: Publisher,
    dispatches: Sequence[Dispatch],
    now: datetime,
    *,
    redeliver_grace: timedelta = timedelta(0),
) -> list[Dispatch]:
    """The one path from the runs table to the broker: the tick, the sweeper, the lost-message
    check, the watchdog's requeue, `fire` and `retry` all call it.

    Claim first, publish second. The claim (`queued`, compared on the status and fence the
    caller saw) commits before any message exists, so no worker can have acted on the run
    yet and no worker's write is ever overwritten by bookkeeping. If the publish fails the
    claim is handed back (`pending`, for the sweeper); if even that fails, the run is
    `queued` with no message, which the lost-message check republishes within its bound.
    Returns the dispatches actually published.
    """
    claimed = store.claim_for_publish(dispatches, now, redeliver_grace)
    if not claimed:
        return []
    try:
        publisher.publish(claimed)
    except Exception:
        try:
            store.unclaim(claimed, now)
        except Exception as exc:  # the lost-message check covers these
            log.warning(
                "could not hand %d unpublished runs back (%s); the lost-message check republishes them",
                len(claimed),
                type(exc).__name__,
            )
        raise
    return claimed


def argsrepr(d: Dispatch) -> str:
    """What Flower shows for the task; the real argument stays `[run_id]`."""
    return f"[{d.run_id!r}] trigger={d.trigger} agent={d.agent} attempt={d.attempt + 1}"


class Publisher:
    """Sends dispatches in pipelined batches."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        broker = str(app.conf.broker_url or "")
        self._redis: redis.Redis | None = None
        self._prefix = ""
        if broker.startswith(_REDIS_SCHEMES):
            self._redis = redis.Redis.from_url(broker)
            options = app.conf.broker_transport_options or {}
            self._prefix = str(options.get("global_keyprefix", ""))

    def close(self) -> None:
        """Release broker connections."""
        if self._redis is not None:
            self._redis.close()
        self.app.close()

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish every dispatch or raise; a failure leaves runs `pending` for the sweeper."""
        if not dispatches:
            return
        if self._redis is None:
            self._publish_via_celery(dispatches)
            return
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for d in dispatches:
            pipe.lpush(keys.queue_list(self._prefix, d.queue), self.encode(d, now))
        pipe.execute()

    def encode(self, d: Dispatch, published_at: float) -> str:
        """One message exactly as kombu's Redis transport stores it."""
        task_id = new_run_id()  # any random UUID text: the run id's fast formatter
        msg = self.app.amqp.as_task_v2(
            task_id,
            f"agent.{d.agent}",
            args=(d.run_id,),
            kwargs={},
            argsrepr=argsrepr(d),
            kwargsrepr="{}",
            origin=self._origin,
            ignore_result=True,
        )
        headers: dict[str, Any] = {**msg.headers, PUBLISHED_AT_HEADER: published_at, RUN_ID_HEADER: d.run_id}
        body = json.dumps(msg.body).encode()
        return json.dumps(
            {
                "body": base64.b64encode(body).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": headers,
                "properties": {
                    "correlation_id": task_id,
                    "reply_to": self.app.thread_oid,
                    "delivery_mode": 2,
                    # The anonymous exchange: kombu routes (and restores) by queue name alone.
                    "delivery_info": {"exchange": "", "routing_key": d.queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": new_run_id(),
                },
            }
        )

    @property
    def broker_redis(self) -> tuple[redis.Redis, str] | None:
        """The broker's Redis client and kombu key prefix, or None for other brokers."""
        return None if self._redis is None else (self._redis, self._prefix)

    @functools.cached_property
    def _origin(self) -> str:
        """The publishing node's name, as Celery puts it in each message (computed once: it
        looked the host name up for every message of a 10,000-run tick)."""
        from celery.utils.nodenames import anon_nodename

        return str(anon_nodename())

    def _publish_via_celery(self, dispatches: Sequence[Dispatch]) -> None:
        now = time.time()
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=BATCH_MAX):
            for d in dispatches:
                self.app.send_task(
                    f"agent.{d.agent}",
                    args=[d.run_id],
                    queue=d.queue,
                    producer=producer,
                    argsrepr=argsrepr(d),
                    headers={PUBLISHED_AT_HEADER: now, RUN_ID_HEADER: d.run_id},
                )
