"""`nightowl dev --reload`: restart the services when a trigger module changes.

The files watched are the trigger modules' own (and anything in their folders, where their
helpers live). A change is checked first, in a fresh interpreter, with `triggers validate`:
a module that no longer loads is reported and the running services keep the old code,
instead of `dev` exiting on a typo. A module that loads makes `dev` stop its services (the
worker drains) and start again in a fresh process, so every import is new.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import typer


def watched_paths(modules: Sequence[str]) -> list[Path]:
    """The folders holding the trigger modules (a helper module beside one counts too)."""
    folders: set[Path] = set()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            folders.add(Path(spec.origin).resolve().parent)
    return sorted(folders)


def validates(modules: Sequence[str]) -> tuple[bool, str]:
    """Whether the modules load now, judged in a fresh interpreter (the running one has the
    old versions imported), with what `triggers validate` said."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "triggers", "validate", "--triggers", ",".join(modules)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def watch(modules: Sequence[str], stop: threading.Event, on_valid_change: Callable[[], None]) -> None:
    """Block until `stop`; call `on_valid_change` once a change to the modules validates."""
    from watchfiles import PythonFilter
    from watchfiles import watch as watch_files

    paths = watched_paths(modules)
    if not paths:
        typer.echo("nightowl dev: --reload found no module files to watch", err=True)
        return
    for changes in watch_files(*paths, watch_filter=PythonFilter(), stop_event=stop, rust_timeout=500):
        names = ", ".join(sorted({Path(p).name for _, p in changes}))
        ok, said = validates(modules)
        if ok:
            typer.echo(f"nightowl dev: {names} changed; restarting the services")
            on_valid_change()
            return
        typer.echo(f"nightowl dev: {names} changed but does not load; still running the old code:\n{said}")
