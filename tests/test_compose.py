"""compose.yaml: valid against the Compose spec, every command a real nightowl subcommand,
every depends_on a real service, a healthcheck on each long-running service."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from ruamel.yaml import YAML

from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"


def services() -> dict[str, Any]:
    data = YAML(typ="safe").load(COMPOSE.read_text())
    return dict(data["services"])


def test_compose_file_follows_the_compose_spec() -> None:
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                          "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_command_is_a_nightowl_subcommand_and_every_dependency_exists() -> None:
    found = services()
    commands = set()
    for name, service in found.items():
        for dep in service.get("depends_on", {}):
            assert dep in found, f"{name} depends on {dep!r}, which is not a service"
        command = service.get("command") or []
        if command and command[0] == "nightowl":
            words = [w for w in command[1:] if not w.startswith("-")]
            commands.add(tuple(words[:2]) if words[0] in ("db", "outbox") else (words[0],))
    assert {("scheduler",), ("worker",), ("watchdog",), ("relay",), ("flower",),
            ("db", "upgrade")} <= commands
    for words in sorted(commands):
        out = subprocess.run([sys.executable, "-m", "scheduler.cli", *words, "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, f"nightowl {' '.join(words)}: {out.stderr}"


def test_long_running_services_have_healthchecks() -> None:
    for name in ("redis", "postgres", "scheduler", "worker", "watchdog", "relay", "flower"):
        assert "healthcheck" in services()[name], name
