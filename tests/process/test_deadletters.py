"""Malformed or unknown messages become dead letters; the worker keeps working."""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.storage.store import Dispatch, NewRun, Store
from scheduler.worker.app import create_app
from tests.helpers import Cli, WorkerProcess, child_env, wait_for
from triggers import load

MODULE = "tests.fixtures.e2e_triggers"


def raw(publisher: Publisher, dispatch: Dispatch, **changes: object) -> str:
    """A valid message for `dispatch`, then altered the way a broken producer would."""
    message = json.loads(publisher.encode(dispatch, 0.0))
    body: bytes | None = changes.pop("body", None)  # type: ignore[assignment]
    if body is not None:
        message["body"] = base64.b64encode(body).decode()
    if "content_type" in changes:
        message["content-type"] = changes.pop("content_type")
    if "task" in changes:
        message["headers"]["task"] = changes.pop("task")
    assert not changes
    return json.dumps(message)


def test_bad_messages_are_dead_lettered_and_the_worker_survives(
    settings: Settings,
    store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
    cli: Cli,
) -> None:
    worker = start_worker(MODULE)
    publisher = Publisher(create_app(settings, load(MODULE)))
    queue = f"{prefix}agents"
    d = Dispatch("no-such-run", "echo", "agents", "every-second", 0)
    try:
        redis_client.lpush(
            queue,
            raw(
                publisher,
                d,
                content_type="application/x-python-serialize",
                body=pickle.dumps({"os": "system"}),
            ),
        )
        redis_client.lpush(queue, raw(publisher, d, body=b"{not json"))
        redis_client.lpush(queue, raw(publisher, d, task="agent.nope"))
        redis_client.lpush(queue, raw(publisher, d))  # a run id we never created
        redis_client.lpush(queue, raw(publisher, d, body=json.dumps([[1, 2], {}, {}]).encode()))
        # An oversized message (a 4 MB argument) is refused before it becomes a Redis key.
        redis_client.lpush(queue, raw(publisher, d, body=json.dumps([["x" * 4_000_000], {}, {}]).encode()))
        expected = {
            "content_disallowed": 1,
            "decode_error": 1,
            "unknown_task": 1,
            "unknown_run": 1,
            "bad_arguments": 2,
        }

        def reasons() -> dict[str, int]:
            out: dict[str, int] = {}
            for letter in store.list_dead_letters():
                out[letter.reason] = out.get(letter.reason, 0) + 1
            return out

        wait_for(lambda: reasons() == expected, timeout=30, message=f"dead letters {expected}")
        # The worker is alive and still runs good work.
        (run,) = store.commit_tick(
            [
                NewRun(
                    idempotency_key="manual:every-second:ok",
                    trigger="every-second",
                    agent="echo",
                    queue="agents",
                    event={
                        "kind": "cron",
                        "trigger": "every-second",
                        "scheduled_for": "2026-03-01T12:00:00+00:00",
                        "fired_at": "2026-03-01T12:00:00+00:00",
                    },
                    logical_time=None,
                    agent_version=None,
                )
            ],
            [],
            [],
            datetime.now(UTC),
        )
        publisher.publish([Dispatch(run.id, "echo", "agents", "every-second", 0)])
        wait_for(
            lambda: (r := store.get_run(run.id)) is not None and r.status == "succeeded",
            message="a good run after the bad ones",
        )
        assert worker.proc.poll() is None
        # Malformed messages are not left in the queue to loop.
        assert redis_client.llen(queue) == 0
    finally:
        publisher.close()
    out = cli("deadletters", "list", "--json", env=child_env(settings, MODULE))
    assert out.returncode == 0, out.stderr
    letters = json.loads(out.stdout)
    assert len(letters) == 6
    assert all(len(x["payload"] or "") <= 10_000 for x in letters)
    (pickled,) = [x for x in letters if x["reason"] == "content_disallowed"]
    assert "pickle" in str(pickled["details"])
