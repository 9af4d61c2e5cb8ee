"""`nightowl relay`: deliver committed outbox rows to their sinks, each exactly once in effect.

One step, numbered:
1. claim up to `batch` due rows in one transaction (PostgreSQL: selected FOR
   UPDATE SKIP LOCKED, then `claimed_by` and `claim_expires` set), only the oldest
   undelivered entry of each (sink, key), so a key's writes arrive in order;
2. commit the claim: no transaction is open while sinks are called; while any
   sink works on the claimed rows a keeper thread extends the claim every
   `claim_ttl / 3`, so a slow sink never lets another relay take a row over
   (and deliver it twice, or deliver the key's next entry before it);
3. deliver each sink's entries in one call, sinks in parallel (a slow sink
   does not delay the others' deliveries); a sink that sends entry by entry
   (`one_at_a_time`, the webhook) gets them one per call, and no entry is handed
   to a sink unless this relay still holds its claim, confirmed recently;
4. as soon as a sink's call returns, mark its delivered rows, and schedule its
   failed ones again with exponential backoff and jitter; after `max_attempts`
   claims a row is `dead` (the watchdog alerts `outbox_dead`; `nightowl outbox
   retry --dead` requeues it).

A relay killed between 1 and 4 leaves claims that expire after `claim_ttl`;
the next relay delivers those rows again, and the sinks' idempotency (seq per
key, or the entry id) makes the second delivery a no-op. Each claim counts as
an attempt, so an entry whose delivery kills the relay goes dead too.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler.core import metrics
from scheduler.core.clock import Clock
from scheduler.core.leases import identity
from scheduler.core.scrub import scrub_text
from scheduler.outbox.abc import Entry, Outcome, Sink
from scheduler.outbox.registry import registered_sinks, sink_for
from scheduler.storage.outbox_store import STATUS_COUNTS, OutboxStore
from triggers.urls import SourceDefaults

log = logging.getLogger("nightowl.relay")


@dataclass
class StepReport:
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: list[str] = field(default_factory=list)
    pruned: int = 0
    lost: int = 0  # claims another relay took over before this one delivered them


class _Claim:
    """The rows one step holds, kept claimed while sinks work on them.

    `holds(id)` is true only while the row is still ours with at least a third of the TTL
    left, confirmed by the database; a row another relay took over (its `claimed_by` is not
    ours any more) is never handed to a sink by this relay again.
    """

    def __init__(
        self,
        store: OutboxStore,
        entries: Sequence[Entry],
        *,
        relay_id: str,
        clock: Clock,
        ttl: timedelta,
        expires: datetime,
        every: float,
    ) -> None:
        self.store = store
        self.relay_id = relay_id
        self.clock = clock
        self.ttl = ttl
        self.every = every
        self._held = {e.id for e in entries}
        self.lost: set[str] = set()
        self._expires = expires
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="nightowl-relay-claim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _keep(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def refresh(self) -> None:
        with self._refreshing:
            with self._lock:
                ids = list(self._held)
            if not ids:
                return
            expires = self.clock.now() + self.ttl
            try:
                still = self.store.extend(self.relay_id, ids, expires)
            except Exception as exc:  # the next refresh retries; `holds` turns false meanwhile
                log.warning(
                    "could not extend the relay's claim on %d outbox rows: %s",
                    len(ids),
                    scrub_text(f"{type(exc).__name__}: {exc}"),
                )
                return
            with self._lock:
                gone = (set(ids) - still) & self._held
                self._held -= gone
                self.lost |= gone
                self._expires = expires
            for entry_id in sorted(gone):
                log.warning(
                    "outbox entry %s was taken over by another relay; this relay does not deliver it",
                    entry_id,
                )

    def _fresh(self, entry_id: str) -> bool | None:
        with self._lock:
            if entry_id not in self._held:
                return False
            if self.clock.now() < self._expires - self.ttl / 3:
                return True
            return None

    def holds(self, entry_id: str) -> bool:
        fresh = self._fresh(entry_id)
        if fresh is None:  # the keeper fell behind: confirm with the database first
            self.refresh()
            fresh = self._fresh(entry_id)
        return bool(fresh)

    def release(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._held.difference_update(ids)


class Relay:
    def __init__(
        self,
        store: OutboxStore,
        clock: Clock,
        *,
        relay_id: str | None = None,
        batch: int = 200,
        claim_ttl: timedelta = timedelta(seconds=30),
        max_attempts: int = 8,
        retention: timedelta = timedelta(days=7),
        defaults: SourceDefaults | None = None,
        claim_refresh: float | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.relay_id = relay_id or identity("relay")
        self.batch = batch
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.retention = retention
        # Seconds between claim extensions while sinks work (real time: it paces a thread).
        self.claim_refresh = claim_refresh or claim_ttl.total_seconds() / 3
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="nightowl-sink")
        self._steps = 0
        self._report_lock = threading.Lock()
        for name in registered_sinks():
            bind = getattr(sink_for(name), "bind", None)
            if bind is not None:
                bind(defaults or SourceDefaults())

    def step(self) -> StepReport:
        report = StepReport()
        now = self.clock.now()
        claimed = self.store.claim(self.relay_id, now, self.claim_ttl, self.batch, self.max_attempts)
        entries = claimed.entries
        report.claimed = len(entries) + len(claimed.dead)  # rows settled dead count: step again
        report.dead += claimed.dead
        for entry_id in claimed.dead:
            log.error(
                "outbox entry %s is dead: it cannot be delivered (see `nightowl outbox "
                "status` and its last_error)",
                entry_id,
            )
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
        claim = _Claim(
            self.store,
            entries,
            relay_id=self.relay_id,
            clock=self.clock,
            ttl=self.claim_ttl,
            expires=now + self.claim_ttl,
            every=self.claim_refresh,
        )
        claim.start()
        try:
            futures = [
                self._pool.submit(self._work, name, group, claim, report) for name, group in by_sink.items()
            ]
            errors = [f.exception() for f in futures]
        finally:
            claim.stop()
        report.lost = len(claim.lost)
        for exc in errors:
            if exc is not None:
                raise exc
        return report

    def _work(self, name: str, group: list[Entry], claim: _Claim, report: StepReport) -> None:
        """Deliver one sink's entries and settle each as soon as the sink has answered."""
        sink = sink_for(name)
        if sink is None:
            known = ", ".join(sorted(registered_sinks())) or "none"
            self._settle(
                group,
                [f"no sink named {name!r} is registered in this relay's trigger modules (known: {known})"]
                * len(group),
                claim,
                report,
            )
            return
        if getattr(sink, "one_at_a_time", False):
            for e in group:
                if claim.holds(e.id):
                    self._settle([e], self._call(name, sink, [e]), claim, report)
            return
        live = [e for e in group if claim.holds(e.id)]
        if live:
            self._settle(live, self._call(name, sink, live), claim, report)

    def _call(self, name: str, sink: Sink, group: list[Entry]) -> list[Outcome]:
        try:
            outcomes = sink.deliver(group)
        except Exception as exc:
            return [f"{type(exc).__name__}: {exc}"] * len(group)
        if len(outcomes) != len(group):
            return [f"sink {name!r} returned {len(outcomes)} outcomes for {len(group)} entries"] * len(group)
        return outcomes

    def _settle(self, group: list[Entry], outcomes: list[Outcome], claim: _Claim, report: StepReport) -> None:
        ok = [e.id for e, outcome in zip(group, outcomes, strict=True) if outcome is None]
        failures = [(e, outcome) for e, outcome in zip(group, outcomes, strict=True) if outcome is not None]
        done = self.clock.now()
        delivered = self.store.delivered(self.relay_id, ok, done)
        dead = self.store.failed(self.relay_id, failures, done, self.max_attempts) if failures else []
        claim.release([e.id for e in group])
        for e in group:
            if e.id in ok:
                metrics.OUTBOX_DELIVERED.labels(e.sink).inc()
        for entry, error in failures:
            metrics.OUTBOX_FAILED.labels(entry.sink).inc()
            log.warning(
                "outbox entry %s to %s failed (attempt %d): %s",
                entry.id,
                entry.sink,
                entry.attempts,
                scrub_text(error),
            )
        with self._report_lock:
            report.delivered += delivered
            report.failed += len(failures)
            report.dead += dead

    def _gauges(self, now: datetime) -> None:
        status = self.store.status(now)
        lag = 0.0
        for sink, counts in status.items():
            for state in STATUS_COUNTS:
                metrics.OUTBOX_ROWS.labels(sink, state).set(counts[state])
            lag = max(lag, counts["oldest_pending_age_s"] or 0.0)
        metrics.OUTBOX_LAG.set(lag)

    def drain(self, max_steps: int = 10_000) -> StepReport:
        """Step until nothing is claimable (tests, benchmarks)."""
        total = StepReport()
        for _ in range(max_steps):
            r = self.step()
            total.claimed += r.claimed
            total.delivered += r.delivered
            total.failed += r.failed
            total.dead += r.dead
            total.lost += r.lost
            if r.claimed == 0:
                break
        return total

    def close(self) -> None:
        """Stop the sink threads and close the sinks' connections (a sink with `close()`
        reopens lazily if it is used again)."""
        self._pool.shutdown(wait=True)
        for name in registered_sinks():
            close = getattr(sink_for(name), "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:
                    log.warning(
                        "closing sink %s failed: %s", name, scrub_text(f"{type(exc).__name__}: {exc}")
                    )
