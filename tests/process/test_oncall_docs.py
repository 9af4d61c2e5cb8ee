"""docs/operations.md's "On call" section, run as written against a real worker: its trigger
module is the one the commands use, every `$ nightowl ...` line runs in order with the exit
code it states (0 unless `# exits N`), and its Python client example runs too.

RUN_ID stands for the run the section just broke (`fire ... --wait`), ALERT_ID for the
open alert it raised (a watchdog check in between raises it, as the watchdog process would).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.core.clock import SystemClock
from scheduler.core.settings import Settings
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Store
from tests.helpers import ROOT, Cli, WorkerProcess, make_watchdog, registry_of

DOC = ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"```(python|console)\n(.*?)```", re.DOTALL)


def section() -> str:
    text = DOC.read_text()
    start = text.index("## On call")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(section())


@pytest.fixture
def oncall_module(tmp_path: Path) -> Iterator[str]:
    """The section's trigger module, importable as `oncall` by the worker and the CLI."""
    (tmp_path / "oncall.py").write_text(blocks()[0][1])
    sys.path.insert(0, str(tmp_path))
    yield str(tmp_path)
    sys.path.remove(str(tmp_path))
    sys.modules.pop("oncall", None)
    from agents._spec import forget_module

    forget_module("oncall")


@pytest.fixture
def cli_triggers() -> str:
    return "oncall"


def test_the_on_call_section_runs_as_written(
    pg_settings: Settings,
    pg_store: Store,
    start_worker: Callable[..., WorkerProcess],
    cli: Cli,
    oncall_module: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kinds = [k for k, _ in blocks()]
    assert kinds[0] == "python" and kinds.count("console") >= 5, kinds
    start_worker("oncall", PYTHONPATH=f"{ROOT}:{oncall_module}")
    ran = 0
    for kind, body in blocks()[1:]:
        if kind == "python":  # the client reads the environment, as the CLI does
            monkeypatch.setenv("NIGHTOWL_DATABASE_URL", pg_settings.require_database_url())
            monkeypatch.setenv("NIGHTOWL_REDIS_URL", pg_settings.require_redis_url())
            monkeypatch.setenv("NIGHTOWL_REDIS_PREFIX", pg_settings.redis_prefix)
            namespace: dict[str, object] = {}
            exec(compile(body, "docs/operations.md#client", "exec"), namespace)
            continue
        for line in body.splitlines():
            if not line.startswith("$ nightowl "):
                continue
            command, _, comment = line[2:].partition("  # ")
            expected = int(comment.removeprefix("exits ")) if comment.startswith("exits ") else 0
            args = shlex.split(command)[1:]
            if "RUN_ID" in args:
                broken = next(r for r in pg_store.list_runs(limit=100) if r.status == "dead")
                args = [broken.id if a == "RUN_ID" else a for a in args]
            if "ALERT_ID" in args:
                make_watchdog(pg_settings, registry_of("oncall"), SystemClock()).check()
                (alert,) = [a for a in AlertStore(pg_store.engine).open_alerts() if a.kind == "run_dead"]
                args = [str(alert.id) if a == "ALERT_ID" else a for a in args]
            out = cli(*args, timeout=120)
            assert out.returncode == expected, f"$ nightowl {command}\n{out.stdout}\n{out.stderr}"
            ran += 1
    assert ran >= 15
    # What the section says happened, happened
    runs = pg_store.list_runs(limit=100)
    assert any(r.origin == "backfill" for r in runs) and any(r.replay_of for r in runs)
    assert [a for a in AlertStore(pg_store.engine).open_alerts() if a.kind == "run_dead" and a.acked_at]
