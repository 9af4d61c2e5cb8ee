"""From an evaluation to what a tick commits (scheduler/dispatch/firings.py): pure, no service."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from agents import AgentContext, MetricAlert, agent
from scheduler.core.vocabulary import Reason, RunStatus
from scheduler.dispatch.firings import CHUNK_SIZE, FIRST_CHUNK_SIZE, Pending, chunks, pending_for
from triggers import Evaluation, Firing, TriggerSpec, cron
from triggers.abc import forget_module

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@agent("firings-probe")
def probe(ctx: AgentContext, event: object) -> None:
    return None


SPEC: TriggerSpec = cron("* * * * *", agent=probe, name="firings-cron")
forget_module(__name__)


def _firing(i: int, value: float = 1.0) -> Firing:
    event = MetricAlert(name="m", value=value, threshold=1.0, state="firing", since=T0)
    return Firing(f"k{i}", T0 + timedelta(minutes=i), event)


def test_each_firing_becomes_a_run_and_a_moved_cron_state_is_written() -> None:
    ev = Evaluation([_firing(0), _firing(1)], {"version": 1, "last_slot": "b"}, T0)
    p = pending_for(SPEC, probe, ev, {"version": 1, "last_slot": "a"}, revision=3)
    assert [r.idempotency_key for r in p.runs] == ["k0", "k1"]
    assert all(r.agent == "firings-probe" and r.trigger == "firings-cron" for r in p.runs)
    assert p.write is not None and p.write.expected_revision == 3 and not p.write.source_failing


def test_an_unmoved_cron_state_is_not_written_again() -> None:
    state = {"version": 1, "last_slot": "a"}
    assert pending_for(SPEC, probe, Evaluation([], dict(state), T0), state, revision=3).write is None
    assert pending_for(SPEC, probe, Evaluation([], dict(state), T0), None, revision=0).write


def test_an_event_postgresql_would_refuse_is_a_failed_run_not_a_failed_chunk() -> None:
    bad = Firing(
        "nul", T0, MetricAlert(name="m\x00", value=math.inf, threshold=1.0, state="firing", since=T0)
    )
    (run,) = pending_for(SPEC, probe, Evaluation([bad], {}, T0), None, 0).runs
    assert run.status == RunStatus.FAILED and run.terminal_reason == Reason.NOT_SERIALISABLE


def test_chunks_start_small_then_fill_and_split_a_huge_catch_up() -> None:
    small = [Pending(SPEC, Evaluation([], {}, T0), [], None) for _ in range(FIRST_CHUNK_SIZE + 1)]
    sizes = [len(c) for c in chunks(small)]
    assert sizes == [FIRST_CHUNK_SIZE, 1]
    runs = pending_for(
        SPEC, probe, Evaluation([_firing(i) for i in range(CHUNK_SIZE + 7)], {"version": 1}, T0), None, 0
    )
    pieces = list(chunks([runs]))
    assert [sum(len(p.runs) for p in c) for c in pieces] == [CHUNK_SIZE, 7]
    assert pieces[0][0].write is None and pieces[0][0].final is False  # state goes last
    assert pieces[-1][-1].write is not None
