"""The Python client against a real worker: fire, wait (a typed error per way of not
succeeding), get, runs, pause and resume; the async variant does the same."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from scheduler.client import AsyncClient, Client, RunFailed, RunNotFoundError, WaitTimeoutError
from scheduler.core.settings import Settings
from scheduler.ops.runs import OperationError, TriggerPausedError
from tests.helpers import WorkerProcess

MODULE = "tests.fixtures.exec_triggers"


@pytest.fixture
def client(pg_settings: Settings) -> Iterator[Client]:
    c = Client.from_settings(pg_settings, triggers=[MODULE])
    yield c
    c.close()


def test_fire_wait_get_runs_and_the_typed_errors(
    client: Client, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(MODULE, pool="threads", concurrency=2)
    ref = client.fire("x-replayable", payload={"n": 1})
    assert ref.created and ref.published
    result = client.wait(ref.run_id, timeout=30)
    assert result.result == {"replay_of": None, "payload": {"n": 1}, "manual": True}
    assert result.attempt == 1 and client.get(ref.run_id).status == "succeeded"
    # The same key twice is one run
    again = client.fire("x-replayable", key="k1")
    try:
        second = client.fire("x-replayable", key="k1").run_id
    except OperationError as exc:  # the worker already ran it: the refusal names that run
        assert again.run_id in str(exc)
    else:
        assert second == again.run_id
    # A failure raises the error of its status, with the run attached
    failing = client.fire("x-refuses")
    with pytest.raises(RunFailed) as failed:
        client.wait(failing.run_id, timeout=timedelta(seconds=30))
    assert failed.value.run.terminal_reason == "non_retryable"
    assert "retrying cannot help" in str(failed.value)
    # A run still going when the timeout passes
    slow = client.fire("x-polite-slowpoke")
    with pytest.raises(WaitTimeoutError):
        client.wait(slow.run_id, timeout=0.1)
    with pytest.raises(RunNotFoundError):
        client.get("00000000-0000-0000-0000-000000000000")
    assert {r.id for r in client.runs(agent="refuses")} == {failing.run_id}
    assert {r.agent for r in client.runs(since=timedelta(hours=1), limit=100)} >= {"replayable", "refuses"}


def test_pause_and_resume_from_code(client: Client) -> None:
    (change,) = client.pause("x-replayable", reason="from a runbook")
    assert change.as_json() == {"name": "x-replayable", "paused": True, "reason": "from a runbook"}
    with pytest.raises(TriggerPausedError):
        client.fire("x-replayable")
    assert client.fire("x-replayable", force=True).created
    (change,) = client.resume("x-replayable")
    assert not change.paused and change.changed
    assert client.fire("x-replayable").created
    client.pause(scope="agent", reason="everything")
    assert client.store.pauses().agent("refuses") is not None
    client.resume(scope="agent")
    assert client.store.pauses().records == {}


def test_the_async_client(pg_settings: Settings, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(MODULE)

    async def main() -> object:
        async with AsyncClient.from_settings(pg_settings, triggers=[MODULE]) as client:
            ref = await client.fire("x-replayable", payload="async")
            result = await client.wait(ref.run_id, timeout=30)
            info = await client.get(ref.run_id)
            assert info.status == "succeeded"
            return result.result

    assert asyncio.run(main()) == {"replay_of": None, "payload": "async", "manual": True}
