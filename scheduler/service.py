"""The scheduler service: one leader evaluates due triggers and dispatches runs.

`tick()` and `sweep()` are the step methods tests call directly; APScheduler
only wakes them (the loop computes with `clock.now()`, never with the time
APScheduler thinks it is).

Tick, numbered:
1. hold (or take) the leader lease; a standby does nothing;
2. pop triggers whose next evaluation is due (a heap: cost follows what is due);
3. evaluate each: firings, new state, next evaluation;
4. in transactions of <= 500 firings: insert runs (duplicates ignored by the
   UNIQUE idempotency key) and compare-and-set each trigger's state;
5. after each commit, publish that chunk in one pipelined batch, then mark it queued.
A crash between 4 and 5 leaves runs `pending`; `sweep()` publishes them.

Polling triggers (db_change, queue_depth, metric: `source.polls`) do I/O, so
step 3 runs them on a small thread pool: a slow or dead watched database
must not delay a cron slot. A tick waits up to `poll_wait` for the polls it
started and commits whatever has finished; the rest commit on a later tick.
A trigger is never polled twice at once (it is off the heap while in flight).
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis

from agents import event_to_json
from scheduler import metrics
from scheduler.alerts import AlertManager, leader_watch
from scheduler.cancel import request_cancel
from scheduler.clock import Clock
from scheduler.errors import StateConflictError
from scheduler.leases import Leadership, Lease, identity
from scheduler.publish import Publisher
from scheduler.storage.retention import prune
from scheduler.storage.store import Dispatch, MissedRow, NewRun, StateWrite, Store
from triggers import Evaluation, Registry, SourceDefaults, TriggerSpec

log = logging.getLogger("nightowl.scheduler")

CHUNK_SIZE = 500
# The first chunk of a tick is small, so the first agents are on the queue within tens of
# milliseconds of their slot even when 10,000 triggers are due together; the rest go in
# full chunks (fewer, larger transactions).
FIRST_CHUNK_SIZE = 50
PRUNE_EVERY = 30  # sweeps between retention batches (about a minute at the default interval)
ERROR_BACKOFF = timedelta(seconds=5)


@dataclass
class TickReport:
    """What one tick did, for logs and tests."""

    leader: bool = False
    evaluated: int = 0
    inserted: int = 0
    duplicates: int = 0
    published: int = 0
    conflicts: int = 0
    errors: int = 0
    fired: list[tuple[str, str]] = field(default_factory=list)  # (trigger, run_id)


@dataclass
class _Pending:
    """One trigger's evaluation, waiting to be committed."""

    spec: TriggerSpec
    evaluation: Evaluation
    runs: list[NewRun]
    write: StateWrite | None
    final: bool = True  # False for the leading pieces of a trigger split across chunks


class SchedulerService:
    """Evaluates triggers and dispatches runs; safe to run as N replicas."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        publisher: Publisher,
        redis_client: redis.Redis,
        clock: Clock,
        key_prefix: str = "nightowl:",
        leader_ttl: float = 10.0,
        pending_grace: float = 5.0,
        requeue_after: float = 7200.0,
        owner: str | None = None,
        poll_workers: int = 8,
        poll_wait: float = 30.0,
        source_defaults: SourceDefaults | None = None,
        alerts: AlertManager | None = None,
        retention: timedelta | None = None,
    ) -> None:
        self.registry = registry
        registry.bind_sources(source_defaults or SourceDefaults())
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.pending_grace = timedelta(seconds=pending_grace)
        # A run `queued` this long without starting lost its message: publish it again.
        self.requeue_after = timedelta(seconds=requeue_after)
        self.redis = redis_client
        self.prefix = key_prefix
        self.alerts = alerts  # the scheduler watches the watchdog (and the watchdog, it)
        self.retention = retention  # the leader prunes old history every PRUNE_EVERY sweeps
        self._sweeps = 0
        self._observed: dict[str, str] = {}  # trigger -> state label last exported
        self.leader_grace = timedelta(seconds=2 * leader_ttl)
        self._watchdog_missing_since: datetime | None = None
        self.lease = Lease(redis_client, f"{key_prefix}leader:scheduler",
                           owner or identity("scheduler"), leader_ttl)
        self.leadership = Leadership(self.lease, "scheduler", self._become_leader)
        self._lock = threading.Lock()
        self._heap: list[tuple[datetime, str]] = []
        self._states: dict[str, tuple[dict[str, Any], int]] = {}
        self.poll_wait = poll_wait
        self._pool = ThreadPoolExecutor(max_workers=poll_workers, thread_name_prefix="nightowl-poll")
        # Polls started and not yet committed, with the (state, revision) each started from:
        # the write must compare-and-set against *that* revision, so a result computed
        # before a leadership change can never overwrite what the other leader wrote.
        self._inflight: dict[str, tuple[Future[Evaluation], tuple[dict[str, Any] | None, int]]] = {}

    # -- leadership ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leadership.leading

    def hold_leadership(self) -> bool:
        """Take or renew the leader lease; on gaining it, reload state from the database."""
        return self.leadership.hold()

    def _become_leader(self) -> None:
        self._states = self.store.load_trigger_states()
        now = self.clock.now()
        self._heap = [(now, name) for name in sorted(self.registry.triggers)]
        heapq.heapify(self._heap)
        log.info("scheduler leader: %d triggers", len(self._heap))

    def resign(self) -> None:
        """Give the lease up now (clean shutdown), so a standby takes over at once."""
        with self._lock:
            self.leadership.resign()

    def close(self) -> None:
        """Resign and release every connection this service opened."""
        self.resign()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.alerts is not None:
            self.alerts.flush(timeout=5)
            self.alerts.close()
        self.publisher.close()
        self.store.engine.dispose()
        self.redis.close()

    # -- the tick -------------------------------------------------------------

    def tick(self) -> TickReport:
        """Evaluate everything due now and dispatch the firings."""
        with self._lock:
            report = TickReport()
            if not self.hold_leadership():
                return report
            report.leader = True
            now = self.clock.now()
            due = list(self._pop_due(now))
            started = [self._start_poll(name, now) for name in due if _polls(self.registry, name)]
            # Streamed: the first chunk commits and publishes after <= 500 evaluations,
            # not after all of them.
            evaluated = (self._evaluate(name, now, report) for name in due
                         if not _polls(self.registry, name))
            for chunk in _chunks(p for p in evaluated if p is not None):
                self._commit_chunk(chunk, now, report)
            if started:
                wait(started, timeout=self.poll_wait)
            polled = (self._finish_poll(name, now, report) for name in list(self._inflight)
                      if self._inflight[name][0].done())
            for chunk in _chunks(p for p in polled if p is not None):
                self._commit_chunk(chunk, now, report)
            return report

    def _pop_due(self, now: datetime) -> Iterator[str]:
        while self._heap and self._heap[0][0] <= now:
            _, name = heapq.heappop(self._heap)
            if name in self.registry.triggers and name not in self._inflight:
                yield name

    def _start_poll(self, name: str, now: datetime) -> Future[Evaluation]:
        spec = self.registry.triggers[name]
        prior = self._states.get(name, (None, 0))
        future = self._pool.submit(spec.source.evaluate, name, now, prior[0])
        self._inflight[name] = (future, prior)
        return future

    def _finish_poll(self, name: str, now: datetime, report: TickReport) -> _Pending | None:
        future, prior = self._inflight.pop(name)
        if name not in self.registry.triggers:
            return None
        return self._evaluate(name, now, report, future.result, prior)

    def _evaluate(self, name: str, now: datetime, report: TickReport,
                  compute: Callable[[], Evaluation] | None = None,
                  prior: tuple[dict[str, Any] | None, int] | None = None) -> _Pending | None:
        spec = self.registry.triggers[name]
        state, revision = prior if prior is not None else self._states.get(name, (None, 0))
        try:
            ev = compute() if compute else spec.source.evaluate(name, now, state)
        except Exception:
            report.errors += 1
            log.exception("trigger %s failed to evaluate; retrying in %s", name, ERROR_BACKOFF)
            heapq.heappush(self._heap, (now + ERROR_BACKOFF, name))
            return None
        report.evaluated += 1
        self._observe(spec, ev.state)
        agent = self.registry.agent_for(spec)
        runs = []
        for i, f in enumerate(ev.firings):
            overlap, key = overlap_for(spec.overlap, name, f.overlap_key, catchup=i > 0)
            runs.append(NewRun(
                idempotency_key=f.idempotency_key, trigger=name, agent=agent.name,
                queue=agent.queue, event=event_to_json(f.event), logical_time=f.logical_time,
                agent_version=agent.version, overlap=overlap, overlap_key=key))
        write = None
        # Polling triggers write every poll: `next_evaluation` then doubles as "last polled"
        # for listings and the watchdog. Cron writes only when its state moved.
        if revision == 0 or ev.state != state or ev.missed or _polls(self.registry, name):
            write = StateWrite(name, spec.kind, ev.state, revision, ev.next_at,
                               source_failing=bool(ev.state.get("source_failing")))
        return _Pending(spec, ev, runs, write)

    def _observe(self, spec: TriggerSpec, state: dict[str, Any]) -> None:
        """Trigger state for /metrics, touched only when it changes: 10,000 cron triggers
        due at once must not cost 40,000 gauge updates on the dispatch path."""
        current = "source_failing" if state.get("source_failing") else state.get("alert_state", "ok")
        if self._observed.get(spec.name) != current:
            for label in ("ok", "pending", "firing", "source_failing"):
                metrics.TRIGGER_STATE.labels(spec.name, label).set(1 if label == current else 0)
            self._observed[spec.name] = current
        if spec.kind == "queue_depth":
            _observe_reading(spec, state)

    def _commit_chunk(self, chunk: list[_Pending], now: datetime, report: TickReport) -> None:
        runs = [r for p in chunk for r in p.runs]
        writes = [p.write for p in chunk if p.write is not None]
        missed = [MissedRow(p.spec.name, g.first, g.last, g.count, g.reason)
                  for p in chunk for g in p.evaluation.missed]
        try:
            inserted = self.store.commit_tick(runs, writes, missed, now)
        except StateConflictError as exc:
            # Another leader wrote first (we were paused): reload and look again next tick.
            report.conflicts += 1
            log.warning("trigger state conflict, reloading: %s", exc)
            fresh = self.store.load_trigger_states()
            for p in chunk:
                if p.spec.name in fresh:
                    self._states[p.spec.name] = fresh[p.spec.name]
                if p.final:
                    heapq.heappush(self._heap, (now, p.spec.name))
            return
        for p in chunk:
            if p.write is not None:
                self._states[p.spec.name] = (p.evaluation.state, p.write.expected_revision + 1)
            if p.final:
                heapq.heappush(self._heap, (p.evaluation.next_at, p.spec.name))
        self._cancel_others([r for r in inserted if r.overlap == "cancel_other"
                             and r.status == "pending"])
        report.inserted += len(inserted)
        report.duplicates += len(runs) - len(inserted)
        kinds = {p.spec.name: p.spec.kind for p in chunk}
        inserted_ids = {r.id for r in inserted}
        for r in runs:
            if r.id in inserted_ids:
                metrics.FIRINGS.labels(r.trigger or "", kinds.get(r.trigger or "", "manual")).inc()
            else:
                metrics.DUPLICATE_FIRINGS.labels(r.trigger or "").inc()
        report.fired.extend((r.trigger or "", r.id) for r in inserted)
        self._publish([Dispatch(r.id, r.agent, r.queue, r.trigger, 0)
                       for r in inserted if r.status == "pending"], now, report)

    def _cancel_others(self, runs: list[NewRun]) -> None:
        keys = {r.overlap_key for r in runs if r.overlap_key}
        new_ids = {r.id for r in runs}
        for run_id in self.store.running_with_keys(k for k in keys if k):
            if run_id not in new_ids:
                request_cancel(self.redis, self.prefix, run_id, "cancel_other")

    def _publish(self, dispatches: list[Dispatch], now: datetime, report: TickReport) -> None:
        if not dispatches:
            return
        try:
            self.publisher.publish(dispatches)
        except Exception:
            log.exception("publishing %d runs failed; the sweeper will retry", len(dispatches))
            return
        self.store.mark_queued([d.run_id for d in dispatches], now)
        report.published += len(dispatches)

    # -- the sweeper ------------------------------------------------------------

    def sweep(self, limit: int = CHUNK_SIZE) -> int:
        """Republish runs left `pending` past the grace period and `waiting` runs now due."""
        with self._lock:
            if not self.leadership.leading:
                return 0
            now = self.clock.now()
            if self.alerts is not None:
                leader_watch(self, "watchdog", now, self.alerts,
                             "no watchdog holds the leader lease: stalls and late runs go unseen")
            self._sweeps += 1
            if self.retention is not None and self._sweeps % PRUNE_EVERY == 0:
                pruned = prune(self.store.engine, now - self.retention)
                if pruned.total:
                    log.info("retention: pruned %s", pruned)
            due = self.store.due_for_publish(now, now - self.pending_grace, limit,
                                             queued_before=now - self.requeue_after)
            orphans = [d for d in due if d.agent not in self.registry.agents]
            for d in orphans:  # its agent was removed or renamed since the run was created
                self.store.fail_without_attempt(
                    d.run_id, "unknown_agent",
                    f"agent {d.agent!r} is not in the loaded trigger modules", now)
            due = [d for d in due if d.agent in self.registry.agents]
            if not due:
                return 0
            self.publisher.publish(due)
            self.store.mark_queued([d.run_id for d in due], now, self.pending_grace)
            log.info("sweeper republished %d runs", len(due))
            return len(due)


def _observe_reading(spec: TriggerSpec, state: dict[str, Any]) -> None:
    """A watched queue's depth for /metrics."""
    name = spec.name
    reading = state.get("last_reading")
    if spec.kind == "queue_depth" and isinstance(reading, dict) and "depth" in reading:
        queue = str(getattr(spec.source, "queue_name", name))
        metrics.QUEUE_DEPTH.labels(name, queue).set(reading["depth"])


def _polls(registry: Registry, name: str) -> bool:
    return bool(getattr(registry.triggers[name].source, "polls", False))


def overlap_for(policy: str, trigger: str, firing_key: str | None, *,
                catchup: bool = False) -> tuple[str | None, str | None]:
    """(run.overlap, run.overlap_key) for a firing under the trigger's policy.

    Catch-up runs of one evaluation queue behind each other (`wait`); they are
    never skipped as overlapping one another.
    """
    if policy == "allow":
        return None, None
    if policy == "per_key":
        return "wait", f"{trigger}:{firing_key or ''}"
    return ("wait" if catchup else policy), trigger


def _chunks(pending: Iterable[_Pending]) -> Iterator[list[_Pending]]:
    """Group evaluations so each transaction holds at most CHUNK_SIZE runs and state writes
    (the first, FIRST_CHUNK_SIZE).

    A single trigger with more runs than that (catch-up `all`) is split; its
    state travels with its last piece, and the UNIQUE key makes a re-run of an
    earlier piece after a crash harmless.
    """
    chunk: list[_Pending] = []
    size = 0
    limit = FIRST_CHUNK_SIZE
    for p in pending:
        runs = p.runs
        while len(runs) > CHUNK_SIZE:
            head, runs = runs[:CHUNK_SIZE], runs[CHUNK_SIZE:]
            if chunk:
                yield chunk
                chunk, size = [], 0
            yield [_Pending(p.spec, _no_state(p.evaluation), head, None, final=False)]
            limit = CHUNK_SIZE
        weight = max(1, len(runs))
        if chunk and size + weight > limit:
            yield chunk
            chunk, size, limit = [], 0, CHUNK_SIZE
        chunk.append(_Pending(p.spec, p.evaluation, runs, p.write))
        size += weight
    if chunk:
        yield chunk


def _no_state(ev: Evaluation) -> Evaluation:
    return Evaluation([], ev.state, ev.next_at, [])
