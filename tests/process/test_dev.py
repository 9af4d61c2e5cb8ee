"""`nightowl dev`: the embedded default runs the whole path and cleans up after itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, Cli, wait_for

DEV_MODULE = """
from agents import agent
from triggers import cron

@agent("hello")
def hello(ctx, event):
    return {"hello": event.trigger}

cron("* * * * * *", agent=hello, name="each-second")

@agent("sleeper")
def sleeper(ctx, event):  # still running when dev stops: a killed dev must not wait for it
    import time
    time.sleep(600)

cron("* * * * * *", agent=sleeper, name="sleepy")
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
    return env


def _valkeys_on(port: str) -> list[int]:
    """PIDs of valkey-server processes listening on `port` (it rewrites its own title)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"valkey-server" in cmd and f":{port}".encode() in cmd:
            pids.append(int(proc.name))
    return pids


def _runs(cli: Cli, tmp_path: Path) -> list[dict[str, object]]:
    out = cli("runs", "list", "--json", cwd=tmp_path, env=_env(tmp_path))
    return json.loads(out.stdout) if out.returncode == 0 else []


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL])
def test_dev_runs_agents_and_leaves_nothing_behind(tmp_path: Path, stop_signal: int, cli: Cli) -> None:
    # Given a trigger module and no URLs at all
    (tmp_path / "devmod.py").write_text(DEV_MODULE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "dev", "--triggers", "devmod"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port = "unknown"
    try:
        # When it runs for a moment, other commands in the folder see its runs
        started = time.monotonic()
        wait_for(
            lambda: any(r["status"] == "succeeded" for r in _runs(cli, tmp_path)),
            timeout=40,
            interval=0.5,
            message="a succeeded run in `nightowl runs list`",
        )
        first_success_s = time.monotonic() - started
        env_file = (tmp_path / ".nightowl" / "env").read_text()
        assert "NIGHTOWL_REDIS_URL=redis://127.0.0.1:" in env_file
        assert "sqlite:///" in env_file
        port = env_file.split("NIGHTOWL_REDIS_URL=redis://127.0.0.1:", 1)[1].split("/", 1)[0]
        assert _valkeys_on(port), "the embedded Redis should be running"
        run = next(r for r in _runs(cli, tmp_path) if r["status"] == "succeeded")
        assert run["trigger"] == "each-second" and run["agent"] == "hello"
    finally:
        proc.send_signal(stop_signal)
        out, _ = proc.communicate(timeout=60)
    # Then stopping it (cleanly, or by SIGKILL) leaves no Redis behind
    wait_for(lambda: not _valkeys_on(port), timeout=15, message="the embedded Redis to exit with its parent")
    if stop_signal == signal.SIGINT:
        assert proc.returncode == 0, out
        assert "nightowl dev: stopping" in out
    assert first_success_s < 30, out


def _alerts(cli: Cli, tmp_path: Path) -> list[dict[str, object]]:
    out = cli("alerts", "list", "--json", cwd=tmp_path, env=_env(tmp_path))
    return json.loads(out.stdout) if out.returncode == 0 else []


def test_demo_shows_all_four_trigger_kinds_a_replay_and_the_breaker(tmp_path: Path, cli: Cli) -> None:
    """`make demo`'s module: cron, db_change, queue_depth and metric each run an LLM agent; a
    retried investigation replays its first steps; a scripted outage opens the breaker."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "dev", "--triggers", "examples.demo"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wanted = {"digest", "demo-writer", "new-orders", "inbox-backlog", "demo-gauge"}
    try:

        def kinds_done() -> bool:
            done = {r["trigger"] for r in _runs(cli, tmp_path) if r["status"] == "succeeded"}
            return wanted <= done

        wait_for(kinds_done, timeout=60, interval=1.0, message="a succeeded run of each kind")

        def stalled_alert() -> bool:
            alerts = _alerts(cli, tmp_path)
            return any(a["kind"] == "run_stalled" and a["trigger"] == "daydream" for a in alerts)

        wait_for(stalled_alert, timeout=40, interval=1.0, message="the daydreamer's stalled alert")

        def outbox_delivered() -> bool:
            out = cli("outbox", "status", "--json", cwd=tmp_path, env=_env(tmp_path))
            if out.returncode != 0:
                raise AssertionError(out.stderr)
            status = json.loads(out.stdout)["sinks"]
            sinks = ("decisions", "cache", "events", "audit", "memory")
            return all(status.get(s, {}).get("delivered", 0) > 0 for s in sinks)

        wait_for(outbox_delivered, timeout=30, interval=1.0, message="outbox rows delivered")

        def investigation_retried() -> bool:
            return any(
                r["agent"] == "incident-investigator" and r["status"] == "succeeded" and r["attempt"] == 2
                for r in _runs(cli, tmp_path)
            )

        wait_for(investigation_retried, timeout=40, interval=1.0, message="an investigation's retry")

        def breaker_opened() -> bool:
            return any(a["kind"] == "provider_unavailable" for a in _alerts(cli, tmp_path))

        wait_for(breaker_opened, timeout=40, interval=1.0, message="the scripted outage's breaker")

        def triage_deferred() -> bool:  # a run that came after the breaker opened waits
            return any(
                r["agent"] == "order-triage" and r["status"] == "waiting" for r in _runs(cli, tmp_path)
            )

        wait_for(triage_deferred, timeout=40, interval=0.5, message="a deferred order-triage run")
        time.sleep(2)  # the console prints what it sees once a second
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "new-orders -> order-triage: succeeded" in out
    assert "inbox-backlog -> backlog-responder: succeeded" in out
    assert "demo-gauge -> incident-investigator: attempt 1 failed, retry at" in out
    assert "steps 1-2 (metrics, hypothesise) replayed from attempt 1, not run again" in out
    assert "new-orders -> order-triage: waiting/provider_unavailable until" in out
    assert "ALERT provider_unavailable firing: provider scripted-triage is unavailable" in out
    assert "ALERT run_stalled firing" in out


QUIET_MODULE = """
import time

from agents import agent
from triggers import cron

@agent("greeter")
def greeter(ctx, event):
    time.sleep(0.5)  # often still running at Ctrl-C: the worker drains it before the broker stops
    return {"hello": event.trigger}

cron("* * * * * *", agent=greeter, name="each-second", overlap="allow")
"""


def test_the_console_is_one_line_per_run_and_ctrl_c_drains_without_tracebacks(
    tmp_path: Path, cli: Cli
) -> None:
    (tmp_path / "quietmod.py").write_text(QUIET_MODULE)
    (tmp_path / ".nightowl").mkdir()
    (tmp_path / ".nightowl" / "leftover").write_text("from an earlier run")

    def start() -> subprocess.Popen[str]:
        # A session of its own, signalled as a terminal's Ctrl-C is: the whole process group
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "dev", "--triggers", "quietmod", "--reset"],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    proc = start()
    try:
        wait_for(
            lambda: sum(r["status"] == "succeeded" for r in _runs(cli, tmp_path)) >= 3,
            timeout=40,
            interval=0.5,
            message="three succeeded runs",
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "--reset: removed .nightowl/" in out and not (tmp_path / ".nightowl" / "leftover").exists()
    lines = out.splitlines()
    succeeded = [line for line in lines if "each-second -> greeter: succeeded" in line]
    assert len(succeeded) >= 2 and len({line.split("run=")[1] for line in succeeded}) == len(succeeded)
    assert '{"hello": "each-second"}' in succeeded[0]  # JSON, not a Python repr
    for noise in (
        "Traceback",
        "celery@",
        "[config]",
        "nightowl worker: queues=",
        " INFO ",
        "SecurityWarning",
    ):
        assert noise not in out, (noise, out)


RELOAD_MODULE = """
from agents import agent
from triggers import cron

@agent("versioned")
def versioned(ctx, event):
    return {"version": VERSION}

VERSION = 1
cron("* * * * * *", agent=versioned, name="each-second", overlap="allow")
"""


def test_reload_restarts_on_a_change_that_loads_and_keeps_running_on_one_that_does_not(
    tmp_path: Path, cli: Cli
) -> None:
    module = tmp_path / "reloadmod.py"
    module.write_text(RELOAD_MODULE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "dev", "--triggers", "reloadmod", "--reload"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def versions() -> set[object]:
        return {
            (r.get("result") or {}).get("version")
            for r in (
                json.loads(
                    cli("runs", "show", str(run["id"]), "--json", cwd=tmp_path, env=_env(tmp_path)).stdout
                )
                for run in _runs(cli, tmp_path)[:3]
                if run["status"] == "succeeded"
            )
        }

    try:
        wait_for(lambda: 1 in versions(), timeout=40, interval=0.5, message="a run of version 1")
        module.write_text(RELOAD_MODULE.replace("cron(", "cron(0, ", 1))  # no longer loads
        time.sleep(3)
        assert proc.poll() is None  # still running the old code
        module.write_text(RELOAD_MODULE.replace("VERSION = 1", "VERSION = 2"))
        wait_for(lambda: 2 in versions(), timeout=60, interval=0.5, message="a run of version 2")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "changed but does not load; still running the old code" in out, out
    assert "reloadmod.py changed; restarting the services" in out, out
    assert "Traceback" not in out
