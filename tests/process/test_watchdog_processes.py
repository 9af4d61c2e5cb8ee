"""The watchdog against real workers: SIGKILL, an agent that spins, real SMTP and HTTP.

PostgreSQL only (real-time process tests run on one backend to keep the suite short).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from scheduler.alerts import AppriseChannel, WebhookChannel
from scheduler.core.clock import SystemClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import WorkerProcess, fire_run, make_watchdog, marks, registry_of, wait_for
from tests.receiver import Receiver, verify

MODULE = "tests.fixtures.stall_agents"
SECRET = "hook-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def checking(dog: Any, until: Callable[[], object], timeout: float, message: str) -> object:
    """Run the watchdog's check on the real clock until `until()` holds."""

    def step() -> object:
        dog.check()
        return until()

    return wait_for(step, timeout=timeout, interval=0.1, message=message)


def test_sigkilled_worker_is_alerted_within_the_bound_requeued_and_resolved(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    # Given a worker running a 3-second agent with heartbeat_timeout=2 s, and a watchdog
    # checking every 0.1 s (the bound is heartbeat_timeout + 2 x watchdog_interval)
    registry = registry_of(MODULE)
    dog = make_watchdog(
        pg_settings, registry, SystemClock(), channels=[WebhookChannel(receiver.url, SecretStr(SECRET))]
    )
    first = start_worker(MODULE)
    run_id = fire_run(pg_settings, pg_store, MODULE, "x-plodder")
    checking(dog, lambda: marks(redis_client, prefix, run_id), 20, "the agent to start")
    checking(
        dog,
        lambda: (pg_store.get_run(run_id) or object()).last_heartbeat,  # type: ignore[attr-defined]
        10,
        "a progress heartbeat to be saved",
    )
    # When the whole worker is SIGKILLed mid-run
    first.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    first.proc.wait(timeout=10)
    checking(dog, lambda: receiver.requests, 10, "a run_stalled alert")
    detected = receiver.requests[0]["at"] - killed_at
    # Then the alert arrives signed, names the run, and came within the bound
    request = receiver.requests[0]
    alert = request["json"]
    assert (alert["kind"], alert["state"], alert["run_id"], alert["details"]["reason"]) == (
        "run_stalled",
        "firing",
        run_id,
        "worker_lost",
    )
    assert verify(
        SECRET,
        request["headers"]["X-Nightowl-Timestamp"],
        request["body"],
        request["headers"]["X-Nightowl-Signature"],
    )
    assert detected < 2.0 + 2 * 0.1 + 1.0, detected  # + 1 s for the HTTP hop and the kill itself
    # And the run is requeued, runs on another worker (the stall is over: the alert resolves)
    # and succeeds
    second = start_worker(MODULE)
    checking(dog, lambda: len(receiver.requests) >= 2, 30, "the resolved alert")

    def succeeded() -> bool:
        found = pg_store.get_run(run_id)
        return found is not None and found.status == "succeeded"

    checking(dog, succeeded, 30, "the retry to succeed")
    run = pg_store.get_run(run_id)
    assert run is not None
    assert run.result is not None
    assert (run.result["pid"], run.result["attempt"]) == (second.proc.pid, 2)
    # the retry got the killed attempt's last progress (ctx.previous_heartbeat) to resume from
    assert isinstance(run.result["resumed_from_step"], int)
    assert [(a["kind"], a["state"]) for a in receiver.alerts()] == [
        ("run_stalled", "firing"),
        ("run_stalled", "resolved"),
    ]


def test_an_agent_that_spins_without_progress_is_revoked_retried_and_dead(
    pg_settings: Settings,
    pg_store: Store,
    redis_client: redis.Redis,
    prefix: str,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
) -> None:
    from tests.helpers import build_revoke

    registry = registry_of(MODULE)
    dog = make_watchdog(
        pg_settings,
        registry,
        SystemClock(),
        channels=[WebhookChannel(receiver.url, SecretStr(SECRET))],
        revoke=build_revoke(pg_settings, registry),
    )
    start_worker(MODULE, pool="prefork", concurrency=1)
    run_id = fire_run(pg_settings, pg_store, MODULE, "x-looper")
    # When the agent spins past progress_timeout (2 s) on each of its 2 attempts
    checking(
        dog,
        lambda: (pg_store.get_run(run_id) or object()).status == "dead",  # type: ignore[attr-defined]
        40,
        "the run to be dead",
    )
    checking(
        dog,
        lambda: {a["kind"] for a in receiver.alerts()} >= {"run_stalled", "run_dead"},
        10,
        "the run_dead alert",
    )
    # Then each attempt was stalled for no progress and its process terminated (never finished)
    assert [(a.number, a.status, a.reason) for a in pg_store.attempts_of(run_id)] == [
        (1, "stalled", "no_progress"),
        (2, "stalled", "no_progress"),
    ]
    starts = [m for m in marks(redis_client, prefix, run_id) if m.startswith("start")]
    assert [m.split(":")[1] for m in starts] == ["1", "2"]
    assert not any(m.startswith("finished") for m in marks(redis_client, prefix, run_id))
    pids = {m.split(":")[2] for m in starts}
    assert len(pids) == 2  # the first pool process was killed and replaced
    kinds = [(a["kind"], a["attempt"]) for a in receiver.alerts()]
    assert ("run_dead", 2) in kinds and ("run_stalled", 1) in kinds and ("run_stalled", 2) in kinds


def test_an_alert_by_email_through_apprise_reaches_a_real_smtp_server(
    pg_settings: Settings,
    pg_store: Store,
) -> None:
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[str] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channel = AppriseChannel(
            f"mailto://nightowl@127.0.0.1:{port}?to=oncall@example.com&from=nightowl@example.com"
            "&smtp=127.0.0.1&secure=no&user=&pass="
        )
        from scheduler.alerts import Alert, AlertKind, AlertManager
        from scheduler.storage.alert_store import AlertStore

        manager = AlertManager(
            AlertStore(pg_store.engine), SystemClock(), [channel], attempts=2, backoff_max=0.1
        )
        manager.fire(
            Alert(
                kind=AlertKind.RUN_STALLED,
                dedupe_key="run_stalled:run-42:1",
                message="run run-42 of plodder stalled on attempt 1 (worker_lost)",
                run_id="run-42",
                agent="plodder",
                attempt=1,
            )
        )
        assert manager.flush(timeout=30)
        wait_for(lambda: inbox.messages, timeout=10, message="the email")
        assert "run-42" in inbox.messages[0] and "run_stalled" in inbox.messages[0]
        manager.close()
    finally:
        controller.stop()
