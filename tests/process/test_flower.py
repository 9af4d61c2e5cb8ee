"""`nightowl flower`: real Flower against a real worker, authentication, and the Tasks page
rendered in headless Chromium when it is installed (scripts/test-services.sh installs it where it can)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.core.clock import FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.ops.runs import fire
from scheduler.storage.store import Store
from scheduler.worker.app import create_app
from tests.helpers import ROOT, Cli, WorkerProcess, child_env, free_port, make_service, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"
AUTH = ("admin", "flower-pw")


def test_flower_refuses_an_open_address_without_auth(settings: Settings, tmp_path: Path, cli: Cli) -> None:
    out = cli(
        "flower",
        "--address",
        "0.0.0.0",
        "--db",
        str(tmp_path / "f.db"),
        cwd=ROOT,
        env=child_env(settings, MODULE),
    )
    assert out.returncode == 1
    assert "NIGHTOWL_FLOWER_BASIC_AUTH" in out.stderr


def test_flower_lists_agent_tasks_behind_auth_and_renders_them(
    pg_settings: Settings,
    pg_store: Store,
    tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    env = child_env(pg_settings, MODULE, NIGHTOWL_FLOWER_BASIC_AUTH=":".join(AUTH))

    def start_flower() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.cli",
                "flower",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "flower.db"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    flower = start_flower()
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/api/workers", auth=AUTH, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.3, message="Flower to answer")
        start_worker(MODULE)
        # A cron run that succeeds, and a manual run whose agent raises
        clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
        svc = make_service(pg_settings, registry_of(MODULE, ["every-second"]), clock)
        svc.tick()
        clock.advance(1)
        run_id = svc.tick().fired[0][1]
        registry = registry_of(MODULE)
        publisher = Publisher(create_app(pg_settings, registry))
        failing = fire(pg_store, publisher, registry, "failing", datetime.now(UTC)).run_id
        publisher.close()

        def task_of(run: str, state: str) -> dict[str, Any] | None:
            tasks = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
            return next(
                (t for t in tasks.values() if run in str(t.get("args")) and t.get("state") == state), None
            )

        task = wait_for(
            lambda: task_of(run_id, "SUCCESS"),
            timeout=30,
            interval=0.5,
            message="the agent task in /api/tasks, succeeded",
        )
        assert isinstance(task, dict)
        assert task["name"] == "agent.echo"
        # argsrepr: readable trigger, agent and attempt; the run itself got the bare run id
        assert task["args"] == f"[{run_id!r}] trigger=every-second agent=echo attempt=1"
        assert isinstance(task["runtime"], float) and task["runtime"] > 0
        run = pg_store.get_run(run_id)
        assert run is not None and run.status == "succeeded", run and (run.status, run.error)
        # A failed attempt is not a green SUCCESS: FAILURE, with the run and what to run next
        failed = wait_for(
            lambda: task_of(failing, "FAILURE"),
            timeout=30,
            interval=0.5,
            message="the failing agent's task as FAILURE",
        )
        assert isinstance(failed, dict) and failed["name"] == "agent.always-fails"
        assert f"run {failing}: retry" in str(failed["exception"])
        assert f"nightowl runs show {failing}" in str(failed["exception"])

        def listed() -> dict[str, Any] | None:
            return task_of(run_id, "SUCCESS")

        assert httpx.get(f"{base}/api/tasks", timeout=5).status_code == 401
        # Persistent mode: the history survives a Flower restart
        flower.terminate()
        flower.wait(timeout=30)
        flower = start_flower()
        wait_for(up, timeout=30, interval=0.3, message="Flower to answer after a restart")
        assert wait_for(listed, timeout=10, interval=0.5, message="the task after a restart")
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.skip("chromium is not installed (scripts/test-services.sh installs it where it can)")
        shot = ROOT / ".nightowl" / "flower-tasks.png"
        shot.parent.mkdir(exist_ok=True)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
            f"--user-data-dir={tmp_path / 'chrome'}",
        ]
        url = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{port}/tasks"
        dom = subprocess.run(
            [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=False
        )
        subprocess.run(
            [chromium, *flags, f"--screenshot={shot}", "--window-size=1400,900", url],
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert "agent.echo" in dom.stdout, dom.stdout[-2000:]
        assert shot.exists()
    finally:
        flower.terminate()
        flower.wait(timeout=30)
