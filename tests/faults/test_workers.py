"""Worker faults: SIGKILL mid-run, SIGKILL right after receiving messages, SIGSTOP past the
lease. Two workers, so the fleet keeps running while one is down."""

from __future__ import annotations

import base64
import json
import signal
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.faults.checks import Checker, Violation, snapshot
from tests.faults.harness import PREFIX, Cluster, wait_until
from tests.faults.scenario import Run, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def running_workers(cluster: Cluster) -> dict[str, list[str]]:
    """Worker service -> run ids it has a running attempt for."""
    with cluster.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT run_id, worker FROM attempts WHERE status = 'running'")).all()
    out: dict[str, list[str]] = {}
    for run_id, worker in rows:
        name = cluster.worker_of(worker)
        if name is not None:
            out.setdefault(name, []).append(run_id)
    return out


def _busy(run: Run) -> dict[str, list[str]]:
    """Workers with a running attempt; if none shows up within 5 s (a lull), both workers
    with no runs named, so the fault still happens at its instant."""
    try:
        return dict(
            wait_until(lambda: running_workers(run.cluster), 5, 0.02, "a worker with a running attempt")
        )
    except TimeoutError:
        return {"worker-1": [], "worker-2": []}


def _victim(run: Run, busy: dict[str, list[str]], i: int) -> str:
    """The prefork worker and the threads worker in turn, when each has a running attempt."""
    preferred = ("worker-1", "worker-2")[i % 2]
    return preferred if preferred in busy else run.rng.choice(sorted(busy))


def test_no_fault(request: pytest.FixtureRequest) -> None:
    """The control: the same load with no fault; every invariant must hold."""
    run_scenario(
        "no_fault",
        seed=1,
        fault=lambda run: None,
        summary="none (control)",
        expected="every firing runs once, every effect lands once",
    )


def _kill_mid_run(run: Run) -> None:
    c = run.cluster
    for i in range(3):
        run.at(5 + i * 8 + run.rng.uniform(0, 3))
        busy = _busy(run)
        victim = _victim(run, busy, i)
        event = c.faults.begin("worker SIGKILL mid-run", worker=victim, runs=busy[victim])
        c.services[victim].kill()
        time.sleep(run.rng.uniform(0.5, 2.0))
        c.services[victim].start()
        c.wait_worker_ready(victim)
        c.faults.end(event)


def test_worker_kill_mid_run() -> None:
    run_scenario(
        "worker_kill_mid_run",
        seed=101,
        fault=_kill_mid_run,
        summary="worker SIGKILLed mid-run (3 times), restarted",
        expected="its running attempts stall (worker_lost), are alerted, retried on the other "
        "worker within heartbeat_timeout + sweep, and resolved",
    )


def unacked_runs(cluster: Cluster) -> list[str]:
    """Run ids of messages a worker has received and not acknowledged (kombu's unacked)."""
    client = cluster.redis.client()
    try:
        raw = client.hvals(f"{PREFIX}unacked")
    finally:
        client.close()
    ids = []
    for value in raw:
        try:
            message = json.loads(value)[0]
            args = json.loads(base64.b64decode(message["body"]))[0]
            ids.append(str(args[0]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return ids


def _not_started(cluster: Cluster, run_ids: list[str]) -> list[str]:
    if not run_ids:
        return []
    with cluster.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id FROM runs WHERE status = 'queued' AND id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": run_ids},
        ).all()
    return [r[0] for r in rows]


def _kill_after_receive(run: Run) -> None:
    c = run.cluster
    for i in range(3):
        run.at(5 + i * 8 + run.rng.uniform(0, 2))
        run.driver.burst(40)
        try:
            received = wait_until(
                lambda: _not_started(c, unacked_runs(c)),
                10,
                0.005,
                "a received message whose attempt has not started",
            )
        except TimeoutError:
            received = []  # not caught in the window this time: the kill still happens
        event = c.faults.begin("workers SIGKILLed after receiving", received=received)
        for name in ("worker-1", "worker-2"):
            c.services[name].kill()
        time.sleep(run.rng.uniform(0.5, 1.5))
        for name in ("worker-1", "worker-2"):
            c.services[name].start()
        for name in ("worker-1", "worker-2"):
            c.wait_worker_ready(name)
        c.faults.end(event)
    run.figures["received_not_started"] = sum(len(e["received"]) for e in c.faults.events)


def _stranded_wait(
    cluster: Cluster, judge: Checker, figures: dict[str, Any], violations: list[Violation]
) -> None:
    """How long each message received but not started at a kill waited for its attempt."""
    snap = snapshot(cluster)
    waits = []
    for event in cluster.faults.events:
        for run_id in event.get("received", []):
            # the first attempt that started after the kill (one may have begun just before it,
            # between the probe and the kill: then this is its retry)
            started = [
                a.started_at.timestamp()
                for a in snap.attempts.get(run_id, [])
                if a.started_at and a.started_at.timestamp() >= event["start"]
            ]
            if started:
                waits.append(min(started) - event["start"])
    figures["stranded_runs"] = len(waits)
    figures["stranded_wait_max_s"] = round(max(waits), 2) if waits else None


def test_worker_kill_after_receive() -> None:
    run_scenario(
        "worker_kill_after_receive",
        seed=102,
        fault=_kill_after_receive,
        extra=_stranded_wait,
        summary="both workers SIGKILLed right after receiving messages (3 times)",
        expected="messages received but not started are republished within the lost-message "
        "bound (not after the 2 h visibility timeout); running ones are retried",
    )


def _stop_past_lease(run: Run) -> None:
    c = run.cluster
    for i in range(2):
        run.at(5 + i * 12 + run.rng.uniform(0, 2))
        busy = _busy(run)
        victim = _victim(run, busy, i)
        event = c.faults.begin("worker SIGSTOP past its lease", worker=victim, runs=busy[victim])
        c.services[victim].signal(signal.SIGSTOP)
        try:
            time.sleep(8)  # heartbeat_timeout is 3 s
        finally:
            c.services[victim].signal(signal.SIGCONT)
        c.faults.end(event)


def test_worker_stop_past_lease() -> None:
    run_scenario(
        "worker_stop_past_lease",
        seed=103,
        fault=_stop_past_lease,
        summary="worker SIGSTOPped 8 s (past its 3 s lease), then SIGCONT (twice)",
        expected="its attempts stall and are alerted, the runs complete on the other worker; "
        "the woken worker's commit is fenced out, the stall stays alerted and resolves",
    )
