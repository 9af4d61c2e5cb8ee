"""`nightowl flower`: real Flower against a real worker, authentication, and the Tasks page
rendered in headless Chromium when it is installed (.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from scheduler.app import create_app
from scheduler.operations import fire
from scheduler.publish import Publisher
from scheduler.settings import Settings
from scheduler.storage.store import Store
from tests.conftest import ROOT, WorkerProcess, child_env, wait_for
from tests.helpers import free_port, registry_of

MODULE = "tests.fixtures.e2e_triggers"
AUTH = ("admin", "flower-pw")


def test_flower_refuses_an_open_address_without_auth(settings: Settings, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "scheduler.cli", "flower", "--address", "0.0.0.0",
                          "--db", str(tmp_path / "f.db")], cwd=ROOT, env=child_env(settings, MODULE),
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "NIGHTOWL_FLOWER_BASIC_AUTH" in out.stderr


def test_flower_lists_agent_tasks_behind_auth_and_renders_them(
    pg_settings: Settings, pg_store: Store, tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    env = child_env(pg_settings, MODULE, NIGHTOWL_FLOWER_BASIC_AUTH=":".join(AUTH))
    flower = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "flower", "--port", str(port),
                               "--db", str(tmp_path / "flower.db")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/api/workers", auth=AUTH, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout=30, interval=0.3, message="Flower to answer")
        start_worker(MODULE)
        registry = registry_of(MODULE)
        publisher = Publisher(create_app(pg_settings, registry))
        run_id = fire(pg_store, publisher, registry, "every-second", datetime.now(UTC)).run_id
        publisher.close()

        def listed() -> dict[str, object] | None:
            tasks = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
            return next((t for t in tasks.values() if run_id in str(t.get("args"))), None)
        task = wait_for(listed, timeout=30, interval=0.5, message="the agent task in /api/tasks")
        assert isinstance(task, dict)
        assert task["name"] == "agent.echo"
        assert "trigger=every-second" in str(task["args"]) or "every-second" in str(task["args"])
        assert httpx.get(f"{base}/api/tasks", timeout=5).status_code == 401
        chromium = shutil.which("chromium")
        if chromium is None:
            pytest.skip("chromium is not installed (.ci/run installs it)")
        shot = ROOT / ".nightowl" / "flower-tasks.png"
        shot.parent.mkdir(exist_ok=True)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'chrome'}"]
        url = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{port}/tasks"
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True,
                             text=True, timeout=90, check=False)
        subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1400,900", url],
                       capture_output=True, timeout=90, check=False)
        assert "agent.echo" in dom.stdout, dom.stdout[-2000:]
        assert shot.exists()
    finally:
        flower.terminate()
        flower.wait(timeout=30)
