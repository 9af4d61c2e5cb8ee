"""`fire` the way a user of Celery's `apply_async().get()` or Airflow's `dags trigger`
expects, against a real worker: a cron trigger's agent gets the CronTick its trigger makes,
`--wait` blocks and its exit code says whether the agent succeeded, `runs wait` likewise."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import Cli, WorkerProcess

MODULES = "tests.fixtures.e2e_triggers,tests.fixtures.exec_triggers"


@pytest.fixture
def cli_triggers() -> str:
    return MODULES


def test_fire_wait_on_a_cron_trigger_gives_the_agent_a_manual_cron_tick(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULES)
    # The echo agent is typed `event: CronTick` and returns event.scheduled_for
    out = cli("fire", "every-second", "--slot", "2026-03-01T03:00:00Z", "--wait", "--timeout", "30", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "succeeded" and data["terminal_reason"] is None
    assert data["result"]["slot"] == "2026-03-01T03:00:00+00:00"
    run = pg_store.get_run(data["run_id"])
    assert run is not None
    assert run.event["kind"] == "cron" and run.event["manual"] is True and run.event["fired_by"]
    assert run.logical_time is not None and run.logical_time.isoformat() == "2026-03-01T03:00:00+00:00"
    # Without --slot the slot is now; the text form prints the run and its result
    out = cli("fire", "every-second", "--wait")
    assert out.returncode == 0, out.stderr
    assert " succeeded " in out.stdout and '"slot"' in out.stdout, out.stdout
    # --slot must carry an offset
    bad = cli("fire", "every-second", "--slot", "2026-03-01T03:00:00")
    assert bad.returncode == 2 and "offset" in bad.stderr, bad.stderr


def test_wait_exits_non_zero_when_the_run_does_not_succeed(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    # A run that fails: --wait prints it and exits 1
    out = cli("fire", "x-refuses", "--wait", "--timeout", "5", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)  # no worker yet: the timeout
    assert "is still queued after 5s" in out.stderr, out.stderr
    start_worker(MODULES)
    run_id = pg_store.list_runs()[0].id
    out = cli("runs", "wait", run_id, "--timeout", "30", "--json")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert (data["status"], data["terminal_reason"]) == ("failed", "non_retryable")
    assert "retrying cannot help" in data["error"]
    ok = cli("fire", "every-second", "--json")
    run = json.loads(ok.stdout)["run_id"]
    assert cli("runs", "wait", run, "--timeout", "30").returncode == 0
    missing = cli("runs", "wait", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no run with id" in missing.stderr
