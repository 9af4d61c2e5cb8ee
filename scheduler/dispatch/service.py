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
5. after each commit, claim that chunk (`queued`) and publish it in one pipelined batch.
A crash between 4 and 5 leaves runs `pending`; `sweep()` publishes them.

Any failure in 3-5 leaves every trigger taken off the heap in step 2 scheduled again
(a second later; a stashed commit backs off up to 5 s), so a database blip never
unschedules a trigger; a tick that failed raises after putting them back (the loop's
healthcheck goes stale) and failures that last raise `scheduler_failing`.

Sweep: republish `pending` runs past the grace, due `waiting` runs and `running` runs
whose lease expired, and (on a Redis broker) `queued` runs whose message is gone from
the broker for `requeue_lost_after` (scheduler/core/broker_view.py).

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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis

from agents.values import json_problem
from scheduler.alerts import Alert, AlertManager, LeaderWatch
from scheduler.core import keys, metrics
from scheduler.core.clock import Clock
from scheduler.core.errors import SchedulerError, StateConflictError
from scheduler.core.leases import Leadership, Lease, identity
from scheduler.core.pauses import NO_PAUSES, Pauses
from scheduler.core.publish import Publisher, dispatch
from scheduler.core.scrub import scrub_text
from scheduler.core.steplog import StepFailures
from scheduler.core.vocabulary import AlertKind, Reason, RunOverlap, RunStatus
from scheduler.dispatch.firings import CHUNK_SIZE, Pending, chunks, pending_for
from scheduler.dispatch.pausing import PAUSED_SLOT, on_resume, split_held, while_paused
from scheduler.dispatch.sweeper import Sweeper
from scheduler.storage.store import Dispatch, MissedRow, NewRun, Store, is_transient
from triggers import (
    Evaluation,
    QueueDepthTrigger,
    Registry,
    SourceDefaults,
    TriggerSpec,
    TriggerStatus,
)

log = logging.getLogger("nightowl.scheduler")

ERROR_BACKOFF = timedelta(seconds=5)
# A failed tick's stashed commit is tried again this long after now, doubling per failed
# tick in a row up to the max: a blip costs a second, an outage costs one connection
# attempt per 5 s, and the scheduler commits again within 5 s of the database answering.
COMMIT_BACKOFF = (timedelta(seconds=1), timedelta(seconds=5))
# A trigger a failed tick took off the heap is due again this soon, however long the outage
# has lasted (a backoff grown by other triggers' failures kept a cron silent for 30 s after
# the database was back). While a stash backs off no trigger is evaluated anyway.
TAKEN_RETRY = timedelta(seconds=1)
FAILING_ALERT_AFTER = timedelta(seconds=30)  # ticks failing this long -> scheduler_failing
# A paused trigger that is not evaluated (db_change) looks at its pause again this often, so
# a resume takes effect within a tick or so.
PAUSED_RECHECK = timedelta(seconds=1)


class TickFailedError(SchedulerError):
    """A tick could not commit; its triggers are scheduled again (raised for the loop, whose
    healthcheck must not stay green while no firing is committed)."""


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
    commits: int = 0  # chunks committed (a tick with nothing due commits none)
    fired: list[tuple[str, str]] = field(default_factory=list)  # (trigger, run_id)


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
        leader_ttl: timedelta = timedelta(seconds=10),
        pending_grace: timedelta = timedelta(seconds=5),
        requeue_after: timedelta = timedelta(hours=2),
        requeue_lost_after: timedelta = timedelta(seconds=15),
        owner: str | None = None,
        poll_workers: int = 8,
        poll_wait: timedelta = timedelta(seconds=30),
        source_defaults: SourceDefaults | None = None,
        alerts: AlertManager | None = None,
        retention: timedelta | None = None,
    ) -> None:
        self.registry = registry
        registry.bind_sources(source_defaults or SourceDefaults())
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self._failed_ticks = 0
        self._failing_since: datetime | None = None
        self._taken: set[str] = set()  # off the heap this tick and not yet scheduled again
        # Evaluated chunks whose commit failed, committed first once the backoff passed.
        self._stash: list[list[Pending]] = []
        self._stash_retry_at: datetime | None = None
        self._eval_failures = StepFailures(log)  # one line per failing trigger, not per try
        self.redis = redis_client
        self.prefix = key_prefix
        self._alerts = alerts  # the scheduler watches the watchdog (and the watchdog, it)
        self._observed: dict[str, str] = {}  # trigger -> state label last exported
        self.leader_grace = 2 * leader_ttl
        self.watchdog_watch = LeaderWatch(
            redis_client,
            key_prefix,
            "watchdog",
            self.leader_grace,
            "no watchdog holds the leader lease: stalls and late runs go unseen",
        )
        self.lease = Lease(
            redis_client, keys.leader(key_prefix, "scheduler"), owner or identity("scheduler"), leader_ttl
        )
        self.leadership = Leadership(self.lease, "scheduler", self._become_leader)
        self._lock = threading.Lock()
        self._heap: list[tuple[datetime, str]] = []
        self._states: dict[str, tuple[dict[str, Any], int]] = {}
        self._pauses: Pauses = NO_PAUSES  # read by every tick that evaluates something
        self._pauses_read_at: datetime | None = None
        self.poll_wait = poll_wait
        self._pool = ThreadPoolExecutor(max_workers=poll_workers, thread_name_prefix="nightowl-poll")
        # Polls started and not yet committed, with the (state, revision) each started from:
        # the write must compare-and-set against *that* revision, so a result computed
        # before a leadership change can never overwrite what the other leader wrote.
        self._inflight: dict[str, tuple[Future[Evaluation], tuple[dict[str, Any] | None, int]]] = {}
        self.sweeper = Sweeper(
            registry=registry,
            store=store,
            publisher=publisher,
            clock=clock,
            leadership=self.leadership,
            lock=self._lock,
            pending_grace=pending_grace,
            requeue_after=requeue_after,
            requeue_lost_after=requeue_lost_after,
            alerts=alerts,
            watchdog_watch=self.watchdog_watch,
            retention=retention,
        )

    @property
    def alerts(self) -> AlertManager | None:
        return self._alerts

    @alerts.setter
    def alerts(self, value: AlertManager | None) -> None:
        """Attached after construction by the loop (and tests): the sweeper alerts too."""
        self._alerts = value
        self.sweeper.alerts = value

    # -- leadership ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leadership.leading

    def hold_leadership(self) -> bool:
        """Take or renew the leader lease; on gaining it, reload state from the database."""
        return self.leadership.hold()

    def _become_leader(self) -> None:
        self._stash = []  # another leader may have evaluated these since; look again
        self._states = self.store.load_trigger_states()
        now = self.clock.now()
        self._heap = [(now, name) for name in sorted(self.registry.triggers)]
        heapq.heapify(self._heap)
        log.info("scheduler leader: %d triggers", len(self._heap))

    def next_due(self) -> float | None:
        """Seconds until the earliest trigger is due, by this service's clock (None when not
        leading, nothing is scheduled, or a failed commit is backing off: then the tick
        keeps its interval): the loop wakes the tick then, so a burst starts at its
        boundary."""
        with self._lock:
            if not self.leadership.leading or not self._heap or self._stash:
                return None
            return (self._heap[0][0] - self.clock.now()).total_seconds()

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
            failure: BaseException | None = None
            try:
                self._tick(now, report)
            except Exception as exc:
                failure = exc
            finally:
                # Whatever failed, every trigger taken off the heap is scheduled again.
                retry_at = now + TAKEN_RETRY if failure is not None else now
                for name in self._taken - set(self._inflight):
                    heapq.heappush(self._heap, (retry_at, name))
                self._taken.clear()
                if failure is not None:
                    self._stash_retry_at = now + self._commit_backoff()
            if failure is None:
                if report.commits:  # only a commit proves the database is back
                    self._tick_succeeded(now)
                return report
            report.errors += 1
            self._tick_failed(now, failure)
            raise TickFailedError(
                f"tick failed ({scrub_text(f'{type(failure).__name__}: {failure}')[:300]}); "
                f"its triggers retry in {TAKEN_RETRY}"
            ) from failure

    def _tick(self, now: datetime, report: TickReport) -> None:
        if self._stash and (self._stash_retry_at is None or now >= self._stash_retry_at):
            stashed, self._stash = self._stash, []
            for i, chunk in enumerate(stashed):
                try:
                    self._commit_chunk(chunk, now, report)
                except Exception:
                    self._stash.extend(stashed[i + 1 :])  # this one is stashed again
                    raise
        elif self._stash:
            return  # still backing off: evaluating more would only grow what waits
        due = list(self._pop_due(now))
        self._taken.update(due)
        # A failed read of the pauses fails the tick, but only after the polls started (on
        # the last view): a database outage must not cost the observation a poll makes.
        unread = self._read_pauses(now, needed=bool(due or self._inflight))
        started = [
            self._start_poll(name, now)
            for name in due
            if _polls(self.registry, name) and not self._frozen(name, now)
        ]
        if unread is not None:
            if started:  # the observation is made now, while the source still shows it
                wait(started, timeout=self.poll_wait.total_seconds())
            raise unread
        # Streamed: the first chunk commits and publishes after <= 500 evaluations,
        # not after all of them.
        evaluated = (self._evaluate(name, now, report) for name in due if not _polls(self.registry, name))
        for chunk in chunks(p for p in evaluated if p is not None):
            self._commit_chunk(chunk, now, report)
        if started:
            wait(started, timeout=self.poll_wait.total_seconds())
        done = [name for name in list(self._inflight) if self._inflight[name][0].done()]
        self._taken.update(done)
        polled = (self._finish_poll(name, now, report) for name in done)
        for chunk in chunks(p for p in polled if p is not None):
            self._commit_chunk(chunk, now, report)

    def _schedule(self, name: str, at: datetime) -> None:
        heapq.heappush(self._heap, (at, name))
        self._taken.discard(name)

    def _commit_backoff(self) -> timedelta:
        first, most = COMMIT_BACKOFF
        backoff: timedelta = min(first * 2 ** max(self._failed_ticks - 1, 0), most)
        return backoff

    def _tick_failed(self, now: datetime, failure: BaseException) -> None:
        self._failed_ticks += 1
        if self._failing_since is None:
            self._failing_since = now
        if self.alerts is None or now - self._failing_since < FAILING_ALERT_AFTER:
            return
        try:
            self.alerts.fire(
                Alert(
                    kind=AlertKind.SCHEDULER_FAILING,
                    dedupe_key=AlertKind.SCHEDULER_FAILING,
                    message=(
                        f"scheduler ticks have failed since {self._failing_since.isoformat()} "
                        f"({self._failed_ticks} in a row): no firing is being committed; last "
                        f"error: {scrub_text(f'{type(failure).__name__}: {failure}')[:500]}"
                    ),
                    details={"since": self._failing_since.isoformat(), "failed_ticks": self._failed_ticks},
                )
            )
        except Exception as exc:  # the alert store may be what is failing; the health says so
            log.debug("scheduler_failing alert not recorded: %s", exc)

    def _tick_succeeded(self, now: datetime) -> None:
        if self._failing_since is None:
            return
        if self.alerts is not None and now - self._failing_since >= FAILING_ALERT_AFTER:
            try:
                self.alerts.resolve(
                    Alert(
                        kind=AlertKind.SCHEDULER_FAILING,
                        dedupe_key=AlertKind.SCHEDULER_FAILING,
                        message="scheduler ticks commit again",
                    )
                )
            except Exception as exc:
                log.debug("scheduler_failing resolve not recorded: %s", exc)
        log.info("ticks commit again after %d failed tick(s)", self._failed_ticks)
        self._failed_ticks = 0
        self._failing_since = None

    def _pop_due(self, now: datetime) -> Iterator[str]:
        seen: set[str] = set()  # a trigger scheduled early (a resume) may be queued twice
        while self._heap and self._heap[0][0] <= now:
            _, name = heapq.heappop(self._heap)
            if name in self.registry.triggers and name not in self._inflight and name not in seen:
                seen.add(name)
                yield name

    def _read_pauses(self, now: datetime, *, needed: bool) -> Exception | None:
        """The fleet's pauses: every tick that evaluates something (a failed read fails the
        tick, and its triggers are scheduled again), and every PAUSED_RECHECK otherwise (a
        failed read then changes nothing: a tick with nothing due proves nothing about the
        database). When they changed, a resumed trigger that holds a slot (a run-latest
        pause) is evaluated now, not at its next slot an hour away."""
        recent = self._pauses_read_at is not None and now - self._pauses_read_at < PAUSED_RECHECK
        if not needed and recent:
            return None
        try:
            pauses = self.store.pauses()
        except Exception as exc:
            if needed:
                return exc
            log.debug("pauses not read: %s", exc)
            return None
        self._pauses_read_at = now
        changed, self._pauses = pauses != self._pauses, pauses
        if not changed:
            return None
        busy = self._taken | set(self._inflight)
        for name, (state, _) in self._states.items():
            held = PAUSED_SLOT in state and name in self.registry.triggers and name not in busy
            if held and pauses.trigger(name) is None:
                self._schedule(name, now)
        return None

    def _frozen(self, name: str, now: datetime) -> bool:
        """A paused trigger that consumes its source (db_change) is not polled: its cursor
        stays put, and it looks at its pause again after PAUSED_RECHECK."""
        spec = self.registry.triggers[name]
        if not getattr(spec.source, "consumes", False) or self._pauses.trigger(name) is None:
            return False
        self._schedule(name, now + PAUSED_RECHECK)
        return True

    def _start_poll(self, name: str, now: datetime) -> Future[Evaluation]:
        spec = self.registry.triggers[name]
        prior = self._states.get(name, (None, 0))
        future = self._pool.submit(spec.source.evaluate, name, now, prior[0])
        self._inflight[name] = (future, prior)
        return future

    def _finish_poll(self, name: str, now: datetime, report: TickReport) -> Pending | None:
        future, prior = self._inflight.pop(name)
        if name not in self.registry.triggers:
            return None
        return self._evaluate(name, now, report, future.result, prior)

    def _evaluate(
        self,
        name: str,
        now: datetime,
        report: TickReport,
        compute: Callable[[], Evaluation] | None = None,
        prior: tuple[dict[str, Any] | None, int] | None = None,
    ) -> Pending | None:
        spec = self.registry.triggers[name]
        state, revision = prior if prior is not None else self._states.get(name, (None, 0))
        inner, held = split_held(state)  # a slot a run-latest pause holds, hidden from the kind
        try:
            ev = compute() if compute else spec.source.evaluate(name, now, inner)
            # Polled state carries outside data (a cursor's key); cron state is nightowl's own.
            problem = json_problem(ev.state, "state") if compute is not None else None
            if problem is not None:
                # Refused the same way on SQLite as PostgreSQL would (a cursor holding a
                # NUL character, say): the trigger cannot advance until the data is fixed.
                raise ValueError(
                    f"its new state cannot be stored: {problem}; fix the source row or value it came from"
                )
        except Exception as exc:
            report.errors += 1
            self._eval_failures.failed(f"trigger {name} evaluation", exc)
            self._schedule(name, now + ERROR_BACKOFF)
            return None
        self._eval_failures.succeeded(f"trigger {name} evaluation")
        pause = self._pauses.trigger(name)
        if pause is not None and getattr(spec.source, "consumes", False):
            # A poll that started before the pause: committing its cursor would skip rows
            # that never fire. Its result is dropped; the rows are read again after resume.
            self._schedule(name, now + PAUSED_RECHECK)
            return None
        if pause is not None:
            ev = while_paused(ev, pause, held, polls=compute is not None)
        elif held is not None:
            ev = on_resume(ev, held)
        report.evaluated += 1
        self._observe(spec, ev.state)
        return pending_for(spec, self.registry.agent_for(spec), ev, state, revision)

    def _observe(self, spec: TriggerSpec, state: dict[str, Any]) -> None:
        """Trigger state for /metrics, touched only when it changes: 10,000 cron triggers
        due at once must not cost 40,000 gauge updates on the dispatch path."""
        current = TriggerStatus.of(state)
        if self._observed.get(spec.name) != current:
            for label in TriggerStatus:
                metrics.TRIGGER_STATE.labels(spec.name, label.value).set(1 if label is current else 0)
            self._observed[spec.name] = current
        if isinstance(spec.source, QueueDepthTrigger):
            depth = spec.source.depth_of(state)
            if depth is not None:  # a watched queue's depth for /metrics
                metrics.QUEUE_DEPTH.labels(spec.name, spec.source.queue_name).set(depth)

    def _commit_chunk(self, chunk: list[Pending], now: datetime, report: TickReport) -> None:
        runs = [r for p in chunk for r in p.runs]
        writes = [p.write for p in chunk if p.write is not None]
        missed = [
            MissedRow(
                p.spec.name, g.first, g.last, g.count, g.reason, self._paused_since(p.spec.name, g.reason)
            )
            for p in chunk
            for g in p.evaluation.missed
        ]
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
                    self._schedule(p.spec.name, now)
            return
        except Exception as exc:
            self._commit_failed(chunk, exc, now, report)
            return
        report.commits += 1
        for p in chunk:
            if p.write is not None:
                self._states[p.spec.name] = (p.evaluation.state, p.write.expected_revision + 1)
            if p.final:
                self._schedule(p.spec.name, p.evaluation.next_at)
        self._cancel_others(
            [r for r in inserted if r.overlap == RunOverlap.CANCEL_OTHER and r.status == RunStatus.PENDING]
        )
        _count(chunk, runs, inserted, report)
        self._publish(
            [
                Dispatch(r.id, r.agent, r.queue, r.trigger, 0)
                for r in inserted
                if r.status == RunStatus.PENDING
            ],
            now,
            report,
        )

    def _paused_since(self, name: str, reason: str) -> datetime | None:
        """A paused slot extends the ledger row of the same pause (one row per pause, not
        one per slot of an every-minute trigger paused overnight)."""
        pause = self._pauses.trigger(name) if reason == Reason.PAUSED else None
        return pause.paused_at if pause is not None else None

    def _commit_failed(self, chunk: list[Pending], exc: Exception, now: datetime, report: TickReport) -> None:
        """A chunk's commit failed: isolate a refusal, stash an outage (raises for the tick)."""
        if not is_transient(exc):
            # The database refused something in this chunk (a value, a key too long): commit
            # each trigger alone, so one bad trigger cannot hold back the others.
            if len(chunk) > 1:
                for p in chunk:
                    self._commit_alone(p, now, report)
                return
            raise exc
        # Keep what was observed: a queue or metric reading seen now may be gone by the next
        # poll (an episode that began and ended during a database outage would be lost). The
        # chunk is committed as it is once the database answers; its triggers stay off the
        # heap until then.
        self._stash.append(chunk)
        for p in chunk:
            if p.final:
                self._taken.discard(p.spec.name)
        raise exc

    def _commit_alone(self, p: Pending, now: datetime, report: TickReport) -> None:
        """One trigger's evaluation in a transaction of its own; refused, the trigger is
        reported (one line a minute) and evaluated again after ERROR_BACKOFF."""
        try:
            self._commit_chunk([p], now, report)
        except Exception as exc:
            if is_transient(exc):
                raise
            report.errors += 1
            self._eval_failures.failed(f"trigger {p.spec.name} commit", exc)
            if p.final:
                self._schedule(p.spec.name, now + ERROR_BACKOFF)
        else:
            self._eval_failures.succeeded(f"trigger {p.spec.name} commit")

    def _cancel_others(self, runs: list[NewRun]) -> None:
        keys = {r.overlap_key for r in runs if r.overlap_key}
        new_ids = {r.id for r in runs}
        older = [i for i in self.store.running_with_keys(k for k in keys if k) if i not in new_ids]
        self.store.request_cancel(older, Reason.CANCEL_OTHER)

    def _publish(self, dispatches: list[Dispatch], now: datetime, report: TickReport) -> None:
        if not dispatches:
            return
        try:
            sent = dispatch(self.store, self.publisher, dispatches, now)
        except Exception as exc:
            log.warning(
                "publishing %d runs failed (%s); the sweeper will retry",
                len(dispatches),
                scrub_text(f"{type(exc).__name__}: {exc}")[:300],
            )
            return
        report.published += len(sent)

    # -- the sweeper (scheduler/dispatch/sweeper.py) ----------------------------

    def sweep(self, limit: int = CHUNK_SIZE) -> int:
        """Republish runs left `pending` past the grace period and `waiting` runs now due."""
        return self.sweeper.sweep(limit)


def _count(chunk: list[Pending], runs: list[NewRun], inserted: list[NewRun], report: TickReport) -> None:
    """A committed chunk in the tick report and /metrics."""
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


def _polls(registry: Registry, name: str) -> bool:
    return registry.triggers[name].source.polls
