"""`cron(...)`: wall-clock schedules with Debian DST rules and explicit catch-up.

Evaluation walks the slots after the persisted last slot, so downtime is
seen and handled by policy (`none`/`latest`/`all` within `catchup_window`)
rather than silently dropped (APScheduler's 1 s misfire grace) or burst.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Never

from agents import AgentSpec, CronTick
from agents.location import caller_location
from agents.options import as_timedelta, check_choice
from triggers._common import check_common, collects, fail, field_check, reject_unknown
from triggers._cronexpr import CronExpr, CronSyntaxError
from triggers.abc import (
    Evaluation,
    Firing,
    MissedGap,
    Overlap,
    Trigger,
    TriggerSpec,
    check_state,
    declare,
)

Catchup = Literal["none", "latest", "all"]
# Beyond this many due slots in one evaluation we stop enumerating and count the rest as one gap.
MAX_ENUMERATED_SLOTS = 100_000


def cron_key(trigger: str, slot: datetime) -> str:
    """The canonical idempotency key: `cron:<trigger>:<slot in UTC>`."""
    return f"cron:{trigger}:{slot.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


class CronTrigger(Trigger):
    """Slot math plus catch-up; the scheduler applies overlap."""

    kind = "cron"
    state_version = 1

    def __init__(
        self,
        expr: CronExpr,
        *,
        catchup: Catchup,
        catchup_window: timedelta,
        jitter: timedelta,
        start_deadline: timedelta,
    ) -> None:
        self.expr = expr
        self.catchup = catchup
        self.catchup_window = catchup_window
        self.jitter = jitter
        self.start_deadline = start_deadline

    def fingerprint(self) -> str:
        return f"{self.expr.expr}|{self.expr.tz}"

    def describe(self) -> dict[str, Any]:
        return {
            "expr": self.expr.expr,
            "tz": self.expr.tz,
            "catchup": self.catchup,
            "catchup_window_s": self.catchup_window.total_seconds(),
            "jitter_s": self.jitter.total_seconds(),
            "start_deadline_s": self.start_deadline.total_seconds(),
        }

    def jitter_offset(self, name: str, slot: datetime) -> timedelta:
        """A deterministic offset in [0, jitter), kept short of the next slot."""
        if not self.jitter:
            return timedelta(0)
        digest = hashlib.sha256(name.encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        gap = self.expr.next_after(slot) - slot
        return min(self.jitter, gap) * fraction  # fraction < 1: never reaches the next slot

    def next_slots(self, after: datetime, count: int) -> list[datetime]:
        """Preview: the next `count` slots after `after` (jitter not applied)."""
        out: list[datetime] = []
        for slot in self.expr.iter_after(after):
            if len(out) >= count:
                break
            out.append(slot)
        return out

    def evaluate(self, name: str, now: datetime, state: dict[str, Any] | None) -> Evaluation:
        state = check_state(state, self.state_version, self.kind)
        fp = self.fingerprint()
        if state is None or state.get("fingerprint") != fp:
            # New or changed: start from now, never replay history we never promised.
            # `since` lets the watchdog tell "late" from "before this schedule existed".
            fresh = {
                "version": self.state_version,
                "fingerprint": fp,
                "last_slot": _iso(now),
                "since": _iso(now),
            }
            return Evaluation([], fresh, self._due_at(name, now))
        last = datetime.fromisoformat(state["last_slot"])
        due: list[datetime] = []
        overflow = 0
        for slot in self.expr.iter_after(last):
            if slot + self.jitter_offset(name, slot) > now:
                break
            if len(due) >= MAX_ENUMERATED_SLOTS:
                overflow += 1
                if overflow > MAX_ENUMERATED_SLOTS:
                    break
                continue
            due.append(slot)
        if not due:
            return Evaluation([], state, self._due_at(name, last))
        run, missed = self._apply_catchup(due, now)
        firings = [
            Firing(cron_key(name, s), s, CronTick(trigger=name, scheduled_for=s, fired_at=now)) for s in run
        ]
        newest = due[-1]
        new_state = {**state, "last_slot": _iso(newest)}
        gaps = _gaps(missed, self.expr, extra=overflow)
        return Evaluation(firings, new_state, self._due_at(name, newest), gaps)

    def _due_at(self, name: str, after: datetime) -> datetime:
        slot = self.expr.next_after(after)
        return slot + self.jitter_offset(name, slot)

    def _apply_catchup(self, due: list[datetime], now: datetime) -> tuple[list[datetime], list[datetime]]:
        window_start = now - self.catchup_window
        newest = due[-1]
        if self.catchup == "all":
            run = [s for s in due if s >= window_start]
        elif self.catchup == "latest":
            run = [newest] if newest >= window_start else []
        else:  # none: only a slot that is due right now (within its start deadline) runs
            run = [newest] if now - newest <= self.start_deadline else []
        chosen = set(run)
        return run, [s for s in due if s not in chosen]


def _gaps(missed: list[datetime], expr: CronExpr, extra: int) -> list[MissedGap]:
    """Group missed slots into contiguous runs of consecutive slots."""
    gaps: list[MissedGap] = []
    for slot in missed:
        if gaps and expr.next_after(gaps[-1].last) == slot:
            g = gaps[-1]
            gaps[-1] = MissedGap(g.first, slot, g.count + 1)
        else:
            gaps.append(MissedGap(slot, slot, 1))
    if extra and gaps:
        g = gaps[-1]
        gaps[-1] = MissedGap(g.first, g.last, g.count + extra)
    return gaps


_OPTIONS = ("tz", "catchup", "catchup_window", "overlap", "jitter", "start_deadline")


@collects
def cron(
    expr: str,
    *,
    agent: AgentSpec | str,
    name: str,
    tz: str = "UTC",
    catchup: Catchup = "latest",
    catchup_window: timedelta | float = timedelta(hours=1),
    overlap: Overlap = "skip",
    jitter: timedelta | float = 0,
    start_deadline: timedelta | float = timedelta(minutes=5),
    **unknown: Never,  # mypy rejects an unknown option; at run time it gets "did you mean"
) -> TriggerSpec:
    """Run `agent` on a cron schedule: `cron("0 9 * * *", agent=digest, name="digest-9am")`."""
    location = caller_location()
    call = f"cron({expr!r}, name={name!r})"
    reject_unknown(location, call, unknown, ("expr", "agent", "name", *_OPTIONS))
    trigger_name, agent_ref, policy = check_common(location, call, name, agent, overlap)
    try:
        parsed = CronExpr(expr, tz)
    except CronSyntaxError as exc:
        field = "tz" if "time zone" in str(exc) else "expr"
        fix = (
            "use an IANA zone name"
            if field == "tz"
            else "write 5 fields, 6 with leading seconds, or an @alias; check it with "
            "`nightowl triggers next NAME`"
        )
        raise fail(location, call, field, str(exc), fix) from None
    mode = field_check(
        location,
        call,
        "catchup",
        "use 'none', 'latest' or 'all'",
        lambda: check_choice(catchup, "catchup", ("none", "latest", "all")),
    )
    window = field_check(
        location,
        call,
        "catchup_window",
        "pass a timedelta",
        lambda: as_timedelta(catchup_window, "catchup_window"),
    )
    jit = field_check(location, call, "jitter", "pass a timedelta", lambda: as_timedelta(jitter, "jitter"))
    deadline = field_check(
        location,
        call,
        "start_deadline",
        "pass a positive timedelta",
        lambda: as_timedelta(start_deadline, "start_deadline", allow_zero=False),
    )
    if jit and jit >= deadline:
        raise fail(
            location,
            call,
            "jitter",
            f"jitter {jit} must be below start_deadline {deadline}",
            "lower jitter or raise start_deadline",
        )
    source = CronTrigger(
        parsed,
        catchup=mode,  # type: ignore[arg-type]
        catchup_window=window,
        jitter=jit,
        start_deadline=deadline,
    )
    return declare(TriggerSpec(trigger_name, agent_ref, policy, location, source))
