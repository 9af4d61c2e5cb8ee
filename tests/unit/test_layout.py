"""The package layout DESIGN.md draws, checked over the imports (no service needed).

- `agents` imports nothing of ours; `triggers` may import `agents`, never `scheduler`.
- Inside `scheduler`, a process package (dispatch, worker, watchdog, relay) never
  imports another; the shared core (core, storage, alerts, outbox) imports no process
  package and nothing on top of it (ops, cli).
- `scheduler` uses only the public modules of `agents` and `triggers`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = {"dispatch", "worker", "watchdog", "relay"}
CORE = {"core", "storage", "alerts", "outbox"}
ON_TOP = {"ops", "cli"}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, including imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from scheduler import metrics` names a module too
                yield node.lineno, f"{node.module}.{alias.name}"


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _part(module: str) -> str | None:
    """`scheduler.<part>` of a module name, or None outside scheduler."""
    parts = module.split(".")
    return parts[1] if parts[0] == "scheduler" and len(parts) > 1 else None


def test_agents_and_triggers_lean_one_way() -> None:
    bad = [
        f"{_where(p, n)} imports {m}"
        for p in _files("agents")
        for n, m in _imports(p)
        if m.split(".")[0] in {"triggers", "scheduler"}
    ]
    bad += [
        f"{_where(p, n)} imports {m}"
        for p in _files("triggers")
        for n, m in _imports(p)
        if m.split(".")[0] == "scheduler"
    ]
    assert bad == []


def test_process_packages_import_only_the_shared_core() -> None:
    bad = []
    for path in _files("scheduler"):
        rel = path.relative_to(ROOT / "scheduler").parts
        own = rel[0] if len(rel) > 1 else None
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own:
                continue
            if own in PROCESSES and (target in PROCESSES or target in ON_TOP):
                bad.append(f"{_where(path, line)}: process package {own} imports {module}")
            if own in CORE and (target in PROCESSES or target in ON_TOP):
                bad.append(f"{_where(path, line)}: shared core {own} imports {module}")
            if own == "ops" and (target in PROCESSES or target == "cli"):
                bad.append(f"{_where(path, line)}: ops imports {module}")
    assert bad == []


def test_scheduler_uses_only_public_modules_of_agents_and_triggers() -> None:
    bad = [
        f"{_where(p, n)} imports {m}"
        for p in _files("scheduler")
        for n, m in _imports(p)
        if m.split(".")[0] in {"agents", "triggers"}
        and any(part.startswith("_") for part in m.split(".")[1:])
    ]
    assert bad == []


def test_ls_scheduler_reads_as_the_data_flow() -> None:
    packages = {p.name for p in (ROOT / "scheduler").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.name for p in (ROOT / "scheduler").glob("*.py")}
    assert packages == PROCESSES | CORE | ON_TOP
    assert modules == {"__init__.py", "healthcheck.py", "client.py"}


def test_the_dead_letter_consumer_path_names_a_real_class() -> None:
    """Celery takes the consumer as a dotted path string, which no import checks."""
    import importlib

    from scheduler.core.celery import DEAD_LETTER_CONSUMER

    module, _, name = DEAD_LETTER_CONSUMER.partition(":")
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_the_tree_in_the_design_doc_is_the_tree_on_disk() -> None:
    """docs/design.md draws `scheduler/`; a package added or renamed must be drawn too."""
    import re

    text = (ROOT / "docs" / "design.md").read_text()
    block = text.split("```\nscheduler/\n", 1)[1].split("```", 1)[0]
    drawn = set(re.findall(r"^  (\w+/|\w+\.py)", block, re.MULTILINE))
    on_disk = {
        f"{p.name}/" for p in (ROOT / "scheduler").iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    on_disk |= {p.name for p in (ROOT / "scheduler").glob("*.py") if p.name != "__init__.py"}
    assert drawn == on_disk
