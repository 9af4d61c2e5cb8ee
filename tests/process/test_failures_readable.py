"""What the person on call reads about a run, against a real worker: `runs show` prints the
traceback with the agent's own frame first, the last heartbeat and what comes next as text
(no Python reprs); `runs logs` prints the agent's ctx.log lines per attempt, scrubbed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import Cli, WorkerProcess, follow_real_time, make_service, registry_of, wait_for

MODULE = "tests.fixtures.log_agents"


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def test_a_failed_attempt_is_readable_in_runs_show_and_runs_logs(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    from datetime import UTC, datetime

    start_worker(MODULE, NIGHTOWL_SECRETS="hunter2secret")
    run_id = cli("fire", "x-stumbles").stdout.strip()
    # The first attempt fails; while it waits for its retry, runs show says so
    wait_for(
        lambda: (pg_store.get_run(run_id) or object()).__dict__.get("waiting_for") == "retry", timeout=20
    )
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "waiting_for      retry, next attempt at" in text
    assert 'last_heartbeat   parsing {"item": 7}' in text
    assert "attempt 1 traceback:" in text
    tb = text[text.index("attempt 1 traceback:") :]
    # The agent's own frames first: the helper that raised, the agent that called it
    first = tb.index("at ") if "at " in tb else -1
    assert "ValueError: invalid literal for int() with base 10: 'not a number'" in tb
    assert (
        "tests/fixtures/log_agents.py" in tb[first : first + 400]
        and "in _parse" in tb
        and "in stumbles" in tb
    )
    assert tb.index("in stumbles") < tb.index("Traceback (most recent call last)")
    assert "{'" not in text and "datetime.datetime(" not in text  # no Python reprs
    data = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert data["last_heartbeat"]["note"] == "parsing" and data["last_heartbeat"]["details"] == {"item": 7}
    assert data["last_heartbeat"]["at"] and data["waiting_for"] == "retry", json.dumps(data["attempts"])
    assert data["attempts"][0]["traceback"].startswith("ValueError: invalid literal")
    # The retry runs (the sweeper republishes it) and succeeds
    svc = make_service(pg_settings, registry_of(MODULE, []), FakeClock(datetime.now(UTC)))

    def succeeded() -> bool:
        follow_real_time(svc.clock)  # type: ignore[arg-type]
        svc.hold_leadership()
        svc.sweep()
        run = pg_store.get_run(run_id)
        return run is not None and run.status == "succeeded"

    wait_for(succeeded, timeout=30, interval=0.2, message="the retry to succeed")
    logs = cli("runs", "logs", run_id)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    first_line = next(x.split("] ", 1)[1] for x in lines if x.startswith("[attempt 1"))
    assert first_line == "attempt 1: reading the queue"
    assert any(x.startswith("[attempt 2") and x.endswith("item 2 done") for x in lines), lines
    assert "hunter2secret" not in logs.stdout and "postgresql://agent:***@db.internal/app" in logs.stdout
    only_second = json.loads(cli("runs", "logs", run_id, "--attempt", "2", "--json").stdout)
    assert {x["attempt"] for x in only_second} == {2} and only_second[-1]["message"] == "item 2 done"
    assert [x["level"] for x in only_second[:2]] == ["INFO", "WARNING"]
    # --follow on an ended run prints what there is and returns
    assert cli("runs", "logs", run_id, "--follow").stdout == logs.stdout
    # The executor's own lines about the run are not the agent's
    assert not any("attempt 1 failed" in x or "retry at" in x for x in lines), lines
