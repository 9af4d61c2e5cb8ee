"""`nightowl relay`: deliver committed outbox rows to their sinks, each exactly once in effect.

One step, numbered:
1. claim up to `batch` due rows in one statement (PostgreSQL: FOR UPDATE SKIP
   LOCKED, setting `claimed_by` and `claim_expires`), only the oldest
   undelivered entry of each (sink, key), so a key's writes arrive in order;
2. commit the claim: no transaction is open while sinks are called;
3. deliver each sink's entries in one call, sinks in parallel (a slow sink
   does not delay the others' deliveries);
4. mark delivered rows, and schedule failed ones again with exponential
   backoff and jitter; after `max_attempts` a row is `dead` (the watchdog
   alerts `outbox_dead`; `nightowl outbox retry --dead` requeues it).

A relay killed between 1 and 4 leaves claims that expire after `claim_ttl`;
the next relay delivers those rows again, and the sinks' idempotency (seq per
key, or the entry id) makes the second delivery a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler import metrics
from scheduler.clock import Clock
from scheduler.leases import identity
from scheduler.outbox._base import Outcome, registered_sinks, sink_for
from scheduler.storage.outbox_store import Entry, OutboxStore
from triggers._polling import SourceDefaults

log = logging.getLogger("nightowl.relay")


@dataclass
class StepReport:
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: list[str] = field(default_factory=list)
    pruned: int = 0


class Relay:
    def __init__(self, store: OutboxStore, clock: Clock, *, relay_id: str | None = None,
                 batch: int = 200, claim_ttl: timedelta = timedelta(seconds=30),
                 max_attempts: int = 8, retention: timedelta = timedelta(days=7),
                 defaults: SourceDefaults | None = None) -> None:
        self.store = store
        self.clock = clock
        self.relay_id = relay_id or identity("relay")
        self.batch = batch
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.retention = retention
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="nightowl-sink")
        self._steps = 0
        for name in registered_sinks():
            bind = getattr(sink_for(name), "bind", None)
            if bind is not None:
                bind(defaults or SourceDefaults())

    def step(self) -> StepReport:
        report = StepReport()
        now = self.clock.now()
        entries = self.store.claim(self.relay_id, now, self.claim_ttl, self.batch)
        report.claimed = len(entries)
        self._steps += 1
        if self._steps % 100 == 0:
            report.pruned = self.store.prune(now - self.retention)
        if self._steps % 10 == 1:
            self._gauges(now)
        if not entries:
            return report
        by_sink: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            by_sink[e.sink].append(e)
        futures = {name: self._pool.submit(self._deliver, name, group)
                   for name, group in by_sink.items()}
        ok: list[str] = []
        failures: list[tuple[Entry, str]] = []
        for name, future in futures.items():
            for entry, outcome in zip(by_sink[name], future.result(), strict=True):
                if outcome is None:
                    ok.append(entry.id)
                else:
                    failures.append((entry, outcome))
        done = self.clock.now()
        report.delivered = self.store.delivered(self.relay_id, ok, done)
        sinks = {e.id: e.sink for e in entries}
        for entry_id in ok:
            metrics.OUTBOX_DELIVERED.labels(sinks[entry_id]).inc()
        for entry, _ in failures:
            metrics.OUTBOX_FAILED.labels(entry.sink).inc()
        report.dead = self.store.failed(self.relay_id, failures, done, self.max_attempts)
        report.failed = len(failures)
        for entry, error in failures:
            log.warning("outbox entry %s to %s failed (attempt %d): %s", entry.id, entry.sink,
                        entry.attempts, error)
        return report

    def _gauges(self, now: datetime) -> None:
        status = self.store.status(now)
        lag = 0.0
        for sink, counts in status.items():
            for state in ("pending", "claimed", "delivered", "dead"):
                metrics.OUTBOX_ROWS.labels(sink, state).set(counts[state])
            lag = max(lag, counts["oldest_pending_age_s"] or 0.0)
        metrics.OUTBOX_LAG.set(lag)

    def _deliver(self, name: str, group: list[Entry]) -> list[Outcome]:
        sink = sink_for(name)
        if sink is None:
            known = ", ".join(sorted(registered_sinks())) or "none"
            return [f"no sink named {name!r} is registered in this relay's trigger modules "
                    f"(known: {known})"] * len(group)
        try:
            outcomes = sink.deliver(group)
        except Exception as exc:
            return [f"{type(exc).__name__}: {exc}"] * len(group)
        if len(outcomes) != len(group):
            return [f"sink {name!r} returned {len(outcomes)} outcomes for {len(group)} entries"] \
                * len(group)
        return outcomes

    def drain(self, max_steps: int = 10_000) -> StepReport:
        """Step until nothing is claimable (tests, benchmarks)."""
        total = StepReport()
        for _ in range(max_steps):
            r = self.step()
            total.claimed += r.claimed
            total.delivered += r.delivered
            total.failed += r.failed
            total.dead += r.dead
            if r.claimed == 0:
                break
        return total

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RelayLoop:
    """Steps the relay until `stop()`; idles `poll` seconds when there is nothing to do."""

    def __init__(self, relay: Relay, poll: float = 0.5) -> None:
        self.relay = relay
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nightowl-relay", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.relay.step()
            except Exception:
                log.exception("relay step failed; retrying")
                report = None
            else:
                metrics.LOOP_LAST_SUCCESS.labels("relay step").set_to_current_time()
            if report is None or report.claimed == 0:
                self._stop.wait(self.poll)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.relay.close()

