"""`triggers backfill` against a real worker: missing slots run under their live keys, a second
backfill duplicates nothing, --reprocess replays, --max-active throttles, --dry-run changes
nothing. The exec triggers are yearly (`0 0 1 1 *`), so a range of years is a few slots."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import Cli, WorkerProcess

MODULE = "tests.fixtures.exec_triggers"
RANGE = ("--from", "2024-01-01T00:00:00Z", "--to", "2026-06-01T00:00:00Z")
SLOTS = ["2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def backfill(cli: Cli, trigger: str, *extra: str) -> tuple[int, list[dict[str, object]]]:
    out = cli("triggers", "backfill", trigger, *RANGE, "--json", *extra, timeout=120)
    assert out.stdout, out.stderr
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return out.returncode, rows


def test_backfill_runs_missing_slots_once_and_reprocesses_on_request(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE)
    code, rows = backfill(cli, "x-replayable", "--dry-run")
    assert code == 0 and [(r["slot"], r["action"]) for r in rows] == [(s, "create") for s in SLOTS]
    assert pg_store.list_runs() == []
    code, rows = backfill(cli, "x-replayable")
    assert code == 0 and {(r["action"], r["status"]) for r in rows} == {("create", "succeeded")}
    runs = {r.idempotency_key: r for r in pg_store.list_runs()}
    assert sorted(runs) == [f"cron:x-replayable:{s.replace('+00:00', 'Z')}" for s in SLOTS]  # the live keys
    assert {r.origin for r in runs.values()} == {"backfill"}
    # Again: every slot has its run, nothing is duplicated
    code, rows = backfill(cli, "x-replayable")
    assert code == 0 and {(r["action"], r["existing"]) for r in rows} == {("skip", "succeeded")}
    assert len(pg_store.list_runs()) == 3
    # --reprocess all replays each, one at a time
    code, rows = backfill(cli, "x-replayable", "--reprocess", "all", "--max-active", "1")
    assert code == 0 and {(r["action"], r["status"]) for r in rows} == {("replay", "succeeded")}
    replays = [r for r in pg_store.list_runs() if r.replay_of is not None]
    assert sorted(str(r.replay_of) for r in replays) == sorted(r.id for r in runs.values())
    assert {r.origin for r in replays} == {"backfill"}
    # --reprocess failed leaves succeeded slots alone
    code, rows = backfill(cli, "x-replayable", "--reprocess", "failed", "--dry-run")
    assert {r["action"] for r in rows} == {"skip"}


def test_failed_slots_exit_1_and_max_active_throttles(
    pg_settings: Settings, pg_store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    start_worker(MODULE, pool="threads", concurrency=4)
    code, rows = backfill(cli, "x-refuses")
    assert code == 1 and {r["status"] for r in rows} == {"failed"}
    code, rows = backfill(cli, "x-refuses", "--reprocess", "failed", "--dry-run")
    assert code == 0 and {(r["action"], r["existing"]) for r in rows} == {("replay", "failed")}
    # polite-slowpoke takes about a second (its timeout); four slots, two at a time
    out = cli(
        "triggers",
        "backfill",
        "x-polite-slowpoke",
        "--from",
        "2023-01-01T00:00:00Z",
        "--to",
        "2026-06-01T00:00:00Z",
        "--max-active",
        "2",
        timeout=120,
    )
    assert "4 slot(s): 4 create" in out.stderr, out.stderr
    slow = sorted(
        (r for r in pg_store.list_runs() if r.trigger == "x-polite-slowpoke"),
        key=lambda r: r.started_at or r.created_at,
    )
    assert len(slow) == 4
    spans = [(r.started_at, r.finished_at) for r in slow]
    for i, (began, ended) in enumerate(spans):
        assert began is not None and ended is not None
        overlapping = [j for j, (b, e) in enumerate(spans) if j != i and b and e and b < ended and began < e]
        assert len(overlapping) <= 1, spans
    # Bad ranges are refused, naming why
    bad = cli(
        "triggers", "backfill", "x-refuses", "--from", "2026-01-01T00:00:00Z", "--to", "2099-01-01T00:00:00Z"
    )
    assert bad.returncode == 1 and "in the future" in bad.stderr, bad.stderr
    assert cli("triggers", "backfill", "nope", *RANGE).returncode == 1
