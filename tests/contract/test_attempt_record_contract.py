"""What a finish records for the person on call, on SQLite and PostgreSQL: the traceback,
the time of the last heartbeat, and the agent's log lines (pruned with the run)."""

from __future__ import annotations

from datetime import timedelta

from scheduler.storage.retention import prune
from scheduler.storage.run_logs import LogLine
from scheduler.storage.store import Store
from tests.contract.test_storage_contract import FAILED, T0, new_run


def test_a_finish_keeps_the_traceback_and_the_last_progress_time(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    a = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert a is not None
    assert store.finish(
        a,
        FAILED,
        now=T0,
        error="ValueError: x",
        traceback="ValueError: x\n  at a.py:1",
        progress_at=T0 + timedelta(seconds=3),
    )
    (att,) = store.attempts_of(run.id)
    assert (att.traceback, att.progress_at) == ("ValueError: x\n  at a.py:1", T0 + timedelta(seconds=3))


def test_log_lines_are_kept_per_attempt_and_pruned_with_their_run(store: Store) -> None:
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    lines = [LogLine(1, i, T0, "INFO", f"line {i}") for i in (1, 2)] + [LogLine(2, 1, T0, "WARNING", "again")]
    # the later batch first: a follower's cursor is (attempt, seq), not the commit order
    store.record_logs(run.id, lines[2:])
    store.record_logs(run.id, lines[:2])
    assert store.logs_of(run.id) == lines
    assert [line.message for line in store.logs_of(run.id, attempt=2)] == ["again"]
    assert [line.message for line in store.logs_of(run.id, after=(1, 1))] == ["line 2", "again"]
    assert [line.message for line in store.logs_of(run.id, after=(1, 2))] == ["again"]
    a = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert a is not None and store.finish(a, FAILED, now=T0, error="x")
    assert prune(store.engine, T0 + timedelta(days=1)).runs == 1
    assert store.logs_of(run.id) == []
