"""Publishing `agent.<name>(run_id)` messages, many per Redis round trip.

kombu 5.7's `Producer.batch()` buffers the LPUSHes of a whole chunk into one
pipeline, so 500 firings cost one round trip rather than 500 (the design
measured 3k/s one-by-one against 20-25k/s pipelined).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from celery import Celery

from scheduler.storage.store import Dispatch

PUBLISHED_AT_HEADER = "nightowl_published_at"
BATCH_MAX = 1000


def argsrepr(d: Dispatch) -> str:
    """What Flower shows for the task; the real argument stays `[run_id]`."""
    return f"[{d.run_id!r}] trigger={d.trigger} agent={d.agent} attempt={d.attempt + 1}"


class Publisher:
    """Sends dispatches through the Celery app's producer pool in pipelined batches."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def close(self) -> None:
        """Release the producer pool's broker connections."""
        self.app.close()

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish every dispatch or raise; a partial failure leaves runs `pending` for the sweeper."""
        if not dispatches:
            return
        now = time.time()
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=BATCH_MAX):
            for d in dispatches:
                self.app.send_task(
                    f"agent.{d.agent}",
                    args=[d.run_id],
                    queue=d.queue,
                    producer=producer,
                    argsrepr=argsrepr(d),
                    headers={PUBLISHED_AT_HEADER: now},
                )
