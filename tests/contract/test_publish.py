"""Our pipelined wire format matches what Celery itself puts on a Redis queue."""

from __future__ import annotations

import json
from typing import Any

import redis

from scheduler.core.publish import PUBLISHED_AT_HEADER, RUN_ID_HEADER, Publisher
from scheduler.core.settings import Settings
from scheduler.storage.store import Dispatch
from scheduler.worker.app import create_app
from tests.helpers import REDIS_URL
from triggers import load


def shape(value: Any) -> Any:
    """Keys and value types, recursively: what must agree between the two messages."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def test_fast_path_matches_celery_send_task(redis_client: redis.Redis, prefix: str) -> None:
    settings = Settings(_env_file=None, redis_url=REDIS_URL, redis_prefix=prefix)
    app = create_app(settings, load(["tests.fixtures.e2e_triggers"]))
    publisher = Publisher(app)
    try:
        d = Dispatch("run-1", "echo", "agents", "every-second", 0)
        app.send_task(
            "agent.echo",
            args=["run-1"],
            queue="agents",
            argsrepr="x",
            headers={PUBLISHED_AT_HEADER: 1.0, RUN_ID_HEADER: "run-1"},
        )
        theirs = json.loads(redis_client.lpop(f"{prefix}agents"))  # type: ignore[arg-type]
        publisher.publish([d])
        ours = json.loads(redis_client.lpop(f"{prefix}agents"))  # type: ignore[arg-type]
    finally:
        publisher.close()
    theirs["properties"].pop("argsrepr", None)  # send_task also copies argsrepr into properties
    assert shape(ours) == shape(theirs) | {"headers": shape(ours["headers"])}
    assert set(ours["headers"]) == set(theirs["headers"])
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert ours["headers"]["task"] == "agent.echo"
    assert ours["headers"]["argsrepr"] == "['run-1'] trigger=every-second agent=echo attempt=1"
    assert ours["body"] != theirs["body"] or ours["headers"]["id"] != theirs["headers"]["id"]
    # The body decodes to Celery's protocol-2 triple with the run id as the only argument.
    import base64

    args, kwargs, _embed = json.loads(base64.b64decode(ours["body"]))
    assert (args, kwargs) == (["run-1"], {})
