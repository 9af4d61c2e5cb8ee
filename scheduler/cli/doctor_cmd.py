"""`nightowl doctor`."""

from __future__ import annotations

import typer

from scheduler.cli._common import EXIT_FINDINGS, JsonOpt, TriggersOpt, print_json, registry_for, settings_for
from scheduler.ops.doctor import run_checks
from scheduler.worker.app import create_app


def doctor(triggers: TriggersOpt = None, json_: JsonOpt = False) -> None:
    """Check settings, Celery reliability knobs, the database and Redis; exit 1 on findings."""
    settings = settings_for(triggers)
    registry = registry_for(settings)
    app = create_app(settings, registry)
    try:
        checks = run_checks(settings, registry, app)
    finally:
        app.close()
    if json_:
        print_json([c.as_dict() for c in checks])
    else:
        for c in checks:
            typer.echo(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_FINDINGS)
