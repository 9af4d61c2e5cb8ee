"""The reliability knobs checked together: `triggers validate` and `nightowl doctor`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from scheduler.core.settings import Settings
from tests.helpers import Cli, child_env

LONG_AGENT = textwrap.dedent("""
    from datetime import timedelta
    from agents import agent
    from triggers import cron

    @agent("marathon", timeout=timedelta(hours=3))
    def marathon(ctx, event):
        return None

    cron("0 3 * * *", agent=marathon, name="nightly")
""")


def test_timeout_beyond_visibility_fails_validation_naming_both(
    settings: Settings, tmp_path: Path, cli: Cli
) -> None:
    (tmp_path / "long_agent.py").write_text(LONG_AGENT)
    out = cli("triggers", "validate", env=child_env(settings, "long_agent"), cwd=tmp_path)
    assert out.returncode == 1
    assert "long_agent.py:6:" in out.stderr
    assert "timeout 3:00:00" in out.stderr and "visibility timeout 7200 s" in out.stderr
    assert "NIGHTOWL_VISIBILITY_TIMEOUT to at least 11130" in out.stderr
    raised = cli(
        "triggers",
        "validate",
        env=child_env(settings, "long_agent"),
        cwd=tmp_path,
        NIGHTOWL_VISIBILITY_TIMEOUT="11200",
    )
    assert raised.returncode == 0, raised.stderr
    # The worker refuses to start with such an agent rather than double-running it later.
    refused = cli("worker", env=child_env(settings, "long_agent"), cwd=tmp_path)
    assert refused.returncode == 1 and "visibility timeout" in refused.stderr


def test_doctor_reports_every_check(settings: Settings, store: object, cli: Cli) -> None:
    out = cli("doctor", "--json", env=child_env(settings, "tests.fixtures.e2e_triggers"))
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["check"]: c for c in json.loads(out.stdout)}
    assert set(checks) == {
        "json only",
        "acks late + reject on worker lost",
        "prefetch 1",
        "no prefetch on Redis",
        "visibility timeout covers every agent",
        "pools",
        "database",
        "redis",
    }
    assert all(c["ok"] for c in checks.values())
    assert "threads and solo: cooperative cancel only" in checks["pools"]["detail"]


def test_doctor_fails_on_an_unmigrated_database(settings: Settings, tmp_path: Path, cli: Cli) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    out = cli("doctor", env=child_env(settings, "tests.fixtures.e2e_triggers"), NIGHTOWL_DATABASE_URL=empty)
    assert out.returncode == 1
    assert "[FAIL] database" in out.stdout and "nightowl db upgrade" in out.stdout
