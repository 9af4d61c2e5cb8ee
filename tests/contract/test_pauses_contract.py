"""The pauses table on SQLite and PostgreSQL: pause, resume, the runs a resume lets go, and
the worker's park that cannot outlive a resume."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from scheduler.core.pauses import ALL, MissedOnPause, PauseRecord, PauseScope, PendingOnPause
from scheduler.core.vocabulary import RunStatus, WaitingFor
from scheduler.storage.store import Store
from tests.contract.test_storage_contract import T0, new_run

AGENT = PauseScope.AGENT


def test_pausing_twice_keeps_the_first_time_and_takes_the_new_reason(store: Store) -> None:
    store.pause(PauseRecord(PauseScope.TRIGGER, "t", T0, reason="first", paused_by="a@h"))
    again = store.pause(
        PauseRecord(
            PauseScope.TRIGGER, "t", T0 + timedelta(hours=1), reason="second", missed=MissedOnPause.RUN_LATEST
        )
    )
    assert (again.paused_at, again.reason, again.missed) == (T0, "second", MissedOnPause.RUN_LATEST)
    pauses = store.pauses()
    assert pauses.trigger("t") == again and pauses.trigger("other") is None
    assert pauses.agent("t") is None  # scopes are apart
    store.pause(PauseRecord(PauseScope.TRIGGER, ALL, T0))
    assert store.pauses().trigger("other") is not None  # `*` covers every name
    assert store.pauses().trigger("t") == again  # a name's own pause is the more specific


def test_a_paused_agents_run_parks_and_the_resume_lets_it_go(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    assert not store.park_paused(run.id, "a", T0 + timedelta(minutes=1))  # not paused: runs
    store.pause(PauseRecord(AGENT, "a", T0))
    assert store.park_paused(run.id, "a", T0 + timedelta(minutes=1))
    parked = store.get_run(run.id)
    assert parked is not None
    assert (parked.status, parked.waiting_for, parked.attempt, parked.deliveries) == (
        RunStatus.WAITING,
        WaitingFor.PAUSED,
        0,
        0,
    )
    # Nothing is due while it is paused...
    assert store.due_for_publish(T0 + timedelta(seconds=30), T0, 10) == []
    # ...and the resume makes it due at once.
    record, moved = store.resume(AGENT, "a", T0 + timedelta(seconds=10))
    assert record is not None and record.name == "a" and moved == 1
    (due,) = store.due_for_publish(T0 + timedelta(seconds=10), T0, 10)
    assert due.run_id == run.id
    assert store.resume(AGENT, "a", T0) == (None, 0)  # resuming what is not paused


def test_a_resume_does_not_release_runs_another_pause_still_holds(store: Store) -> None:
    runs = store.commit_tick([new_run("k1"), replace(new_run("k2"), agent="b")], [], [], T0)
    store.pause(PauseRecord(AGENT, ALL, T0))
    store.pause(PauseRecord(AGENT, "a", T0))
    for r, agent in zip(runs, ("a", "b"), strict=True):
        assert store.park_paused(r.id, agent, T0 + timedelta(hours=1))
    # The `*` pause still holds both when only a's own pause goes
    assert store.resume(AGENT, "a", T0)[1] == 0
    # b's run goes when `*` goes; a's stays held by its own pause again
    store.pause(PauseRecord(AGENT, "a", T0))
    assert store.resume(AGENT, ALL, T0)[1] == 1
    statuses = {r.agent: (r.status, r.not_before) for r in store.list_runs()}
    assert statuses["b"] == (RunStatus.WAITING, T0)
    assert statuses["a"] == (RunStatus.WAITING, T0 + timedelta(hours=1))


def test_skip_pending_ends_the_held_runs_skipped_paused(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    store.pause(PauseRecord(AGENT, "a", T0, pending=PendingOnPause.SKIP))
    assert store.pauses().agent("a") is not None
    assert store.pauses().agent("a").pending is PendingOnPause.SKIP  # type: ignore[union-attr]
    store.pause(PauseRecord(AGENT, "a", T0))
    assert store.park_paused(run.id, "a", T0 + timedelta(hours=1))
    assert store.resume(AGENT, "a", T0 + timedelta(seconds=5), skip_pending=True)[1] == 1
    ended = store.get_run(run.id)
    assert ended is not None
    assert (ended.status, ended.terminal_reason, ended.finished_at) == (
        RunStatus.SKIPPED,
        "paused",
        T0 + timedelta(seconds=5),
    )


def test_a_park_after_the_resume_does_not_hold_the_run(store: Store) -> None:
    """A worker whose view of the pauses is a second old must not park a run the resume
    already let go: the park checks the pause row in the same statement."""
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    store.pause(PauseRecord(AGENT, "a", T0))
    store.resume(AGENT, "a", T0)
    assert not store.park_paused(run.id, "a", T0 + timedelta(hours=1))
    loaded = store.get_run(run.id)
    assert loaded is not None and loaded.status == RunStatus.PENDING


def test_a_skip_after_the_resume_does_not_end_the_run(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    store.pause(PauseRecord(AGENT, "a", T0, pending=PendingOnPause.SKIP))
    store.resume(AGENT, "a", T0)
    assert not store.skip_paused(run.id, "a", T0)
    store.pause(PauseRecord(AGENT, ALL, T0, pending=PendingOnPause.SKIP))
    assert store.skip_paused(run.id, "a", T0)
    ended = store.get_run(run.id)
    assert ended is not None and (ended.status, ended.terminal_reason) == (RunStatus.SKIPPED, "paused")
