"""The watchdog: nothing dies, hangs or fails to start without someone hearing about it.

One leader among replicas (a Redis lease). Each `check()` (tests call it
directly with a fake clock):

1. stalls: attempts past their liveness deadline (`worker_lost`) or progress
   deadline (`no_progress`), read from the Redis sorted sets in O(expired)
   and confirmed against the database; every so often the database itself is
   swept for stale `running` attempts, so a Redis restart loses nothing. A
   stalled attempt ends `stalled`; its run is requeued with a new fence (or
   marked `dead` when attempts are exhausted); a worker still alive but not
   progressing has its task revoked with terminate, so it stops burning tokens;
2. alerts for every attempt that ended `stalled` (whichever path ended it: the
   execution layer's redelivery may have got there first) and every run that
   ended `dead`; a `resolved` alert once a stalled run succeeds;
3. late schedules: a cron slot with no started run `start_deadline` after its
   logical time is `run_late`, computed from the registry, so it fires even
   when the scheduler is down and no run row exists (a dead-man's switch).
   One alert per trigger per gap of late slots (resolved when a slot starts on
   time again); slots the scheduler's catch-up policy skipped on purpose are in
   the missed-slot ledger and are not late. A new leader looks back over each
   trigger's catch-up window, after a settling pause that lets the scheduler's
   catch-up write its ledger, so no slot falls between two watchdogs;
4. runs `queued` past `stuck_after` with no message in the broker: `run_stuck`;
5. triggers flagged `source_failing`, and a missing scheduler leader;
6. the fleet (fleet.py): providers whose circuit breaker opened, runs stopped by their
   budget, agents over their spend cap.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis

from agents import BreakerPolicy
from scheduler.alerts import Alert, AlertManager, LeaderWatch
from scheduler.core import keys, metrics
from scheduler.core.breaker import RedisBreaker
from scheduler.core.broker_view import BrokerView
from scheduler.core.clock import Clock
from scheduler.core.heartbeats import HeartbeatIndex, Member
from scheduler.core.leases import Leadership, Lease, identity
from scheduler.core.publish import Publisher, dispatch
from scheduler.core.spend import SpendCounter
from scheduler.core.values import Dispatch
from scheduler.core.verdict import lost
from scheduler.core.vocabulary import AlertKind, RunStatus, StallReason
from scheduler.storage.alert_store import OpenEpisode
from scheduler.storage.outbox_store import OutboxStore
from scheduler.storage.pauses import PauseStore
from scheduler.storage.queries import Queries
from scheduler.storage.runs import RunStore
from scheduler.storage.watch_store import RunningAttempt, WatchStore
from scheduler.watchdog.fleet import FleetChecks
from triggers import CronTrigger, Registry, SourceHealth, cron_key

log = logging.getLogger("nightowl.watchdog")

DB_SWEEP_EVERY = 10  # checks between full database sweeps for stale running attempts
# Re-read this much history each check: clock skew, and a final write that retried for up to
# 20 s after stamping its finish time.
RECENT_OVERLAP = timedelta(seconds=60)
MAX_LATE_SLOTS = 100  # slots judged per trigger per check (a long look-back takes a few checks)
STUCK_EVERY = 5  # checks between run_stuck scans
MAX_STUCK = 100  # runs per run_stuck scan


# A cron slot whose run has any of these statuses started, or was held back on purpose: not late.
_SLOT_HELD = frozenset(RunStatus) - {RunStatus.PENDING, RunStatus.QUEUED}


def _stall_reason(deadline: str) -> StallReason:
    """The heartbeat index's `live` deadline is liveness, `progress` is ctx.heartbeat()."""
    return StallReason.WORKER_LOST if deadline == "live" else StallReason.NO_PROGRESS


def _stall_over(o: OpenEpisode, state: tuple[str, int] | None) -> str | None:
    """Why a stalled attempt's alert may end, or None while it may not."""
    if state is None:
        return "the run no longer exists (pruned)"
    status, attempt = state
    stalled_attempt = int(o.dedupe_key.rsplit(":", 1)[-1]) if o.dedupe_key.rsplit(":", 1)[-1].isdigit() else 0
    if status == RunStatus.SUCCEEDED:
        return "it succeeded after its stalled attempt"
    if RunStatus(status).terminal:
        return f"it ended {status}"
    if status == RunStatus.RUNNING and attempt > stalled_attempt:
        return f"attempt {attempt} is running"
    return None


def _death_over(state: tuple[str, int] | None) -> str | None:
    """Why a dead run's alert may end (retried to success, cancelled, pruned), or None."""
    if state is None:
        return "the run no longer exists (pruned)"
    if state[0] == RunStatus.SUCCEEDED:
        return "it was retried and succeeded"
    if state[0] == RunStatus.CANCELLED:
        return "it was cancelled"
    return None


@dataclass
class CheckReport:
    leader: bool = False
    expired_read: int = 0
    stalled: list[tuple[str, int, str]] = field(default_factory=list)  # (run, attempt, reason)
    requeued: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    late: list[tuple[str, datetime]] = field(default_factory=list)
    alerts_sent: int = 0


class Watchdog:
    def __init__(
        self,
        *,
        registry: Registry,
        store: RunStore,  # the requeue's publish; the watchdog's own reads are WatchStore's
        alerts: AlertManager,
        redis_client: redis.Redis,
        clock: Clock,
        publisher: Publisher | None,
        key_prefix: str = "nightowl:",
        leader_ttl: timedelta = timedelta(seconds=10),
        revoke: Callable[[str], None] | None = None,
        owner: str | None = None,
        stuck_after: timedelta = timedelta(minutes=2),
        breaker_policy: BreakerPolicy | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.watch = WatchStore(store.engine)
        self.pauses = PauseStore(store.engine)
        self.outbox = OutboxStore(store.engine)
        self.alerts = alerts
        self.redis = redis_client
        self.clock = clock
        self.publisher = publisher
        self.prefix = key_prefix
        self.index = HeartbeatIndex(redis_client, key_prefix)
        self.lease = Lease(
            redis_client, keys.leader(key_prefix, "watchdog"), owner or identity("watchdog"), leader_ttl
        )
        self.leader_grace = 2 * leader_ttl
        self.leadership = Leadership(self.lease, "watchdog", self._become_leader)
        self.revoke = revoke
        self._checks = 0
        self._since: datetime | None = None
        self._late_heap: list[tuple[datetime, str, datetime]] = []
        self._late_gaps: dict[str, tuple[datetime, int]] = {}  # trigger -> (first late slot, n)
        self._led_since: datetime | None = None
        self.stuck_after = stuck_after
        broker = publisher.broker_redis if publisher is not None else None
        self.broker = None if broker is None else BrokerView(*broker)
        self._stuck_seen: set[str] = set()  # no message at the previous scan
        self._stuck_not_before = 0.0  # monotonic: when a long backlog may be read again
        self.scheduler_watch = LeaderWatch(
            redis_client,
            key_prefix,
            "scheduler",
            self.leader_grace,
            "no scheduler holds the leader lease: no trigger is being evaluated",
        )
        self.fleet = FleetChecks(
            registry=registry,
            alerts=alerts,
            breaker=RedisBreaker(
                redis_client, key_prefix, breaker_policy or BreakerPolicy(), lambda: clock.now().timestamp()
            ),
            spend=SpendCounter(redis_client, key_prefix),
            queries=Queries(store.engine),
        )
        self._lock = threading.Lock()

    # -- leadership ----------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leadership.leading

    def _become_leader(self) -> None:
        now = self.clock.now()
        entries = [e for a in self.watch.running() for e in self._deadlines(a)]
        self.index.load(entries)
        self._since = now - timedelta(minutes=10)
        self._late_heap = []
        # Slots whose deadline passed while no watchdog led are judged too, once the
        # scheduler has had a leader TTL or two to run its catch-up and write the ledger.
        settle = now + self.leader_grace
        self._led_since = now
        # Gaps another leader alerted stay the same episodes: continued, then resolved by
        # the first slot that starts on time (open alerts carry the gap's first slot).
        self._late_gaps = {}
        for o in self.alerts.store.open_of_kind(AlertKind.RUN_LATE):
            parts = o.dedupe_key.split(":", 2)
            if o.trigger and len(parts) == 3:
                try:
                    self._late_gaps[o.trigger] = (datetime.fromisoformat(parts[2]), 1)
                except ValueError:
                    continue
        for name, spec in self.registry.triggers.items():
            if isinstance(spec.source, CronTrigger):
                self._push_late(name, spec.source, now - spec.source.catchup_window, settle)
        log.info("watchdog leader: rebuilt %d heartbeat deadlines", len(entries))

    def resign(self) -> None:
        with self._lock:
            self.leadership.resign()

    def close(self) -> None:
        """Resign, let queued alert sends finish briefly, release connections."""
        self.resign()
        self.alerts.flush(timeout=5)
        self.alerts.close()
        if self.publisher is not None:
            self.publisher.close()
        self.store.engine.dispose()
        self.redis.close()

    # -- the check -------------------------------------------------------------

    def check(self) -> CheckReport:
        with self._lock:
            report = CheckReport()
            if not self.leadership.hold():
                return report
            report.leader = True
            now = self.clock.now()
            self._checks += 1
            self._expired(now, report)
            if self._checks % DB_SWEEP_EVERY == 0:
                self._sweep_database(now, report)
            since = self._since or now
            self._since = now - RECENT_OVERLAP
            self._alert_stalls(since, report)
            self._alert_dead(since, report)
            self._resolve_recovered(report)
            self._late(now, report)
            if self._checks % STUCK_EVERY == 1:
                self._stuck(now, report)
            self._sources(report)
            self._outbox_dead(since, report)
            self._scheduler_leader(now, report)
            report.alerts_sent += self.fleet.check(now, since)
            return report

    # 1. stalls ---------------------------------------------------------------

    def _deadlines(self, a: RunningAttempt) -> list[tuple[Any, Member, float]]:
        spec = self.registry.agents.get(a.agent)
        if spec is None:
            return []
        member = Member(a.run_id, a.attempt, a.fence)
        beat = (a.heartbeat_at or a.started_at).timestamp()
        out: list[tuple[Any, Member, float]] = [
            ("live", member, beat + spec.heartbeat_timeout.total_seconds())
        ]
        if spec.progress_timeout is not None:
            progress = (a.progress_at or a.started_at).timestamp()
            out.append(("progress", member, progress + spec.progress_timeout.total_seconds()))
        return out

    def _expired(self, now: datetime, report: CheckReport) -> None:
        expired = self.index.expired(now.timestamp())
        report.expired_read = len(expired)
        if not expired:
            return
        rows = self.watch.attempts((m.run_id, m.attempt) for _, m, _ in expired)
        for which, member, _ in expired:
            row = rows.get((member.run_id, member.attempt))
            if row is None or row.status != RunStatus.RUNNING or row.fence != member.fence:
                self.index.drop(which, [member])  # ended already; the stalled scan reports it
                continue
            truth = {w: d for w, _, d in self._deadlines(row)}
            deadline = truth.get(which)
            if deadline is None:
                self.index.drop(which, [member])
            elif deadline > now.timestamp():
                self.index.load([(which, member, deadline)])  # Redis lagged the database
            else:
                self._stall(row, _stall_reason(which), now, report)

    def _sweep_database(self, now: datetime, report: CheckReport) -> None:
        """The slow path: stale `running` attempts the sorted sets do not know about."""
        specs = list(self.registry.agents.values())
        if not specs:
            return
        shortest = min(s.heartbeat_timeout for s in specs)
        progress = [s.progress_timeout for s in specs if s.progress_timeout is not None]
        oldest = self.watch.oldest_heartbeat()
        metrics.HEARTBEAT_AGE.set((now - oldest).total_seconds() if oldest else 0)
        candidates = self.watch.running(
            heartbeat_before=now - shortest, progress_before=now - min(progress) if progress else None
        )
        for row in candidates:
            for which, _member, deadline in self._deadlines(row):
                if deadline <= now.timestamp():
                    self._stall(row, _stall_reason(which), now, report)
                    break

    def _stall(self, row: RunningAttempt, reason: StallReason, now: datetime, report: CheckReport) -> None:
        spec = self.registry.agents.get(row.agent)
        max_attempts = spec.max_attempts if spec is not None else 1
        # Alive but stuck: the stall below takes a new fence, which the attempt's next beat
        # reads as "stop" (ctx.cancelled); prefork tasks are also terminated.
        if reason == StallReason.NO_PROGRESS and self.revoke is not None and row.task_id:
            try:
                self.revoke(row.task_id)
                report.revoked.append(row.run_id)
            except Exception:
                log.warning("revoking task %s of run %s failed", row.task_id, row.run_id, exc_info=True)
        result = self.watch.stall(
            row.run_id,
            row.attempt,
            row.fence,
            reason=reason,
            now=now,
            run_status=lost(row.counted_attempt, max_attempts),
        )
        self.index.clear(Member(row.run_id, row.attempt, row.fence))
        if result is None:
            return
        report.stalled.append((row.run_id, row.attempt, reason))
        metrics.STALLED.labels(row.agent, reason).inc()
        log.warning("run %s attempt %d stalled (%s)", row.run_id, row.attempt, reason)
        # The run lease may still be held by the stuck worker: the new fence already shuts it
        # out of the database, so free the lease for the next attempt now.
        self.redis.delete(keys.run_lease(self.prefix, row.run_id))
        if result.run_status == RunStatus.DEAD:
            report.dead.append(row.run_id)
            metrics.DEAD.labels(row.agent).inc()
        elif result.run_status == RunStatus.PENDING:
            report.requeued.append(row.run_id)
            if self.publisher is not None:
                try:
                    dispatch(
                        self.store,
                        self.publisher,
                        [
                            Dispatch(
                                row.run_id,
                                result.agent,
                                result.queue,
                                result.trigger,
                                row.attempt,
                                RunStatus.PENDING,
                                result.fence,
                            )
                        ],
                        now,
                    )
                except Exception as exc:  # it is `pending`: the scheduler's sweeper sends it
                    log.warning(
                        "requeue of run %s not published (%s); the sweeper will",
                        row.run_id,
                        type(exc).__name__,
                    )

    # 2. alerts for stalls, deaths and recoveries -------------------------------

    def _alert_stalls(self, since: datetime, report: CheckReport) -> None:
        for a in self.watch.stalled_since(since):
            reason = a.reason or StallReason.WORKER_LOST
            sent = self.alerts.fire_once(
                Alert(
                    kind=AlertKind.RUN_STALLED,
                    dedupe_key=f"run_stalled:{a.run_id}:{a.attempt}",
                    message=f"run {a.run_id} of {a.agent} stalled on attempt {a.attempt} ({reason})",
                    run_id=a.run_id,
                    trigger=a.trigger,
                    agent=a.agent,
                    attempt=a.attempt,
                    details={
                        "reason": reason,
                        "worker": a.worker,
                        "last_heartbeat": a.heartbeat_at.isoformat() if a.heartbeat_at else None,
                    },
                )
            )
            report.alerts_sent += sent

    def _alert_dead(self, since: datetime, report: CheckReport) -> None:
        for r in self.watch.dead_since(since):
            report.alerts_sent += self.alerts.fire(
                Alert(
                    kind=AlertKind.RUN_DEAD,
                    dedupe_key=f"run_dead:{r.id}",
                    message=f"run {r.id} of {r.agent} is dead after {r.attempt} attempt(s): {r.error}",
                    run_id=r.id,
                    trigger=r.trigger,
                    agent=r.agent,
                    attempt=r.attempt,
                    details={"reason": r.terminal_reason},
                )
            )

    def _resolve_recovered(self, report: CheckReport) -> None:
        """End the run alerts whose cause ended. `run_stalled`: the run moved on (a later
        attempt runs, or it ended, however it ended: a death has its own alert). `run_dead`:
        it was retried to success, or cancelled. Either: the run is gone (pruned)."""
        stalled = self.alerts.store.open_of_kind(AlertKind.RUN_STALLED)
        dead = self.alerts.store.open_of_kind(AlertKind.RUN_DEAD)
        states = self.watch.run_states({o.run_id for o in (*stalled, *dead) if o.run_id})
        for o in stalled:
            why = _stall_over(o, states.get(o.run_id or ""))
            if why is not None:
                report.alerts_sent += self._resolve_run_alert(AlertKind.RUN_STALLED, o, why)
        for o in dead:
            ended = _death_over(states.get(o.run_id or ""))
            if ended is not None:
                report.alerts_sent += self._resolve_run_alert(AlertKind.RUN_DEAD, o, ended)

    def _resolve_run_alert(self, kind: AlertKind, o: OpenEpisode, why: str) -> bool:
        return self.alerts.resolve(
            Alert(
                kind=kind,
                dedupe_key=o.dedupe_key,
                run_id=o.run_id,
                trigger=o.trigger,
                message=f"run {o.run_id}: {why}",
            )
        )

    # 3. late schedules -----------------------------------------------------------

    def _push_late(
        self, name: str, trigger: CronTrigger, after: datetime, not_before: datetime | None = None
    ) -> None:
        """Queue the first slot whose start deadline falls after `after` (judged no earlier
        than `not_before`)."""
        slot = trigger.expr.next_after(after - trigger.start_deadline)
        due = slot + trigger.start_deadline
        heapq.heappush(self._late_heap, (max(due, not_before) if not_before else due, name, slot))

    def _late(self, now: datetime, report: CheckReport) -> None:
        pauses = self.pauses.pauses() if self._late_heap and self._late_heap[0][0] <= now else None
        # A paused trigger's slots are skipped or held on purpose (ledger entries, or the
        # one a run-latest pause runs on resume): not late.
        due = [(n, s) for n, s in self._due_slots(now) if pauses is None or pauses.trigger(n) is None]
        if due:
            self._judge_late(due, report)

    def _due_slots(self, now: datetime) -> list[tuple[str, datetime]]:
        """The (trigger, slot) pairs whose start deadline passed, at most MAX_LATE_SLOTS per
        trigger per check; the next slot of each is queued."""
        due: list[tuple[str, datetime]] = []
        per_trigger: dict[str, int] = {}
        later: list[tuple[datetime, str, datetime]] = []
        while self._late_heap and self._late_heap[0][0] <= now:
            entry = heapq.heappop(self._late_heap)
            _, name, slot = entry
            spec = self.registry.triggers.get(name)
            if spec is None or not isinstance(spec.source, CronTrigger):
                continue
            if per_trigger.get(name, 0) >= MAX_LATE_SLOTS:
                later.append(entry)  # the rest of this trigger's look-back next check; the
                continue  # other triggers are not held up by it
            per_trigger[name] = per_trigger.get(name, 0) + 1
            due.append((name, slot))
            nxt = spec.source.expr.next_after(slot)
            due_at = max(nxt + spec.source.start_deadline, now)
            if due_at <= now and per_trigger[name] >= MAX_LATE_SLOTS:
                later.append((due_at, name, nxt))
            else:
                heapq.heappush(self._late_heap, (due_at, name, nxt))
        for entry in later:
            heapq.heappush(self._late_heap, entry)
        return due

    def _judge_late(self, due: list[tuple[str, datetime]], report: CheckReport) -> None:
        runs = self.watch.by_keys(cron_key(n, s) for n, s in due)
        states = self.watch.trigger_states({n for n, _ in due})
        ledger = self.watch.missed_ranges({n for n, _ in due}, min(s for _, s in due))
        for name, slot in sorted(due, key=lambda d: d[1]):
            status, started = runs.get(cron_key(name, slot), (None, None))
            since = (states.get(name) or {}).get("since")
            if since and slot <= datetime.fromisoformat(since):
                continue  # before this trigger (or this version of it) existed
            spec = self.registry.triggers[name]
            assert isinstance(spec.source, CronTrigger)
            if (
                not since
                and self._led_since is not None
                and slot + spec.source.start_deadline < self._led_since
            ):
                continue  # looking back, but no scheduler ever recorded this trigger
            if any(first <= slot <= last for first, last in ledger.get(name, ())):
                continue  # skipped by the catch-up policy: a ledger entry, not an alert
            if started is not None or status in _SLOT_HELD:
                self._late_gap_closed(name, slot, report)  # started, or held back on purpose
                continue
            self._late_slot(name, slot, status, report)

    def _late_slot(self, name: str, slot: datetime, status: str | None, report: CheckReport) -> None:
        """One late slot: the first of a gap alerts; the rest of the gap only count."""
        spec = self.registry.triggers[name]
        assert isinstance(spec.source, CronTrigger)
        report.late.append((name, slot))
        gap = self._late_gaps.get(name)
        if gap is not None:
            self._late_gaps[name] = (gap[0], gap[1] + 1)
            return
        self._late_gaps[name] = (slot, 1)
        what = "no run exists" if status is None else f"its run is still {status}"
        report.alerts_sent += self.alerts.fire(
            Alert(
                kind=AlertKind.RUN_LATE,
                dedupe_key=f"run_late:{name}:{slot.isoformat()}",
                message=(
                    f"trigger {name}: the {slot.isoformat()} slot has not started "
                    f"{spec.source.start_deadline} after its time ({what}); later late slots "
                    "of this gap are not alerted one by one"
                ),
                trigger=name,
                agent=spec.agent_name,
                details={"slot": slot.isoformat(), "run_status": status},
            )
        )

    def _late_gap_closed(self, name: str, slot: datetime, report: CheckReport) -> None:
        gap = self._late_gaps.pop(name, None)
        if gap is None:
            return
        first, count = gap
        report.alerts_sent += self.alerts.resolve(
            Alert(
                kind=AlertKind.RUN_LATE,
                dedupe_key=f"run_late:{name}:{first.isoformat()}",
                trigger=name,
                message=(
                    f"trigger {name}: the {slot.isoformat()} slot started on time; the gap from "
                    f"{first.isoformat()} had {count} late slot(s)"
                ),
                details={"first_slot": first.isoformat(), "late_slots": count},
            )
        )

    def _stuck(self, now: datetime, report: CheckReport) -> None:
        """`run_stuck`: queued past `stuck_after` with no message at two scans in a row (the
        sweeper's lost-message check should have republished it: it is not running, or its
        publish keeps failing)."""
        if self.broker is None or time.monotonic() < self._stuck_not_before:
            return
        old = self.watch.queued_before(now - self.stuck_after, MAX_STUCK)
        started = time.monotonic()
        snapshot = self.broker.snapshot({q for _, q, _ in old}) if old else None
        # A backlog so long that one read takes a while is read less often (<= 5% of the
        # watchdog's time); a short read leaves the STUCK_EVERY cadence alone.
        elapsed = time.monotonic() - started
        if elapsed > 0.1:
            self._stuck_not_before = started + 20 * elapsed
        after = (now - self.stuck_after).timestamp()
        missing = {
            run_id
            for run_id, _, _ in old
            if snapshot is not None and not snapshot.has_live_message(run_id, after)
        }
        stuck = missing & self._stuck_seen
        self._stuck_seen = missing
        metrics.STUCK.set(len(stuck))
        for run_id, queue, queued_at in old:
            if run_id not in stuck:
                continue
            report.alerts_sent += self.alerts.fire(
                Alert(
                    kind=AlertKind.RUN_STUCK,
                    dedupe_key=f"run_stuck:{run_id}",
                    run_id=run_id,
                    message=(
                        f"run {run_id} has been queued since {queued_at.isoformat()} and queue "
                        f"{queue} holds no message for it; is the scheduler (its sweeper "
                        "republishes such runs) running?"
                    ),
                    details={"queue": queue, "queued_at": queued_at.isoformat()},
                )
            )
        unstuck = [
            o
            for o in self.alerts.store.open_of_kind(AlertKind.RUN_STUCK)
            if o.run_id is not None and o.run_id not in missing
        ]
        statuses = self.watch.statuses({o.run_id for o in unstuck if o.run_id})
        for o in unstuck:
            report.alerts_sent += self.alerts.resolve(
                Alert(
                    kind=AlertKind.RUN_STUCK,
                    dedupe_key=o.dedupe_key,
                    run_id=o.run_id,
                    message=f"run {o.run_id} is no longer stuck ({statuses.get(o.run_id or '', 'pruned')})",
                )
            )

    # 4. sources and leaders ---------------------------------------------------------

    def _sources(self, report: CheckReport) -> None:
        failing = self.watch.failing_sources()
        for name, state in failing.items():
            spec = self.registry.triggers.get(name)
            health = SourceHealth.of(state)
            report.alerts_sent += self.alerts.fire(
                Alert(
                    kind=AlertKind.TRIGGER_SOURCE_FAILING,
                    dedupe_key=f"trigger_source_failing:{name}",
                    message=f"trigger {name}: its source failed {health.failures} polls in a "
                    f"row: {health.last_error}",
                    trigger=name,
                    agent=spec.agent_name if spec else None,
                    details={"last_error": health.last_error, "failures": health.failures},
                )
            )
        for o in self.alerts.store.open_of_kind(AlertKind.TRIGGER_SOURCE_FAILING):
            if o.trigger and o.trigger not in failing:
                report.alerts_sent += self.alerts.resolve(
                    Alert(
                        kind=AlertKind.TRIGGER_SOURCE_FAILING,
                        dedupe_key=o.dedupe_key,
                        trigger=o.trigger,
                        message=f"trigger {o.trigger}: its source answers again",
                    )
                )

    def _outbox_dead(self, since: datetime, report: CheckReport) -> None:
        for row in self.outbox.dead_since(since):
            report.alerts_sent += self.alerts.fire(
                Alert(
                    kind=AlertKind.OUTBOX_DEAD,
                    dedupe_key=f"outbox_dead:{row.id}",
                    run_id=row.run_id,
                    message=f"outbox entry {row.id} to sink {row.sink} (key {row.key}) is dead after "
                    f"{row.attempts} attempts: {row.last_error}; `nightowl outbox retry "
                    "--dead` requeues it",
                    details={"sink": row.sink, "key": row.key, "entry_id": row.id},
                )
            )

    def _scheduler_leader(self, now: datetime, report: CheckReport) -> None:
        report.alerts_sent += self.scheduler_watch.check(now, self.alerts)
