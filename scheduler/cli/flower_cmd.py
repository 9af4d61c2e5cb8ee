"""`nightowl flower`: Flower on `scheduler.celery_app`, authenticated off loopback.

Flower shows `agent.<name>` tasks with trigger, agent and attempt in their
`argsrepr` (the real argument stays `[run_id]`). It refuses to listen on a
non-loopback address without authentication: basic auth from
NIGHTOWL_FLOWER_BASIC_AUTH (passed through the environment, never argv, so it
does not show in `ps`), or Flower's own OAuth settings (FLOWER_AUTH_PROVIDER).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli._common import EXIT_FINDINGS, TriggersOpt, settings_for
from scheduler.core.startup import BROKER, wait_until_ready


def _loopback(address: str) -> bool:
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower(
    triggers: TriggersOpt = None,
    address: Annotated[str, typer.Option(help="Listen address (loopback unless you open it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    db: Annotated[Path, typer.Option(help="Flower's persistent state (survives restarts).")] = Path(
        ".nightowl/flower.db"
    ),
) -> None:
    """Start Flower for this deployment's Celery app."""
    settings = settings_for(triggers, dev_env_file=False)
    basic = settings.flower_basic_auth
    oauth = os.environ.get("FLOWER_AUTH_PROVIDER")
    if not _loopback(address) and basic is None and not oauth:
        typer.echo(
            f"nightowl flower: refusing to listen on {address} without authentication. "
            "Fix: set NIGHTOWL_FLOWER_BASIC_AUTH=user:password (or Flower's OAuth: "
            "FLOWER_AUTH_PROVIDER and FLOWER_OAUTH2_*), or use --address 127.0.0.1",
            err=True,
        )
        raise typer.Exit(EXIT_FINDINGS)
    if settings.database_url is None or settings.redis_url is None:
        typer.echo("nightowl flower: NIGHTOWL_REDIS_URL and NIGHTOWL_DATABASE_URL must be set", err=True)
        raise typer.Exit(EXIT_FINDINGS)
    wait_until_ready("flower", settings, (BROKER,))  # Flower reads the broker, not our tables
    db.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if settings.triggers:
        env["NIGHTOWL_TRIGGERS"] = ",".join(settings.triggers)
    if basic is not None:
        env["FLOWER_BASIC_AUTH"] = basic.get_secret_value()
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "scheduler.celery_app",
        "flower",
        f"--address={address}",
        f"--port={port}",
        "--persistent=True",
        f"--db={db}",
        "--state_save_interval=10000",
    ]
    typer.echo(
        f"nightowl flower: http://{address}:{port} "
        f"({'basic auth' if basic else 'OAuth' if oauth else 'loopback, no auth'})"
    )
    os.execve(sys.executable, argv, env)  # noqa: S606 - replace this process with Flower
