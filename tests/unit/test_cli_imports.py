"""Which modules a read-only command imports: `nightowl --help`, `runs list`, `runs show` and
`status` must start without Celery, Alembic, the services or the user's trigger
modules (they took about 3 s to start when every command imported everything). An import
test, not a timed one: benchmarks/cli_start.py measures the seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PROBE = """
import json, runpy, sys
sys.argv = ["nightowl", *json.loads(sys.argv[1])]
try:
    runpy.run_module("scheduler.cli", run_name="__main__")
except SystemExit:
    pass
print("\\n@@MODULES@@" + json.dumps(sorted(sys.modules)))
"""

NEVER = (
    "celery",
    "kombu",
    "alembic",
    "scheduler.cli.services",
    "scheduler.worker",
    "scheduler.dispatch",
    "scheduler.watchdog",
    "scheduler.relay",
    "flower",
    "examples",
    # trigger kinds and what they bring: `triggers` and `agents` import names on first use
    "triggers._cron",
    "triggers._metric",
    "triggers._queue",
    "triggers._dbchange",
    "httpx",
    "prometheus_client",
    "croniter",
)


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    out = done.stdout.rsplit("@@MODULES@@", 1)
    assert len(out) == 2, (done.stdout, done.stderr)
    return set(json.loads(out[1]))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "NIGHTOWL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "NIGHTOWL_TRIGGERS": "examples.demo",
        # a Redis that does not answer: `status` reports it, and must not import Celery for it
        "NIGHTOWL_REDIS_URL": "redis://127.0.0.1:1/0",
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["runs", "list", "--help"],
        ["runs", "show", "x", "--help"],
        ["status", "--help"],
        ["runs", "list"],
        ["runs", "show", "00000000-0000-0000-0000-000000000000"],
        ["status"],
        ["status", "--json"],
    ],
)
def test_read_only_commands_import_no_service_and_no_trigger_module(
    args: list[str], env: dict[str, str]
) -> None:
    modules = imported(args, env)
    loaded = sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in NEVER))
    assert loaded == [], f"nightowl {' '.join(args)} imported {loaded}"


def test_help_imports_typer_and_nothing_of_nightowl_beyond_the_command_table(env: dict[str, str]) -> None:
    modules = imported(["--help"], env)
    ours = sorted(m for m in modules if m.split(".")[0] in {"scheduler", "agents", "triggers"})
    assert ours == ["scheduler", "scheduler.cli", "scheduler.cli.commands"], ours
    assert "sqlalchemy" not in modules and "pydantic" not in modules


def test_status_on_a_live_redis_imports_no_celery(env: dict[str, str]) -> None:
    """With Redis answering, `status` reads leaders, queues and the workers' presence, all
    without Celery (a ping broadcast is `status --ping`)."""
    from tests.helpers import REDIS_URL

    modules = imported(["status", "--json"], {**env, "NIGHTOWL_REDIS_URL": REDIS_URL})
    loaded = sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in NEVER))
    assert loaded == [], loaded
    assert "scheduler.core.presence" in modules
