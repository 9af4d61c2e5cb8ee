"""The invariants, checked from the data: nightowl's database, the sinks and the counters.

1. every slot and every row has exactly one run (no gap, no duplicate, no missed-ledger
   entry where catch-up covers it), every alert episode one firing and one resolved run;
2. every run is terminal within the stated bound after the last fault;
3. no sink entry missing or duplicated (effects exactly once); re-executions counted;
4. every stalled attempt produced one `run_stalled` and, if its run recovered, one resolve;
5. no run gives up: the agent fails only the first attempt of one run in ten, on purpose, so
   every run ends `succeeded` (or `skipped/overlap` where the trigger skips overlaps).

`converge()` waits (bounded) until the data can be judged, `check()` judges it and returns
the figures plus each violation with the run ids and states involved.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tests.faults.driver import Driven
from tests.faults.harness import TERMINAL_BOUND_S, Cluster
from tests.helpers import stream_entries

ACTIVE = ("pending", "waiting", "queued", "running")
PER_SECOND = ("sec-allow", "sec-skip")
ALERT_TRIGGERS = ("backlog", "errors")
SKIP_TRIGGERS = ("sec-skip", "backlog", "errors")  # overlap="skip": skipped/overlap is legal
STALL_STATES = ("stalled", "fenced_out")  # an attempt someone else took over
SHOW = 8  # run ids listed per violation


@dataclass
class Violation:
    invariant: str
    message: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    count: int = 1

    def public(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "message": self.message,
            "count": self.count,
            "runs": self.runs[:SHOW],
        }

    def line(self) -> str:
        shown = "; ".join(json.dumps(r, default=str, sort_keys=True) for r in self.runs[:SHOW])
        more = f" (+{len(self.runs) - SHOW} more)" if len(self.runs) > SHOW else ""
        return f"[{self.invariant}] {self.message}" + (f": {shown}{more}" if shown else "")


@dataclass
class Snapshot:
    runs: list[Any]
    attempts: dict[str, list[Any]]
    alerts: list[Any]
    ledger: list[Any]
    outbox: list[Any]


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat(timespec="milliseconds") if t else None


def brief(run: Any, attempts: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": run.id,
        "trigger": run.trigger,
        "status": run.status,
        "reason": run.terminal_reason,
        "key": run.idempotency_key,
        "attempt": run.attempt,
        "deliveries": run.deliveries,
    }
    if run.status in ACTIVE:
        out.update(
            queued_at=_iso(run.queued_at), not_before=_iso(run.not_before), waiting_for=run.waiting_for
        )
    if attempts:
        out["attempts"] = [f"{a.number}:{a.status}{'/' + a.reason if a.reason else ''}" for a in attempts]
    if run.error and run.status not in ("succeeded",):
        out["error"] = run.error[:200]
    return out


def snapshot(cluster: Cluster) -> Snapshot:
    with cluster.engine.connect() as conn:
        runs = list(
            conn.execute(
                sa.text(
                    "SELECT id, idempotency_key, trigger, status, terminal_reason, attempt, deliveries, "
                    "logical_time, created_at, queued_at, started_at, finished_at, not_before, waiting_for, "
                    "event, error FROM runs"
                )
            )
        )
        attempts: dict[str, list[Any]] = defaultdict(list)
        for a in conn.execute(
            sa.text(
                "SELECT run_id, number, status, reason, worker, started_at, finished_at, "
                "heartbeat_at FROM attempts ORDER BY run_id, number"
            )
        ):
            attempts[a.run_id].append(a)
        alerts = list(
            conn.execute(
                sa.text(
                    "SELECT id, kind, state, dedupe_key, run_id, trigger, attempt, created_at FROM alerts"
                )
            )
        )
        ledger = list(
            conn.execute(
                sa.text("SELECT trigger, first_slot, last_slot, count, reason, recorded_at FROM missed_slots")
            )
        )
        outbox = list(
            conn.execute(sa.text("SELECT id, run_id, sink, key, seq, status, attempts FROM outbox"))
        )
    return Snapshot(runs, attempts, alerts, ledger, outbox)


class Checker:
    """Judges one scenario. `sched_offset_s`: how far the schedulers' clock runs ahead."""

    def __init__(
        self,
        cluster: Cluster,
        driven: Driven,
        *,
        sched_offset_s: float = 0.0,
        catchup_window_s: float = 3600.0,
    ) -> None:
        self.cluster = cluster
        self.driven = driven
        self.offset = timedelta(seconds=sched_offset_s)
        self.window = timedelta(seconds=catchup_window_s)
        self.cutoff = datetime.fromtimestamp(driven.ended, UTC) + self.offset
        self.first_cron: dict[str, datetime] = {}

    # -- which runs are judged ---------------------------------------------------------

    def judged(self, snap: Snapshot) -> list[Any]:
        """Cron runs for slots up to the end of driving (crons keep firing while the checks
        wait; later slots are not judged), and every other run."""
        out = []
        for r in snap.runs:
            if r.idempotency_key.startswith("cron:"):
                if r.logical_time is not None and r.logical_time <= self.cutoff:
                    out.append(r)
            else:
                out.append(r)
        return out

    # -- waiting until the data can be judged ------------------------------------------

    def pending_work(self, snap: Snapshot) -> list[str]:
        """What is still in flight; empty once everything the scenario drove has settled."""
        runs = self.judged(snap)
        todo = []
        active = [r for r in runs if r.status in ACTIVE]
        if active:
            todo.append(f"{len(active)} runs not terminal")
        for name in PER_SECOND:
            missing_slots = self._missing_slots(snap, [r for r in runs if r.trigger == name], name)
            if missing_slots:
                todo.append(f"{name}: {len(missing_slots)} slots without a run")
        keys = Counter(_row_key(r) for r in runs if r.trigger == "rows")
        missing = [i for i in self.driven.rows if keys[i] == 0]
        if missing:
            todo.append(f"{len(missing)} rows without a run")
        for name in ALERT_TRIGGERS:
            got = sum(1 for r in runs if r.trigger == name)
            if got < 2 * self.driven.episodes.get(name, 0):
                todo.append(f"{name}: {got} of {2 * self.driven.episodes[name]} runs")
        judged_ids = {r.id for r in runs}
        undelivered = [o for o in snap.outbox if o.run_id in judged_ids and o.status == "pending"]
        if undelivered:
            todo.append(f"{len(undelivered)} outbox rows undelivered")
        unresolved = self._stalls(snap, runs)[2]
        if unresolved:
            todo.append(f"{len(unresolved)} stalls of recovered runs not resolved")
        return todo

    def _missing_slots(self, snap: Snapshot, mine: list[Any], name: str) -> list[datetime]:
        slots = {r.logical_time for r in mine}
        if not slots:
            return []
        covered = {
            g.first_slot + timedelta(seconds=i)
            for g in snap.ledger
            if g.trigger == name
            for i in range(g.count)
        }
        first, last = min(slots), self.cutoff.replace(microsecond=0) - timedelta(seconds=2)
        return [
            s
            for i in range(int((last - first).total_seconds()) + 1)
            if (s := first + timedelta(seconds=i)) not in slots and s not in covered
        ]

    def converge(self, last_fault_end: float | None) -> dict[str, Any]:
        """Wait until nothing is in flight, at most TERMINAL_BOUND_S after the later of the
        last fault and the end of driving. Returns when it settled (or did not)."""
        start = max(self.driven.ended, last_fault_end or 0.0)
        deadline = start + TERMINAL_BOUND_S
        todo: list[str] = ["not looked yet"]
        while True:
            try:
                todo = self.pending_work(snapshot(self.cluster))
            except sa.exc.OperationalError as exc:  # the database is still coming back
                todo = [f"database: {str(exc).splitlines()[0]}"]
            if not todo or time.time() >= deadline:
                break
            time.sleep(0.5)
        settled = not todo
        return {
            "settled": settled,
            "settled_after_last_fault_s": round(time.time() - start, 1) if settled else None,
            "in_flight": todo,
        }

    # -- the invariants ----------------------------------------------------------------

    def check(self) -> tuple[dict[str, Any], list[Violation]]:
        snap = snapshot(self.cluster)
        runs = self.judged(snap)
        v: list[Violation] = []
        figures: dict[str, Any] = {"lost": 0, "duplicates": 0}
        firings = self._cron(snap, runs, v, figures)
        firings += self._rows(runs, v, figures)
        firings += self._episodes(runs, v, figures)
        figures["firings"] = firings
        figures["runs"] = len(runs)
        figures["by_status"] = dict(
            Counter(f"{r.status}/{r.terminal_reason}" if r.terminal_reason else r.status for r in runs)
        )
        self._terminal(snap, runs, v, figures)
        self._sinks(snap, runs, v, figures)
        self._alerts(snap, runs, v, figures)
        self._recovery(snap, runs, figures)
        return figures, v

    def _cron(self, snap: Snapshot, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> int:
        """Per-second crons with catchup="all": one run per slot from the first to the end
        of driving; ledger entries only for slots older than the catch-up window."""
        expected_total = 0
        for name in PER_SECOND:
            mine = [r for r in runs if r.trigger == name]
            slots = Counter(r.logical_time for r in mine)
            ledger = [g for g in snap.ledger if g.trigger == name]
            if not slots:
                v.append(Violation("one-run-per-slot", f"{name}: no run at all"))
                continue
            first = min(slots)
            last = self.cutoff.replace(microsecond=0) - timedelta(seconds=2)  # tick latency
            expected = [first + timedelta(seconds=i) for i in range(int((last - first).total_seconds()) + 1)]
            covered: set[datetime] = set()
            for g in ledger:
                legal = g.last_slot < g.recorded_at - self.window
                span = {g.first_slot + timedelta(seconds=i) for i in range(g.count)}
                covered |= span
                if not legal:
                    v.append(
                        Violation(
                            "one-run-per-slot",
                            f"{name}: missed-ledger entry inside the catch-up window "
                            f"({_iso(g.first_slot)}..{_iso(g.last_slot)}, {g.count} slots, "
                            f"{g.reason}, recorded {_iso(g.recorded_at)})",
                            count=g.count,
                        )
                    )
            dupes = [r for r in mine if slots[r.logical_time] > 1]
            if dupes:
                figures["duplicates"] += len(dupes) - len({r.logical_time for r in dupes})
                v.append(
                    Violation(
                        "one-run-per-slot",
                        f"{name}: slots with more than one run",
                        [brief(r) for r in dupes],
                        len(dupes),
                    )
                )
            both = [r for r in mine if r.logical_time in covered]
            if both:
                v.append(
                    Violation(
                        "one-run-per-slot",
                        f"{name}: slots both run and in the ledger",
                        [brief(r) for r in both],
                        len(both),
                    )
                )
            expected_total += len((set(expected) | set(slots)) - covered)
            gaps = [s for s in expected if s not in slots and s not in covered]
            if gaps:
                figures["lost"] += len(gaps)
                spans = _spans(gaps)
                v.append(
                    Violation(
                        "one-run-per-slot",
                        f"{name}: {len(gaps)} slots have no run and no ledger entry: "
                        + ", ".join(f"{_iso(a)}..{_iso(b)} ({n})" for a, b, n in spans[:6]),
                        count=len(gaps),
                    )
                )
        return expected_total

    def _rows(self, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> int:
        mine = [r for r in runs if r.trigger == "rows"]
        per_row: dict[Any, list[Any]] = defaultdict(list)
        for r in mine:
            per_row[_row_key(r)].append(r)
        inserted = set(self.driven.rows)
        lost = sorted(i for i in inserted if i not in per_row)
        if lost:
            figures["lost"] += len(lost)
            v.append(
                Violation(
                    "one-run-per-row",
                    f"{len(lost)} rows have no run (ids {lost[:10]}{'...' if len(lost) > 10 else ''})",
                    count=len(lost),
                )
            )
        dupes = [r for k, rs in per_row.items() if len(rs) > 1 for r in rs]
        if dupes:
            figures["duplicates"] += len(dupes) - len({_row_key(r) for r in dupes})
            v.append(
                Violation(
                    "one-run-per-row", "rows with more than one run", [brief(r) for r in dupes], len(dupes)
                )
            )
        strays = [r for k, rs in per_row.items() if k not in inserted for r in rs]
        if strays:
            v.append(
                Violation(
                    "one-run-per-row",
                    "runs for rows the test never inserted",
                    [brief(r) for r in strays],
                    len(strays),
                )
            )
        return len(inserted)

    def _episodes(self, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> int:
        total = 0
        for name in ALERT_TRIGGERS:
            episodes = self.driven.episodes.get(name, 0)
            total += 2 * episodes
            mine = [r for r in runs if r.trigger == name]
            states = Counter((r.event or {}).get("state") for r in mine)
            for state in ("firing", "resolved"):
                got = states.get(state, 0)
                if got < episodes:
                    figures["lost"] += episodes - got
                    v.append(
                        Violation(
                            "one-run-per-episode",
                            f"{name}: {episodes} episodes driven, {got} {state} runs",
                            [brief(r) for r in mine if (r.event or {}).get("state") == state],
                            episodes - got,
                        )
                    )
                elif got > episodes:
                    figures["duplicates"] += got - episodes
                    v.append(
                        Violation(
                            "one-run-per-episode",
                            f"{name}: {episodes} episodes driven, {got} {state} runs",
                            [brief(r) for r in mine if (r.event or {}).get("state") == state],
                            got - episodes,
                        )
                    )
        return total

    def _terminal(self, snap: Snapshot, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        stuck = [r for r in runs if r.status in ACTIVE]
        figures["stuck"] = len(stuck)
        if stuck:
            v.append(
                Violation(
                    "terminal-within-bound",
                    f"{len(stuck)} runs not terminal {TERMINAL_BOUND_S:.0f}s after the last fault",
                    [brief(r, snap.attempts.get(r.id)) for r in stuck],
                    len(stuck),
                )
            )
        gave_up = [
            r
            for r in runs
            if r.status not in ACTIVE
            and r.status != "succeeded"
            and not (r.status == "skipped" and r.terminal_reason == "overlap" and r.trigger in SKIP_TRIGGERS)
        ]
        figures["not_succeeded"] = len(gave_up)
        if gave_up:
            v.append(
                Violation(
                    "no-quiet-failure",
                    "runs ended without success although the agent only fails on purpose, once",
                    [brief(r, snap.attempts.get(r.id)) for r in gave_up],
                    len(gave_up),
                )
            )

    def _sinks(self, snap: Snapshot, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        hook = self.cluster.hook is not None
        sinks = ("effects", "events", "hook") if hook else ("effects", "events")
        by_run: dict[str, list[Any]] = defaultdict(list)
        for o in snap.outbox:
            by_run[o.run_id].append(o)
        ok = [r for r in runs if r.status == "succeeded"]
        missing_rows, double_rows, stray_rows = [], [], []
        for r in ok:
            per_sink = Counter(o.sink for o in by_run.get(r.id, []))
            if any(per_sink[s] == 0 for s in sinks):
                missing_rows.append(brief(r))
            if any(n > 1 for n in per_sink.values()):
                double_rows.append(brief(r))
        for r in runs:
            if r.status != "succeeded" and by_run.get(r.id):
                stray_rows.append(brief(r))
        for label, found in (
            ("succeeded runs without their outbox rows", missing_rows),
            ("runs whose outbox rows were committed twice", double_rows),
            ("outbox rows of runs that did not succeed", stray_rows),
        ):
            if found:
                v.append(Violation("effects-exactly-once", label, found, len(found)))
        judged = {r.id for r in runs}
        undelivered = [o for o in snap.outbox if o.run_id in judged and o.status != "delivered"]
        if undelivered:
            v.append(
                Violation(
                    "effects-exactly-once",
                    "outbox rows not delivered",
                    [
                        {"entry": o.id, "sink": o.sink, "status": o.status, "attempts": o.attempts}
                        for o in undelivered
                    ],
                    len(undelivered),
                )
            )
        figures["effects_lost"] = 0
        figures["effects_duplicated"] = 0
        self._effects_table(ok, v, figures)
        self._events_stream(snap, ok, v, figures)
        if hook:
            self._hook(snap, ok, v, figures)
        figures["lost"] += figures["effects_lost"]
        figures["duplicates"] += figures["effects_duplicated"]
        self._executions(runs, v, figures)

    def _effects_table(self, ok: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        with self.cluster.data.connect() as conn:
            try:
                rows = {
                    r.effect_key: r
                    for r in conn.execute(
                        sa.text(f"SELECT effect_key, seq, entry_id FROM {self.cluster.effects_table}")
                    )
                }
            except sa.exc.ProgrammingError:
                rows = {}
        missing = [brief(r) for r in ok if r.idempotency_key not in rows]
        twice = [
            dict(brief(r), seq=rows[r.idempotency_key].seq)
            for r in ok
            if r.idempotency_key in rows and rows[r.idempotency_key].seq != 1
        ]
        wrong = [
            dict(brief(r), entry=rows[r.idempotency_key].entry_id)
            for r in ok
            if r.idempotency_key in rows and not rows[r.idempotency_key].entry_id.startswith(r.id + ":")
        ]
        figures["effects_lost"] += len(missing)
        figures["effects_duplicated"] += len(twice)
        for label, found in (
            ("SQL upsert sink: effect missing", missing),
            ("SQL upsert sink: effect written more than once (seq > 1)", twice),
            ("SQL upsert sink: effect from another run", wrong),
        ):
            if found:
                v.append(Violation("effects-exactly-once", label, found, len(found)))

    def _events_stream(
        self, snap: Snapshot, ok: list[Any], v: list[Violation], figures: dict[str, Any]
    ) -> None:
        stream = stream_entries(self.cluster.shared, f"{self.cluster.prefix}events")
        per_key: dict[str, list[str]] = defaultdict(list)
        for _, fields in stream:
            per_key[fields[b"key"].decode()].append(fields[b"entry_id"].decode())
        missing = [brief(r) for r in ok if not per_key.get(r.idempotency_key)]
        twice = [
            dict(brief(r), entries=per_key[r.idempotency_key])
            for r in ok
            if len(per_key.get(r.idempotency_key, [])) > 1
        ]
        figures["effects_lost"] += len(missing)
        figures["effects_duplicated"] += len(twice)
        for label, found in (
            ("Redis stream sink: event missing", missing),
            ("Redis stream sink: event appended more than once", twice),
        ):
            if found:
                v.append(Violation("effects-exactly-once", label, found, len(found)))

    def _hook(self, snap: Snapshot, ok: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        """The webhook receiver dedupes on the entry id (Idempotency-Key): redeliveries are
        at-least-once and counted; per key, first arrivals must come in sequence order."""
        assert self.cluster.hook is not None
        received = self.cluster.hook.snapshot()
        seen: Counter[str] = Counter(e["id"] for e in received)
        figures["sink_redeliveries"] = sum(n - 1 for n in seen.values())
        expected = {o.id: o for o in snap.outbox if o.sink == "hook" and o.run_id in {r.id for r in ok}}
        missing = [
            {"entry": i, "run_id": o.run_id, "key": o.key, "seq": o.seq}
            for i, o in expected.items()
            if i not in seen
        ]
        figures["effects_lost"] += len(missing)
        if missing:
            v.append(
                Violation("effects-exactly-once", "webhook sink: entry never received", missing, len(missing))
            )
        first: dict[str, list[tuple[int, str]]] = defaultdict(list)
        done: set[str] = set()
        for e in received:
            if e["id"] not in done:
                done.add(e["id"])
                first[e["key"]].append((e["seq"], e["id"]))
        out_of_order = []
        for key, seqs in first.items():
            for (a, ida), (b, idb) in itertools.pairwise(seqs):
                if b <= a:
                    out_of_order.append({"key": key, "after": f"{ida} seq {a}", "came": f"{idb} seq {b}"})
        if out_of_order:
            v.append(
                Violation(
                    "effects-exactly-once",
                    "webhook sink: an older entry arrived after a newer one (per-key order)",
                    out_of_order,
                    len(out_of_order),
                )
            )

    def _executions(self, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        keys = [f"{self.cluster.prefix}exec:{r.id}" for r in runs]
        counts: list[int] = []
        for i in range(0, len(keys), 500):
            counts += [int(c or 0) for c in self.cluster.shared.mget(keys[i : i + 500])]
        failed_keys = [f"{self.cluster.prefix}failed-on-purpose:{r.id}" for r in runs]
        failed: list[int] = []
        for i in range(0, len(failed_keys), 500):
            failed += [int(c or 0) for c in self.cluster.shared.mget(failed_keys[i : i + 500])]
        executed = {r.id: n for r, n in zip(runs, counts, strict=True)}
        # executions beyond one per run, not counting the first attempts failed on purpose
        extra = [n - 1 - f for n, f in zip(counts, failed, strict=True)]
        figures["executions"] = sum(counts)
        figures["failed_on_purpose"] = sum(failed)
        figures["re_executions"] = sum(x for x in extra if x > 0)
        figures["re_executed_runs"] = sum(1 for x in extra if x > 0)
        never = [brief(r) for r in runs if r.status == "succeeded" and executed[r.id] == 0]
        if never:
            v.append(
                Violation(
                    "effects-exactly-once", "succeeded runs whose agent never executed", never, len(never)
                )
            )

    def _stalls(self, snap: Snapshot, runs: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        """(stalled attempts, their firing alerts, recovered runs whose stall is unresolved)."""
        status = {r.id: r.status for r in runs}
        stalls = [a for rid in status for a in snap.attempts.get(rid, []) if a.status in STALL_STATES]
        firing = [al for al in snap.alerts if al.kind == "run_stalled" and al.state == "firing"]
        resolved_keys = {
            al.dedupe_key for al in snap.alerts if al.kind == "run_stalled" and al.state == "resolved"
        }
        unresolved = [
            al
            for al in firing
            if status.get(al.run_id or "") == "succeeded" and al.dedupe_key not in resolved_keys
        ]
        return stalls, firing, unresolved

    def _alerts(self, snap: Snapshot, runs: list[Any], v: list[Violation], figures: dict[str, Any]) -> None:
        stalls, firing, unresolved = self._stalls(snap, runs)
        by_run = {r.id: r for r in runs}
        per_attempt: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for al in firing:
            per_attempt[(al.run_id, al.attempt)].append(al)
        unalerted = [
            dict(brief(by_run[a.run_id]), stalled_attempt=f"{a.number}:{a.status}")
            for a in stalls
            if not per_attempt.get((a.run_id, a.number))
        ]
        twice = [
            dict(
                brief(by_run[a.run_id]),
                stalled_attempt=a.number,
                alerts=len(per_attempt[(a.run_id, a.number)]),
            )
            for a in stalls
            if len(per_attempt.get((a.run_id, a.number), [])) > 1
        ]
        stalled_ids = {(a.run_id, a.number) for a in stalls}
        false_alarms = [
            {
                "run_id": al.run_id,
                "attempt": al.attempt,
                "attempt_status": next(
                    (a.status for a in snap.attempts.get(al.run_id, []) if a.number == al.attempt), None
                ),
            }
            for al in firing
            if al.run_id in by_run and (al.run_id, al.attempt) not in stalled_ids
        ]
        figures["stalls"] = len(stalls)
        figures["stalls_alerted"] = len(stalls) - len(unalerted)
        figures["stalls_unalerted"] = len(unalerted)
        figures["stall_resolves_missing"] = len(unresolved)
        figures["alerts"] = dict(Counter(f"{a.kind}/{a.state}" for a in snap.alerts))
        for label, found in (
            ("stalled attempts without a run_stalled alert", unalerted),
            ("stalled attempts alerted more than once", twice),
            ("run_stalled alerts for attempts that did not stall", false_alarms),
            (
                "recovered runs whose run_stalled never resolved",
                [dict(brief(by_run[al.run_id]), alert=al.dedupe_key) for al in unresolved],
            ),
        ):
            if found:
                v.append(Violation("one-alert-per-stall", label, found, len(found)))

    def _recovery(self, snap: Snapshot, runs: list[Any], figures: dict[str, Any]) -> None:
        """How long a run waited to be (re)started: from its creation, or from the end of
        its previous attempt, to the start of the next one."""
        first: tuple[float, str | None] = (0.0, None)
        again: tuple[float, str | None] = (0.0, None)
        for r in runs:
            previous, stalled = r.created_at, False
            for a in snap.attempts.get(r.id, []):
                if previous is not None and a.started_at is not None:
                    if previous - a.started_at > self.offset / 2 > timedelta(0):
                        previous -= self.offset  # created by a scheduler whose clock jumped
                    wait = (a.started_at - previous).total_seconds()
                    if a.number == 1 and wait > first[0]:
                        first = (wait, r.id)
                    elif stalled and wait > again[0]:
                        again = (wait, r.id)
                # after a stall, the next attempt waits from the last sign of life of this one
                previous, stalled = a.heartbeat_at or a.started_at, a.status in STALL_STATES
        figures["max_wait_to_start_s"] = round(first[0], 2)
        figures["max_wait_run"] = first[1]
        figures["max_wait_to_restart_s"] = round(again[0], 2)
        figures["max_restart_run"] = again[1]


def _row_key(run: Any) -> Any:
    key = (run.event or {}).get("key")
    return int(key) if isinstance(key, int | str) and str(key).isdigit() else key


def _spans(slots: list[datetime]) -> list[tuple[datetime, datetime, int]]:
    out: list[tuple[datetime, datetime, int]] = []
    for s in sorted(slots):
        if out and s - out[-1][1] == timedelta(seconds=1):
            out[-1] = (out[-1][0], s, out[-1][2] + 1)
        else:
            out.append((s, s, 1))
    return out
