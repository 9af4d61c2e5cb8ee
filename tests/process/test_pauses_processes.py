"""The kill switch through the CLI, against a real worker process: a paused agent's runs wait
without an attempt and start on resume; --skip-pending ends them; --cancel-running stops
what runs; a paused trigger refuses `fire` unless --force; listings show it all."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.models import Run
from scheduler.storage.store import Store
from tests.helpers import Cli, WorkerProcess, follow_real_time, make_service, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def fired(cli: Cli, trigger: str, *extra: str) -> str:
    out = cli("fire", trigger, "--json", *extra)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["run_id"])


def sweeper(settings: Settings) -> Callable[[], object]:
    """The scheduler's sweeper (it republishes the runs a resume let go), on real time."""
    clock = FakeClock(datetime.now(UTC))
    svc = make_service(settings, registry_of(MODULE, []), clock)

    def sweep() -> object:
        follow_real_time(clock)
        svc.hold_leadership()
        return svc.sweep()

    return sweep


def run_of(store: Store, run_id: str) -> Run:
    run = store.get_run(run_id)
    assert run is not None
    return run


def finished(store: Store, run_id: str, timeout: float = 20) -> Run:
    def done() -> Run | None:
        run = run_of(store, run_id)
        return run if run.finished_at is not None else None

    result = wait_for(done, timeout=timeout, interval=0.2, message=f"run {run_id} to end")
    assert isinstance(result, Run)
    return result


def test_a_paused_agent_holds_its_runs_and_the_resume_starts_them(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    out = cli("agents", "pause", "echo", "--reason", "provider incident", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"name": "echo", "paused": True, "reason": "provider incident"}]
    # A run fired while paused is delivered, and waits: no attempt, no delivery counted
    out = cli("fire", "every-second")
    assert out.returncode == 0 and "is paused" in out.stderr, out.stderr
    run_id = out.stdout.strip()
    wait_for(
        lambda: run_of(pg_store, run_id).waiting_for == "paused",
        timeout=20,
        message="the run to wait for its paused agent",
    )
    waiting = run_of(pg_store, run_id)
    assert (waiting.status, waiting.attempt, waiting.deliveries) == ("waiting", 0, 0)
    listed = {a["name"]: a for a in json.loads(cli("agents", "list", "--json").stdout)}
    assert listed["echo"]["paused"] is True
    assert "yes: provider incident" in cli("agents", "list").stdout
    assert listed["slow"]["paused"] is False
    status = json.loads(cli("status", "--json").stdout)
    assert [(p["scope"], p["name"], p["reason"]) for p in status["paused"]] == [
        ("agent", "echo", "provider incident")
    ]
    assert "PAUSED" in cli("status").stdout
    # The resume lets it go: the sweeper sends it and it runs once
    out = cli("agents", "resume", "echo")
    assert out.returncode == 0 and "1 held run(s) let go" in out.stdout, out.stdout
    sweep = sweeper(pg_settings)

    def ended() -> Run | None:
        sweep()
        run = run_of(pg_store, run_id)
        return run if run.finished_at else None

    wait_for(ended, timeout=30, interval=0.2, message="the released run to finish")
    run = run_of(pg_store, run_id)
    assert (run.status, run.attempt) == ("succeeded", 1)


def test_skip_pending_and_cancel_running(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE, pool="threads", concurrency=2)
    # A paused agent with --skip-pending ends what comes in
    assert cli("agents", "pause", "echo", "--skip-pending").returncode == 0
    skipped = fired(cli, "every-second")
    run = finished(pg_store, skipped)
    assert (run.status, run.terminal_reason, run.attempt) == ("skipped", "paused", 0)
    # --cancel-running stops a run that is under way (cooperatively, at its next beat)
    slow = fired(cli, "slow")
    wait_for(lambda: run_of(pg_store, slow).status == "running", timeout=20, message="the slow run to start")
    # status lists it with its age and what it last said
    wait_for(lambda: (run_of(pg_store, slow).last_heartbeat or {}).get("note") == "step", timeout=10)
    (running,) = json.loads(cli("status", "--json").stdout)["running"]
    assert (running["run_id"], running["attempt"], running["last_heartbeat"]["note"]) == (slow, 1, "step")
    assert running["age_s"] >= 0 and running["last_heartbeat"]["at"]
    out = cli("agents", "pause", "slow", "--cancel-running")
    assert out.returncode == 0 and "1 running run(s) asked to cancel" in out.stdout, out.stdout
    run = finished(pg_store, slow)
    assert (run.status, run.terminal_reason) == ("cancelled", "by_user")
    # resume --all lets every agent go again
    out = cli("agents", "resume", "--all", "--json")
    assert out.returncode == 0, out.stderr
    assert {c["name"] for c in json.loads(out.stdout)} == {"*", "echo", "slow"}
    assert pg_store.pauses().records == {}


def test_a_paused_trigger_refuses_fire_unless_forced_and_listings_say_why(
    pg_settings: Settings, pg_store: Store, cli: Cli
) -> None:
    out = cli("triggers", "pause", "every-second", "--reason", "bad deploy")
    assert out.returncode == 0 and "trigger every-second paused (bad deploy)" in out.stdout, out.stdout
    refused = cli("fire", "every-second")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "is paused" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert pg_store.list_runs() == []
    assert cli("fire", "every-second", "--force").returncode == 0
    rows = {t["name"]: t for t in json.loads(cli("triggers", "list", "--json").stdout)}
    assert rows["every-second"]["paused"] is True
    assert rows["slow"]["paused"] is False
    assert "yes: bad deploy" in cli("triggers", "list").stdout
    shown = json.loads(cli("triggers", "show", "every-second", "--json").stdout)
    assert shown["paused"] is True and shown["paused_by"]
    # Unknown names are refused with the known ones; names and --all do not mix
    bad = cli("triggers", "pause", "nope")
    assert bad.returncode == 1 and "no trigger named 'nope'" in bad.stderr, bad.stderr
    assert cli("triggers", "pause", "slow", "--all").returncode == 2
    assert cli("pause").returncode == 2  # the kill switch needs --all
    # The kill switch and its undo
    out = cli("pause", "--all", "--reason", "incident 42", "--json")
    assert json.loads(out.stdout) == [
        {"name": "*", "paused": True, "reason": "incident 42"},
        {"name": "*", "paused": True, "reason": "incident 42"},
    ]
    assert json.loads(cli("triggers", "list", "--json").stdout)[0]["paused"] is True
    # one name resumed under the kill switch stays paused, and says by what
    one = cli("triggers", "resume", "slow")
    assert "stays paused by `pause --all`" in one.stdout, one.stdout
    assert json.loads(cli("triggers", "resume", "slow", "--json").stdout) == [
        {"name": "slow", "paused": True, "reason": "incident 42"}
    ]
    out = cli("resume", "--all")
    assert out.returncode == 0, out.stderr
    assert pg_store.pauses().records == {}
