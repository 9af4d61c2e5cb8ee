"""The sweeper: the scheduler's second step, beside the tick, under the same leadership.

Sweep, numbered:
1. watch the watchdog's leader lease (`watchdog_down`);
2. every PRUNE_EVERY sweeps, prune history past the retention;
3. republish `pending` runs past the grace, due `waiting` runs and `running` runs whose
   lease expired (and, with no inspectable broker, `queued` runs past requeue_after);
4. outside the lock: on a Redis broker, republish `queued` runs whose message is gone
   from the broker for `requeue_lost_after` (scheduler/core/broker_view.py).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from scheduler.alerts import AlertManager, LeaderWatch
from scheduler.core import metrics
from scheduler.core.broker_view import BrokerView
from scheduler.core.clock import Clock
from scheduler.core.leases import Leadership
from scheduler.core.publish import Publisher, dispatch
from scheduler.core.vocabulary import Reason
from scheduler.storage.retention import prune
from scheduler.storage.store import Store
from triggers import Registry

log = logging.getLogger("nightowl.scheduler")

PRUNE_EVERY = 30  # sweeps between retention batches (about a minute at the default interval)
LOST_BATCH = 1000  # queued runs the lost-message check looks at per pass
# Reading a long backlog takes a while: it is read at most 1/SCAN_DUTY of the time.
SCAN_DUTY = 20


class Sweeper:
    """The sweep step of the leading scheduler (it shares the tick's lock and leadership)."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        publisher: Publisher,
        clock: Clock,
        leadership: Leadership,
        lock: threading.Lock,
        pending_grace: timedelta,
        requeue_after: timedelta,
        requeue_lost_after: timedelta,
        alerts: AlertManager | None,
        watchdog_watch: LeaderWatch,
        retention: timedelta | None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.leadership = leadership
        self._lock = lock
        self.pending_grace = pending_grace
        # A run `queued` this long without starting lost its message: publish it again (the
        # fallback for brokers that cannot be inspected; Redis gets the lost-message check).
        self.requeue_after = requeue_after
        self.requeue_lost_after = requeue_lost_after
        self.alerts = alerts
        self.watchdog_watch = watchdog_watch
        self.retention = retention
        broker = publisher.broker_redis
        self.broker = None if broker is None else BrokerView(*broker)
        self._next_lost_check: datetime | None = None
        self._sweeps = 0

    def sweep(self, limit: int) -> int:
        """Republish runs left `pending` past the grace period and `waiting` runs now due."""
        with self._lock:
            if not self.leadership.leading:
                return 0
            now = self.clock.now()
            if self.alerts is not None:
                self.watchdog_watch.check(now, self.alerts)
            self._sweeps += 1
            if self.retention is not None and self._sweeps % PRUNE_EVERY == 0:
                pruned = prune(self.store.engine, now - self.retention)
                if pruned.total:
                    log.info("retention: pruned %s", pruned)
            due = self.store.due_for_publish(
                now, now - self.pending_grace, limit, queued_before=now - self.requeue_after
            )
            orphans = [d for d in due if d.agent not in self.registry.agents]
            for d in orphans:  # its agent was removed or renamed since the run was created
                self.store.fail_without_attempt(
                    d.run_id,
                    Reason.UNKNOWN_AGENT,
                    f"agent {d.agent!r} is not in the loaded trigger modules",
                    now,
                )
            due = [d for d in due if d.agent in self.registry.agents]
            sent = (
                dispatch(self.store, self.publisher, due, now, redeliver_grace=self.pending_grace)
                if due
                else []
            )
            if sent:
                log.info("sweeper republished %d runs", len(sent))
        # Outside the lock: reading a long queue must not hold up a tick. The claim's compare
        # on status and fence keeps it safe against the tick and the workers.
        return len(sent) + self._requeue_lost(now)

    def _requeue_lost(self, now: datetime) -> int:
        """Republish `queued` runs whose message is gone, looking twice per bound.

        A candidate is `queued` since before `requeue_lost_after` ago; it is lost when its
        message is in no queue list and not with a worker that took it within that time.
        So a run waits at most about 1.5 x requeue_lost_after past the loss, and a backlog
        whose messages are all there is left alone however old it is.
        """
        if (
            self.broker is None
            or not self.leadership.leading
            or (self._next_lost_check and now < self._next_lost_check)
        ):
            return 0
        self._next_lost_check = now + self.requeue_lost_after / 2
        candidates = self.store.queued_candidates(now - self.requeue_lost_after, now, LOST_BATCH)
        if not candidates:
            return 0
        started = time.monotonic()
        snapshot = self.broker.snapshot({c.dispatch.queue for c in candidates})
        # A backlog so long that reading it takes a while is read less often (<= 5% duty).
        self._next_lost_check = max(
            self._next_lost_check, now + timedelta(seconds=SCAN_DUTY * (time.monotonic() - started))
        )
        after = (now - self.requeue_lost_after).timestamp()
        lost = [
            c.dispatch
            for c in candidates
            if c.dispatch.agent in self.registry.agents
            and not snapshot.has_live_message(c.dispatch.run_id, after)
        ]
        if not lost:
            return 0
        sent = dispatch(self.store, self.publisher, lost, now)
        if sent:
            metrics.LOST_REPUBLISHED.inc(len(sent))
            log.warning(
                "republished %d queued runs whose message was gone from the broker (oldest queued %s)",
                len(sent),
                min(c.queued_at for c in candidates).isoformat(),
            )
        return len(sent)
