"""Structured logs: with NIGHTOWL_LOG_FORMAT=json a worker prints one JSON object per line, and
lines from inside a run, the agent's own ctx.log included, carry run_id, trigger, agent, attempt."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.runs import fire
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from tests.helpers import WorkerProcess, registry_of, wait_for

MODULE = "tests.fixtures.log_agents"


def json_lines(output: str) -> list[dict[str, Any]]:
    out = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_agent_log_lines_carry_the_run_context_as_json(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(MODULE, NIGHTOWL_LOG_FORMAT="json")
    registry = registry_of(MODULE)
    publisher = Publisher(create_app(settings, registry))
    run_id = fire(store, publisher, registry, "x-chatty", datetime.now(UTC)).run_id
    publisher.close()

    def said_hello() -> dict[str, Any] | None:
        return next(
            (r for r in json_lines(worker.output()) if "chatty says hello" in r.get("message", "")), None
        )

    record = wait_for(said_hello, timeout=30, message="the agent's log line")
    assert isinstance(record, dict)
    assert (record["run_id"], record["agent"], record["trigger"], record["attempt"]) == (
        run_id,
        "chatty",
        "x-chatty",
        1,
    )
    assert record["level"] == "info" and record["ts"].endswith("+00:00")
