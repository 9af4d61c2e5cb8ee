"""compose.yaml: valid against the Compose spec, every command a real nightowl subcommand,
every depends_on a real service, a healthcheck on each long-running service; the services
run as local processes and pass their own healthchecks; the Prometheus config and alert
rules pass promtool."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from scheduler.core.settings import Settings
from scheduler.healthcheck import check as check_loop
from scheduler.storage.store import Store
from tests.helpers import ROOT, Cli, child_env, free_port, wait_for

COMPOSE = ROOT / "compose.yaml"


def services() -> dict[str, Any]:
    data = YAML(typ="safe").load(COMPOSE.read_text())
    return dict(data["services"])


def test_compose_file_follows_the_compose_spec() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_command_is_a_nightowl_subcommand_and_every_dependency_exists(cli: Cli) -> None:
    found = services()
    commands = set()
    for name, service in found.items():
        for dep in service.get("depends_on", {}):
            assert dep in found, f"{name} depends on {dep!r}, which is not a service"
        command = service.get("command") or []
        if command and command[0] == "nightowl":
            words = [w for w in command[1:] if not w.startswith("-")]
            commands.add(tuple(words[:2]) if words[0] in ("db", "outbox") else (words[0],))
    assert {
        ("scheduler",),
        ("worker",),
        ("watchdog",),
        ("relay",),
        ("flower",),
        ("db", "upgrade"),
    } <= commands
    for subcommand in sorted(commands):
        out = cli(*subcommand, "--help", cwd=ROOT)
        assert out.returncode == 0, f"nightowl {' '.join(subcommand)}: {out.stderr}"


def test_long_running_services_have_healthchecks() -> None:
    for name in ("redis", "postgres", "scheduler", "worker", "watchdog", "relay", "flower"):
        assert "healthcheck" in services()[name], name


def test_long_running_services_are_restarted_and_the_migration_is_not() -> None:
    """A service that gave up waiting for PostgreSQL or Redis exits 1; compose restarts it."""
    found = services()
    for name in ("scheduler", "worker", "watchdog", "relay", "flower"):
        assert found[name].get("restart") == "unless-stopped", name
    assert found["migrate"].get("restart") == "no"


def _site(tmp_path: Path) -> Path:
    """The folder compose mounts at /app/site (NIGHTOWL_TRIGGERS_DIR) with a user's module."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "site_triggers.py").write_text(
        "from agents import agent\nfrom triggers import cron\n\n\n"
        "@agent('hello')\ndef hello(ctx, event):\n    return {'slot': event.scheduled_for.isoformat()}\n\n\n"
        "cron('* * * * * *', agent=hello, name='every-second')\n"
    )
    return site


def _compose_env(pg_settings: Settings, site: Path) -> dict[str, str]:
    """x-nightowl's environment, with this test's services in place of compose's hostnames,
    the mounted folder on PYTHONPATH, and .env.nightowl's secret."""
    anchor = YAML(typ="safe").load(COMPOSE.read_text())["x-nightowl"]["environment"]
    env = child_env(pg_settings, "site_triggers")
    env.update(
        {
            k: v
            for k, v in anchor.items()
            if k.startswith("NIGHTOWL_") and "URL" not in k and k != "NIGHTOWL_TRIGGERS"
        }
    )
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(site)]),
        HOSTNAME=socket.gethostname(),
        NIGHTOWL_FLOWER_BASIC_AUTH="admin:change-me",
        NIGHTOWL_SHUTDOWN_GRACE="5",
    )
    return env


def _local(words: list[str], ports: dict[str, str], tmp_path: Path) -> list[str]:
    """A compose command or healthcheck made runnable here: `python` is this interpreter,
    fixed ports become free ones, container paths become the test's folder."""
    out = []
    for word in words:
        local = ports.get(word, word)
        if local == "python":
            local = sys.executable
        elif local.startswith("/var/lib/nightowl/"):
            local = str(tmp_path / Path(local).name)
        out.append(local)
    if out and out[0] == "nightowl":
        out = [sys.executable, "-m", "scheduler.cli", *out[1:]]
    return out


def _healthy(check: list[str], env: dict[str, str]) -> bool:
    kind, *argv = check
    if kind == "CMD-SHELL":
        argv = ["sh", "-c", argv[0].replace("$$", "$").replace("celery -A", f"{sys.executable} -m celery -A")]
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    return out.returncode == 0


def test_the_compose_services_run_as_processes_and_pass_their_healthchecks(
    pg_settings: Settings,
    pg_store: Store,
    tmp_path: Path,
) -> None:
    """compose.yaml's commands, replicas, environment and healthchecks, run as local processes
    (no Docker engine on CI machines): migrate, 2 schedulers, worker, 2 watchdogs, 2 relays,
    Flower on 0.0.0.0 with auth from the env file."""
    site = _site(tmp_path)
    env = _compose_env(pg_settings, site)
    found = services()
    migrate = subprocess.run(
        _local(found["migrate"]["command"], {}, tmp_path),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    running: list[tuple[str, subprocess.Popen[bytes], list[str], dict[str, str]]] = []
    try:
        for name in ("scheduler", "worker", "watchdog", "relay", "flower"):
            service = found[name]
            for _ in range(service.get("deploy", {}).get("replicas", 1)):
                ports = {"9100": str(free_port()), "5555": str(free_port())}
                proc = subprocess.Popen(
                    _local(service["command"], ports, tmp_path),
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                check = _local(service["healthcheck"]["test"], ports, tmp_path)
                running.append((name, proc, check, ports))
        # Then every replica's own healthcheck passes, and the deployment does its job
        for name, proc, check, _ in running:
            wait_for(
                lambda c=check: _healthy(c, env),  # type: ignore[misc]
                timeout=60,
                interval=0.5,
                message=f"{name}'s healthcheck {check}",
            )
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        wait_for(
            lambda: pg_store.list_runs(status="succeeded", limit=1),
            timeout=60,
            message="a cron run from the mounted trigger module to succeed",
        )
        for role in ("scheduler", "watchdog"):
            leaders = [_leader(ports["9100"], role) for n, _, _, ports in running if n == role]
            assert sorted(leaders) == [0.0, 1.0], f"{role}: exactly one of two leads ({leaders})"
        flower_port = next(ports["5555"] for n, _, _, ports in running if n == "flower")
        assert httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=5).status_code == 401
        assert (
            httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=5, auth=("admin", "change-me")).status_code
            == 200
        )
        # A loop that stops completing steps fails the healthcheck although /metrics still answers
        relay_port = next(ports["9100"] for n, _, _, ports in running if n == "relay")
        url = f"http://127.0.0.1:{relay_port}/metrics"
        assert check_loop(url, max_age=60)[0]
        stuck, reason = check_loop(url, max_age=60, now=time.time() + 120)
        assert not stuck and "loop stuck" in reason and "'relay step'" in reason
    finally:
        for _, proc, _, _ in running:
            proc.send_signal(signal.SIGTERM)
        for name, proc, _, _ in running:
            grace = _seconds(found[name].get("stop_grace_period", "10s"))
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{name} ignored SIGTERM for its {grace}s grace") from None


def _leader(port: str, role: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return next(
        (
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "nightowl_leader" and s.labels == {"role": role}
        ),
        0.0,
    )


def _seconds(duration: str) -> float:
    return float(duration.rstrip("s"))


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is required (Debian package `prometheus`; scripts/test-services.sh installs it)"
        )
    return binary


def test_the_prometheus_config_rules_and_rule_unit_tests_pass_promtool() -> None:
    deploy = ROOT / "deploy" / "prometheus"
    for args in (
        ["check", "config", str(deploy / "prometheus.yml")],
        ["test", "rules", str(deploy / "rules_test.yml")],
    ):
        out = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_shown_in_the_docs_are_valid(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "groups:" in b]
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"rules{i}.yml"
        path.write_text(block)
        out = subprocess.run(
            [_promtool(), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
