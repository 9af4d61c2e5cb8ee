"""Secrets through the alert path: a failing webhook leaves no secret in the stored alert
row (SQLite and PostgreSQL), the log, or what the receiver was sent."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from scheduler.alerts import Alert, AlertKind, AlertManager, WebhookChannel
from scheduler.core.clock import FakeClock
from scheduler.core.logs import install_scrubbing
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Store
from tests.helpers import T0
from tests.receiver import Receiver


def token() -> str:
    return f"tok{uuid.uuid4().hex}"


@pytest.fixture
def failing_receiver() -> Iterator[Receiver]:
    r = Receiver(status=500)
    yield r
    r.close()


def test_a_failing_webhook_leaves_no_secret_in_the_alert_row_or_the_log(
    store: Store,
    failing_receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_scrubbing()
    secret_path, signing = token(), token()
    url = failing_receiver.url + f"/{secret_path}"
    manager = AlertManager(
        AlertStore(store.engine),
        FakeClock(T0),
        [WebhookChannel(url, SecretStr(signing))],
        attempts=2,
        backoff_max=0.05,
    )
    caplog.set_level(logging.INFO, logger="nightowl")
    try:
        # An alert whose message quotes an error that quoted the URL (as httpx errors do)
        manager.fire(
            Alert(
                kind=AlertKind.TRIGGER_SOURCE_FAILING,
                dedupe_key="trigger_source_failing:x",
                message=f"ConnectError: cannot reach {url}",
                trigger="x",
                details={"last_error": f"HTTP 500 for url '{url}'"},
            )
        )
        assert manager.flush(timeout=30)
    finally:
        manager.close()
    (row,) = AlertStore(store.engine).history(limit=5)
    stored = json.dumps(
        {"message": row.message, "details": row.details, "channels": row.channels}, default=str
    )
    assert secret_path not in stored and signing not in stored, stored
    assert row.channels is not None
    (name,) = row.channels
    assert name == f"webhook:{failing_receiver.url.rsplit('/', 1)[0]}"
    assert row.channels[name].startswith("failed: HTTPStatusError"), row.channels
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed after 2 attempt(s)" in logged and secret_path not in logged
    # and what the receiver was sent (twice: it answered 500) carries the scrubbed message
    assert len(failing_receiver.requests) == 2
    body = failing_receiver.requests[0]["body"].decode()
    assert secret_path not in body and "/***" in body


def test_closing_while_a_channel_is_down_stops_its_retries_and_records_the_failure(
    store: Store, failing_receiver: Receiver
) -> None:
    """A watchdog stopping while its webhook is down must not wait out every backoff (it
    took 15 s on SIGTERM): the retrying delivery stops, its failure is still recorded."""
    manager = AlertManager(
        AlertStore(store.engine),
        FakeClock(T0),
        [WebhookChannel(failing_receiver.url, SecretStr("s"))],
        attempts=5,
        backoff_max=3600,  # without the stop, the fourth attempt would come after minutes
    )
    manager.fire(Alert(kind=AlertKind.RUN_DEAD, dedupe_key="run_dead:x", message="dead", run_id="x"))
    deadline = time.monotonic() + 10
    while not failing_receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    manager.close(timeout=30)
    assert 1 <= len(failing_receiver.requests) < 5
    (row,) = AlertStore(store.engine).history(limit=5)
    assert row.channels is not None
    (outcome,) = row.channels.values()
    assert str(outcome).startswith("failed"), row.channels
