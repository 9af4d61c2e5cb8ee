"""`nightowl dev`'s console on a real store: a retry it never saw waiting is still shown."""

from __future__ import annotations

from datetime import timedelta

from scheduler.cli.dev_console import DevConsole
from scheduler.core.verdict import SUCCEEDED
from scheduler.storage.store import Store
from tests.contract.test_storage_contract import RETRY, T0, new_run


def test_a_retry_shorter_than_the_poll_is_printed_from_the_attempts(store: Store) -> None:
    lines: list[str] = []
    console = DevConsole(store, echo=lines.append, now=lambda: T0 - timedelta(minutes=1))
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    first = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert first is not None
    assert store.finish(
        first,
        RETRY,
        now=T0 + timedelta(seconds=1),
        error="RuntimeError: upstream",
        error_class="RuntimeError",
    )
    # The console polls only now: the retry's wait is already over.
    second = store.begin_attempt(run.id, "w1", None, T0 + timedelta(seconds=32), agent="a")
    assert second is not None
    assert store.finish(second, SUCCEEDED, now=T0 + timedelta(seconds=33), result="ok")
    console.step()
    console.step()  # a second poll prints nothing twice
    retried = [line for line in lines if "attempt 1 failed, retry at 12:00:32" in line]
    assert len(retried) == 1, lines
    assert retried[0].endswith(" RuntimeError: upstream"), retried
    assert "RuntimeError: RuntimeError" not in retried[0], retried  # the type once, not twice
    assert any(": succeeded after 2 attempts" in line for line in lines), lines
    assert lines.index(retried[0]) < next(i for i, line in enumerate(lines) if "succeeded" in line)


def test_a_retry_seen_waiting_is_not_printed_again(store: Store) -> None:
    lines: list[str] = []
    console = DevConsole(store, echo=lines.append, now=lambda: T0 - timedelta(minutes=1))
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    first = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert first is not None
    assert store.finish(first, RETRY, now=T0 + timedelta(seconds=1), error="RuntimeError: upstream")
    console.step()  # sees the run waiting for its retry
    second = store.begin_attempt(run.id, "w1", None, T0 + timedelta(seconds=32), agent="a")
    assert second is not None
    assert store.finish(second, SUCCEEDED, now=T0 + timedelta(seconds=33), result="ok")
    console.step()
    assert sum("attempt 1 failed, retry at" in line for line in lines) == 1, lines


def test_a_deferral_shorter_than_the_poll_is_printed_from_the_attempts(store: Store) -> None:
    from agents import ProviderUnavailable
    from scheduler.core.verdict import deferred

    lines: list[str] = []
    console = DevConsole(store, echo=lines.append, now=lambda: T0 - timedelta(minutes=1))
    (run,) = store.commit_tick([new_run("k1")], [], [], T0)
    first = store.begin_attempt(run.id, "w1", None, T0, agent="a")
    assert first is not None
    assert store.finish(first, deferred(ProviderUnavailable("p", 0.0)), now=T0)
    second = store.begin_attempt(run.id, "w1", None, T0 + timedelta(minutes=5), agent="a")
    assert second is not None
    assert store.finish(second, SUCCEEDED, now=T0 + timedelta(minutes=5), result="ok")
    console.step()
    console.step()
    waits = [line for line in lines if "waiting/provider_unavailable until" in line]
    assert len(waits) == 1 and "deferral 1, not counted as an attempt" in waits[0], lines
    assert any("succeeded after 1 deferral" in line for line in lines), lines
