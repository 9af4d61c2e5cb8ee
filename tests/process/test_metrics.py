"""Prometheus metrics scraped from real scheduler, watchdog and relay processes."""

from __future__ import annotations

import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import ROOT, child_env, free_port, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_long_running_processes_serve_nightowl_metrics(settings: Settings, store: Store) -> None:
    env = child_env(settings, "tests.fixtures.seconds_triggers", NIGHTOWL_LEADER_TTL="2")
    ports = {role: free_port() for role in ("scheduler", "watchdog", "relay")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", role, "--metrics-port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, port in ports.items()
    ]
    try:

        def fired() -> float:
            return scrape(ports["scheduler"]).get(
                ("nightowl_trigger_firings_total", (("kind", "cron"), ("trigger", "each-second"))), 0.0
            )

        wait_for(lambda: fired() >= 2, timeout=30, interval=0.3, message="two cron firings")
        scheduler = scrape(ports["scheduler"])
        assert scheduler[("nightowl_leader", (("role", "scheduler"),))] == 1.0
        assert scheduler[("nightowl_trigger_state", (("state", "ok"), ("trigger", "each-second")))] == 1.0
        wait_for(
            lambda: scrape(ports["watchdog"]).get(("nightowl_leader", (("role", "watchdog"),))),
            timeout=30,
            interval=0.3,
            message="the watchdog leader gauge",
        )
        relay = scrape(ports["relay"])
        assert ("nightowl_outbox_lag_seconds", ()) in relay
        names = {name for name, _ in scheduler}
        assert {"nightowl_trigger_firings_total", "nightowl_trigger_state", "nightowl_leader"} <= names
        assert all(n.startswith(("nightowl_", "python_", "process_")) for n in names)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(timeout=30) == 0
    assert store.list_runs(limit=5)


def test_prefork_worker_metrics_sum_the_pool_processes(pg_settings: Settings, pg_store: Store) -> None:
    from datetime import UTC, datetime

    from scheduler.core.clock import FakeClock
    from tests.helpers import WorkerProcess, fire_then_drain, make_service, registry_of

    port = free_port()
    worker = WorkerProcess(
        child_env(pg_settings, "tests.fixtures.seconds_triggers"),
        "prefork",
        2,
        command=[sys.executable, "-m", "scheduler.cli", "worker", "--metrics-port", str(port)],
    )
    try:
        worker.wait_ready()
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        svc = make_service(pg_settings, registry_of("tests.fixtures.seconds_triggers"), clock)
        fire_then_drain(svc, clock, pg_store, seconds=3)
        done = len(pg_store.list_runs(status="succeeded", limit=100))
        assert done >= 2

        def finished() -> float:
            return scrape(port).get(
                (
                    "nightowl_runs_finished_total",
                    (("agent", "pong"), ("reason", ""), ("status", "succeeded")),
                ),
                0.0,
            )

        wait_for(
            lambda: finished() == done, timeout=20, interval=0.3, message="the worker's finished-runs counter"
        )
        assert scrape(port).get(("nightowl_run_duration_seconds_count", (("agent", "pong"),))) == done
    finally:
        worker.stop()
