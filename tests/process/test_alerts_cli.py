"""`alerts ack` and `alerts list --open` through the CLI."""

from __future__ import annotations

import json

from scheduler.alerts import Alert, AlertKind, AlertManager
from scheduler.core.clock import SystemClock
from scheduler.core.settings import Settings
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.store import Store
from tests.helpers import Cli


def test_ack_marks_the_episode_and_list_open_shows_what_is_open(
    pg_settings: Settings, pg_store: Store, cli: Cli
) -> None:
    manager = AlertManager(AlertStore(pg_store.engine), SystemClock())
    for key in ("a", "b"):
        manager.fire(
            Alert(
                kind=AlertKind.RUN_DEAD,
                dedupe_key=f"run_dead:{key}",
                message=f"run {key} is dead",
                run_id=key,
            )
        )
    manager.resolve(Alert(kind=AlertKind.RUN_DEAD, dedupe_key="run_dead:b", message="b retried", run_id="b"))
    opened = json.loads(cli("alerts", "list", "--open", "--json").stdout)
    assert [(a["run_id"], a["state"], a["acked_at"]) for a in opened] == [("a", "firing", None)]
    out = cli("alerts", "ack", str(opened[0]["id"]), "--reason", "on it", "--json")
    assert out.returncode == 0, out.stderr
    acked = json.loads(out.stdout)
    assert acked["ack_reason"] == "on it" and acked["acked_by"] and acked["acked_at"]
    assert "firing (acked)" in cli("alerts", "list", "--open").stdout
    resolved_b = next(
        a for a in json.loads(cli("alerts", "list", "--json").stdout) if a["state"] == "resolved"
    )
    refused = cli("alerts", "ack", str(resolved_b["id"]))
    assert refused.returncode == 1 and "already resolved" in refused.stderr
    assert cli("alerts", "ack", "987654").returncode == 1
    manager.close()
