"""Replay and bulk actions through the CLI, against a real worker: `runs replay` makes a new
run that knows what it replays; `runs retry|cancel|replay` with filters count and list what
they match first, need --yes without a terminal, and change nothing with --dry-run."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import Cli, WorkerProcess

MODULE = "tests.fixtures.exec_triggers"


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def waited(cli: Cli, trigger: str, *extra: str) -> dict[str, object]:
    out = cli("fire", trigger, "--wait", "--timeout", "30", "--json", *extra)
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_replay_one_run_with_a_new_payload(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    first = waited(cli, "x-replayable", "--payload", '{"n": 1}')
    assert first["result"] == {"replay_of": None, "payload": {"n": 1}, "manual": True}
    out = cli("runs", "replay", str(first["run_id"]), "--payload", '{"n": 2}', "--json")
    assert out.returncode == 0, out.stderr
    replayed = json.loads(out.stdout)
    assert replayed["replay_of"] == first["run_id"] and replayed["run_id"] != first["run_id"]
    ended = json.loads(cli("runs", "wait", replayed["run_id"], "--timeout", "30", "--json").stdout)
    assert ended["result"] == {"replay_of": first["run_id"], "payload": {"n": 2}, "manual": True}
    run = pg_store.get_run(replayed["run_id"])
    assert run is not None and run.origin == "replay" and run.idempotency_key.startswith("replay:")
    original = pg_store.get_run(str(first["run_id"]))
    assert original is not None and original.origin == "manual" and original.status == "succeeded"
    # The same id can be replayed again (each replay is a run of its own)
    assert cli("runs", "replay", str(first["run_id"])).returncode == 0
    missing = cli("runs", "replay", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no run with id" in missing.stderr


def test_bulk_actions_count_first_confirm_and_dry_run(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    failed = [str(waited(cli, "x-refuses")["run_id"]) for _ in range(2)]
    waited(cli, "x-replayable")
    # --dry-run lists what matches and changes nothing
    out = cli("runs", "replay", "--status", "failed", "--since", "1h", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(r["id"] for r in json.loads(out.stdout)) == sorted(failed)
    assert len(pg_store.list_runs()) == 3
    out = cli("runs", "replay", "--status", "failed", "--since", "1h", "--dry-run")
    assert "2 run(s) match" in out.stderr and "dry run: nothing was replayed" in out.stderr
    # Without a terminal it needs --yes
    out = cli("runs", "replay", "--status", "failed", "--agent", "refuses")
    assert out.returncode == 1 and "pass --yes" in out.stderr, out.stderr
    assert len(pg_store.list_runs()) == 3
    out = cli("runs", "replay", "--status", "failed", "--agent", "refuses", "--yes", "--json")
    assert out.returncode == 0 and "2 run(s) match" in out.stderr, out.stderr
    made = json.loads(out.stdout)
    assert sorted(m["replay_of"] for m in made) == sorted(failed)
    # Retry: the failed originals get one more attempt each (and fail again, non-retryable)
    out = cli("runs", "retry", "--status", "failed", "--trigger", "x-refuses", "--since", "1h", "--yes")
    assert out.returncode == 0, out.stderr
    assert "run(s) retried" in out.stderr
    # Cancel on a selection that matches nothing acts on nothing
    out = cli("runs", "cancel", "--status", "running", "--agent", "nobody", "--yes")
    assert out.returncode == 0 and "0 run(s) match" in out.stderr
    # Bad selections are usage errors
    assert cli("runs", "cancel").returncode == 2
    assert cli("runs", "cancel", "--since", "soon").returncode == 2
    assert cli("runs", "retry", str(failed[0]), "--status", "failed").returncode == 2
