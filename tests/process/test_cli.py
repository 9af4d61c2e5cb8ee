"""The CLI as users run it: JSON shapes from DESIGN.md, exit codes; in-process where a command
ends by itself, real processes for services, terminals and races."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.core.clock import FakeClock
from scheduler.core.settings import Settings
from scheduler.storage.store import Store
from tests.helpers import ROOT, Cli, WorkerProcess, bare_env, child_env, make_service, registry_of, wait_for

MODULE = "tests.fixtures.e2e_triggers"
RUN_KEYS = {
    "id",
    "trigger",
    "agent",
    "status",
    "terminal_reason",
    "idempotency_key",
    "attempt",
    "scheduled_for",
    "started_at",
    "finished_at",
    "agent_version",
}


@pytest.fixture
def cli_triggers() -> str:
    return MODULE


def test_runs_list_and_show_json(settings: Settings, store: Store, cli: Cli) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock)
    svc.tick()
    for _ in range(3):
        clock.advance(1)
        svc.tick()
    out = cli("runs", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [set(r) for r in rows] == [RUN_KEYS] * 3
    assert [r["scheduled_for"] for r in rows] == [  # newest first, ISO 8601 UTC
        "2026-03-01T12:00:03+00:00",
        "2026-03-01T12:00:02+00:00",
        "2026-03-01T12:00:01+00:00",
    ]
    limited = json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)
    assert len(limited) == 1
    assert json.loads(cli("runs", "list", "--json", "--status", "succeeded").stdout) == []
    shown = cli("runs", "show", rows[0]["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert set(detail) == RUN_KEYS | {
        "event",
        "result",
        "error",
        "attempts",
        "usage",
        "steps",
        "waiting_for",
        "not_before",
        "deliveries",
        "last_heartbeat",
        "replay_of",
    }  # DESIGN's `runs show` shape
    assert detail["event"]["trigger"] == "every-second"
    missing = cli("runs", "show", "nope")
    assert missing.returncode == 1 and "no run with id" in missing.stderr
    bad_status = cli("runs", "list", "--status", "sleeping")
    assert bad_status.returncode == 2


def test_triggers_list_and_next(settings: Settings, store: Store, cli: Cli) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    make_service(settings, registry_of(MODULE, ["every-second"]), clock).tick()
    out = cli("triggers", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows["every-second"]) == {
        "name",
        "kind",
        "agent",
        "state",
        "next_evaluation",
        "source_failing",
        "paused",
    }
    assert rows["every-second"]["kind"] == "cron" and rows["every-second"]["agent"] == "echo"
    assert rows["every-second"]["next_evaluation"] == "2026-03-01T12:00:01+00:00"
    assert rows["failing"]["state"] == "new"  # never evaluated
    nxt = cli(
        "triggers",
        "next",
        "every-second",
        "--triggers",
        MODULE,
        "--count",
        "2",
        "--after",
        "2026-10-25T00:00:00+02:00",
        "--json",
        env=bare_env(),
    )
    assert nxt.returncode == 0, nxt.stderr
    assert json.loads(nxt.stdout) == ["2026-10-24T22:00:01+00:00", "2026-10-24T22:00:02+00:00"]


def test_db_upgrade_and_refusal_without_urls(settings: Settings, cli: Cli) -> None:
    up = cli("db", "upgrade")
    assert up.returncode == 0 and "up to date" in up.stdout, up.stderr
    refused = cli("scheduler", "--triggers", MODULE, env=bare_env(), timeout=30)
    assert refused.returncode == 1
    assert "NIGHTOWL_DATABASE_URL is not set" in refused.stderr


def test_celery_app_is_public_and_json_only(settings: Settings) -> None:
    code = (
        "from scheduler import celery_app as a; import json; print(json.dumps({"
        "'accept': a.conf.accept_content, 'ser': a.conf.task_serializer,"
        "'acks_late': a.conf.task_acks_late, 'reject': a.conf.task_reject_on_worker_lost,"
        "'prefetch': a.conf.worker_prefetch_multiplier,"
        "'prefix': a.conf.broker_transport_options['global_keyprefix'],"
        "'tasks': sorted(t for t in a.tasks if t.startswith('agent.'))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(settings, MODULE),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    conf = json.loads(out.stdout)
    assert conf == {
        "accept": ["json"],
        "ser": "json",
        "acks_late": True,
        "reject": True,
        "prefetch": 1,
        "prefix": settings.redis_prefix,
        "tasks": ["agent.always-fails", "agent.async-echo", "agent.echo", "agent.returns-set", "agent.slow"],
    }


def test_scheduler_and_plain_celery_worker_processes(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Given `celery -A scheduler.celery_app worker` and `nightowl scheduler`, as deployed
    worker = WorkerProcess(
        child_env(settings, "tests.fixtures.seconds_triggers"),
        "solo",
        1,
        command=[
            sys.executable,
            "-m",
            "celery",
            "-A",
            "scheduler.celery_app",
            "worker",
            "-Q",
            "agents",
            "--without-mingle",
            "--without-gossip",
        ],
    )
    try:
        worker.wait_ready()
        sched = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "scheduler"],
            cwd=ROOT,
            env=child_env(settings, "tests.fixtures.seconds_triggers"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # When a seconds-level schedule comes due, then Then a run succeeds
            wait_for(
                lambda: any(r.status == "succeeded" for r in store.list_runs()),
                timeout=30,
                message="a succeeded run from the scheduler process",
            )
        finally:
            sched.terminate()
            out, _ = sched.communicate(timeout=30)
        assert sched.returncode == 0, out
        assert "became scheduler leader" in out and "fired each-second" in out
        run = next(r for r in store.list_runs() if r.status == "succeeded")
        assert run.result == {"pong": "each-second"}
    finally:
        worker.stop()


def test_triggers_list_and_show_polling_kinds_with_masked_urls(
    settings: Settings, store: Store, cli: Cli
) -> None:
    module = "tests.fixtures.poll_triggers"
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    svc = make_service(settings, registry_of(module), clock)
    for _ in range(3):
        svc.tick()
        clock.advance(5)
    env = child_env(settings, module)
    out = cli("triggers", "list", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {n: (r["kind"], r["state"], r["source_failing"]) for n, r in rows.items()} == {
        "down-db": ("db_change", "ok", True),
        "hot-gauge": ("metric", "firing", False),
        "calm-queue": ("queue_depth", "ok", False),
    }
    assert rows["hot-gauge"]["next_evaluation"] == "2026-03-01T12:00:15+00:00"
    shown = cli("triggers", "show", "down-db", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "hunter22" not in shown.stdout and "hunter22" not in out.stdout
    detail = json.loads(shown.stdout)
    assert detail["settings"]["db_url"] == "postgresql://shop:***@127.0.0.1:1/shop"
    assert detail["stored_state"]["failures"] == 3 and detail["stored_state"]["last_error"]
    table = cli("triggers", "list", env=env)
    assert "SOURCE_FAILING" in table.stdout and "down-db" in table.stdout
    not_cron = cli("triggers", "next", "hot-gauge", env=env)
    assert not_cron.returncode == 1 and "previews cron triggers only" in not_cron.stderr


def test_watchdog_process_leads_alerts_and_lists_them(settings: Settings, store: Store, cli: Cli) -> None:
    # Given `nightowl watchdog` with a webhook and no scheduler anywhere
    from tests.receiver import Receiver

    receiver = Receiver()
    # (a module with agents but no cron trigger: a minute boundary must not add a run_late)
    env = child_env(
        settings,
        "tests.fixtures.poll_agents",
        NIGHTOWL_LEADER_TTL="1",
        NIGHTOWL_WATCHDOG_INTERVAL="0.2",
        NIGHTOWL_ALERT_WEBHOOK_URL=receiver.url,
        NIGHTOWL_ALERT_WEBHOOK_SECRET="cli-secret",
    )
    dog = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "watchdog"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # When the scheduler leader has been missing past the grace (2 x leader_ttl)
        wait_for(lambda: receiver.requests, timeout=30, message="the scheduler_down alert")
    finally:
        dog.terminate()
        out, _ = dog.communicate(timeout=30)
        receiver.close()
    # Then it was alerted once, signed, and `alerts list` shows it
    assert dog.returncode == 0, out
    assert "became watchdog leader" in out and "cli-secret" not in out
    assert [a["kind"] for a in receiver.alerts()] == ["scheduler_down"]
    listed = cli("alerts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["kind"], r["state"], r["severity"]) for r in rows] == [
        ("scheduler_down", "firing", "critical")
    ]
    assert set(rows[0]) >= {
        "id",
        "kind",
        "state",
        "dedupe_key",
        "episode",
        "run_id",
        "trigger",
        "agent",
        "attempt",
        "message",
        "details",
        "channels",
        "created_at",
    }
    assert list(rows[0]["channels"].values()) == ["sent"]
    table = cli("alerts", "list")
    assert "scheduler_down" in table.stdout
    bad = cli("alerts", "list", "--state", "sleeping")
    assert bad.returncode == 2


def test_outbox_status_and_retry(settings: Settings, store: Store, cli: Cli) -> None:
    from agents.outbox import OutboxWrite
    from scheduler.storage.outbox_store import OutboxStore, insert_writes

    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        insert_writes(
            conn,
            "run-1",
            [OutboxWrite("cache", "a", 1), OutboxWrite("audit", "a", 1), OutboxWrite("audit", "b", 2)],
            now,
        )
    outbox = OutboxStore(store.engine)
    claimed = outbox.claim("relay-x", now, timedelta(seconds=30), 10)
    audit_a = next(e for e in claimed if e.sink == "audit" and e.key == "a")
    outbox.delivered("relay-x", [e.id for e in claimed if e.sink == "cache"], now)
    assert outbox.failed("relay-x", [(audit_a, "500 from the audit store")], now, max_attempts=1) == [
        audit_a.id
    ]
    out = cli("outbox", "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert set(status) == {"sinks", "oldest_pending_age_s"}  # DESIGN.md's shape
    assert status["sinks"]["cache"] == {"pending": 0, "claimed": 0, "delivered": 1, "dead": 0}
    audit = status["sinks"]["audit"]
    assert (audit["pending"], audit["claimed"], audit["dead"]) == (1, 1, 1)
    assert status["oldest_pending_age_s"] >= 0
    assert "SINK" in cli("outbox", "status").stdout
    assert cli("outbox", "retry").returncode == 2  # must say which rows
    retried = cli("outbox", "retry", "--dead", "--sink", "audit", "--json")
    assert json.loads(retried.stdout) == {"requeued": 1}
    assert json.loads(cli("outbox", "status", "--json").stdout)["sinks"]["audit"]["dead"] == 0


def test_status_shows_leaders_workers_queues_runs_alerts_and_lag(
    settings: Settings, store: Store, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    # Given a scheduler leader that fired a few runs, a worker, and one open alert
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    # (a long lease: the status calls below take seconds each on a loaded machine)
    svc = make_service(settings, registry_of(MODULE, ["every-second"]), clock, leader_ttl=120)
    svc.tick()
    for _ in range(2):
        clock.advance(1)
        svc.tick()
    from scheduler.alerts import Alert, AlertKind, AlertManager
    from scheduler.storage.alert_store import AlertStore

    AlertManager(AlertStore(store.engine), clock).fire(
        Alert(kind=AlertKind.RUN_LATE, dedupe_key="run_late:x", message="late", trigger="x")
    )
    # Queued runs are shown against the broker's messages (no worker yet: both are 2).
    before = json.loads(cli("status", "--json").stdout)
    assert before["queued_runs"] == {"agents": 2}
    assert before["queues"]["agents"]["depth"] == 2
    assert "2 runs queued; broker: 2 waiting" in cli("status").stdout
    worker = start_worker(MODULE)
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["leaders"]["scheduler"]["alive"] is True
    assert data["leaders"]["watchdog"]["alive"] is False
    assert any(f"-{worker.proc.pid}-" in w or "test-" in w for w in data["workers"]), data["workers"]
    assert sum(data["runs_last_hour"].values()) == 2
    assert data["open_alerts"] == {"run_late": 1}
    assert set(data["queues"]) >= {"agents"} and data["outbox_lag_s"] == 0.0
    screen = cli("status")
    assert "scheduler leader" in screen.stdout and "open alerts" in screen.stdout


def _unreachable_env(database: bool, redis_down: bool) -> dict[str, str]:
    from tests.helpers import free_port

    env = bare_env()
    env["NIGHTOWL_DATABASE_URL"] = f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/x" if database else ""
    env["NIGHTOWL_REDIS_URL"] = f"redis://:hunter2@127.0.0.1:{free_port()}/0" if redis_down else ""
    return {k: v for k, v in env.items() if v}


def test_an_unreachable_database_or_redis_is_one_clear_line_not_a_traceback(cli: Cli) -> None:
    env = _unreachable_env(database=True, redis_down=True)
    listed = cli("runs", "list", env=env)
    assert listed.returncode == 1, listed.stderr
    assert "Traceback" not in listed.stderr and "hunter2" not in listed.stderr
    assert listed.stderr.startswith("error: the database") and "NIGHTOWL_DATABASE_URL" in listed.stderr
    assert "Connection refused" in listed.stderr
    cancelled = cli(
        "runs",
        "cancel",
        "some-run",
        env=env | {"NIGHTOWL_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/empty.db"},
    )
    assert cancelled.returncode == 1 and "Traceback" not in cancelled.stderr, cancelled.stderr
    assert "nightowl db upgrade" in cancelled.stderr  # a database never migrated says how to fix it


def test_status_reports_services_that_are_down_and_still_exits_0(
    settings: Settings, store: Store, cli: Cli
) -> None:
    env = child_env(settings, MODULE)
    env["NIGHTOWL_REDIS_URL"] = _unreachable_env(False, True)["NIGHTOWL_REDIS_URL"]
    out = cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "Connection refused" in data["errors"]["redis"] and "hunter2" not in out.stdout
    assert data["runs_last_hour"] == {} and "database" not in data["errors"]
    both = cli("status", env=_unreachable_env(True, True))
    assert both.returncode == 0, both.stderr
    assert "redis" in both.stdout and "database" in both.stdout and "UNREACHABLE" in both.stdout


def in_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run `nightowl` on a pseudo-terminal, as an operator at a shell would; return what the
    terminal showed."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tempfile.mkdtemp(),
        env=env | {"TERM": "xterm-256color", "COLUMNS": "140"},
    )
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            shown += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), shown.decode(errors="replace")


def test_long_operations_show_progress_on_a_terminal_and_stay_quiet_when_piped(
    tmp_path: Path, store: Store, settings: Settings, cli: Cli
) -> None:
    from agents.outbox import OutboxWrite
    from scheduler.storage.outbox_store import OutboxStore, insert_writes

    fresh = bare_env() | {"NIGHTOWL_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    code, screen = in_terminal(["db", "upgrade"], fresh)
    assert code == 0, screen
    from scheduler.storage.migrate import MIGRATIONS, head_revision

    shipped = len(list((MIGRATIONS / "versions").glob("0*.py")))
    assert "migrating" in screen and f"{shipped}/{shipped}" in screen
    assert f"{head_revision()}: " in screen  # the bar's last label names the last migration
    assert "applied 0001, 0002, 0003" in screen
    again = cli("db", "upgrade", env=fresh)
    assert again.returncode == 0 and again.stderr == "" and "applied" not in again.stdout
    # A large dead backlog is requeued in batches, with a bar on a terminal only
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        insert_writes(conn, "run-1", [OutboxWrite("audit", f"k{i}", i) for i in range(2500)], now)
        conn.execute(sa.text("UPDATE outbox SET status = 'dead'"))
    code, screen = in_terminal(["outbox", "retry", "--dead"], child_env(settings, MODULE))
    assert code == 0, screen
    assert "requeueing dead rows" in screen and "3/3" in screen and "requeued 2500" in screen
    assert OutboxStore(store.engine).count_dead(None) == 0
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET status = 'dead'"))
    piped = cli("outbox", "retry", "--dead", "--json")
    assert piped.returncode == 0 and piped.stderr == ""
    assert json.loads(piped.stdout) == {"requeued": 2500}


def test_replicas_running_db_upgrade_at_once_on_postgresql_all_succeed() -> None:
    """Kubernetes init containers and compose restarts run `db upgrade` from several replicas
    at the same moment; an advisory lock makes the others wait, then find nothing to do."""
    import uuid

    import psycopg

    from tests.helpers import PG_ADMIN_URL

    name = f"nightowl_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = bare_env() | {"NIGHTOWL_DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "db", "upgrade"],
                cwd=tempfile.mkdtemp(),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        assert [code for code, _, _ in results] == [0] * 4, results
        assert sum("applied 0001, 0002, 0003" in out for _, out, _ in results) == 1
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


OVERLAP = "tests.fixtures.overlap_triggers"


def test_fire_with_the_broker_down_records_the_run_says_so_and_exits_0(
    settings: Settings, store: Store, cli: Cli
) -> None:
    from tests.helpers import free_port

    env = child_env(settings, OVERLAP, NIGHTOWL_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    out = cli("fire", "ov-allow", env=env)
    # Then the run is recorded, stdout has its id, and stderr says the broker was not reached
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    run = store.get_run(run_id)
    assert run is not None and run.status == "pending", run
    assert "Traceback" not in out.stderr and "hunter2" not in out.stdout + out.stderr
    assert "broker could not be reached" in out.stderr and "NIGHTOWL_REDIS_URL" in out.stderr
    assert "scheduler publishes it" in out.stderr and "Connection refused" in out.stderr
    # and it will run: once the broker answers, the sweeper publishes it
    clock = FakeClock(datetime.now(UTC) + timedelta(seconds=60))
    svc = make_service(settings, registry_of(OVERLAP, []), clock)
    svc.tick()  # takes the leader lease
    assert svc.sweep() == 1
    assert store.get_run(run_id).status == "queued"  # type: ignore[union-attr]


def test_fire_prints_an_id_only_for_a_run_that_will_happen(
    settings: Settings, store: Store, cli: Cli
) -> None:
    first = cli("fire", "ov-skip", env=child_env(settings, OVERLAP))
    assert first.returncode == 0 and first.stderr == "", first.stderr
    run_id = first.stdout.strip()
    assert store.get_run(run_id).status == "queued"  # type: ignore[union-attr]
    # A second fire while the first is active: the overlap policy skips it
    for args in ([], ["--json"]):
        skipped = cli("fire", "ov-skip", *args, env=child_env(settings, OVERLAP))
        assert skipped.returncode == 1, skipped
        assert skipped.stdout == ""  # no id of a run that will never happen
        assert "skipped" in skipped.stderr and "--force" in skipped.stderr
    forced = cli("fire", "ov-skip", "--force", "--json", env=child_env(settings, OVERLAP))
    assert forced.returncode == 0, forced.stderr
    assert set(json.loads(forced.stdout)) == {"run_id", "idempotency_key"}
    # The same --key again: the run it made is still active, so its id, with a note
    keyed = cli("fire", "ov-allow", "--key", "k1", env=child_env(settings, OVERLAP))
    again = cli("fire", "ov-allow", "--key", "k1", env=child_env(settings, OVERLAP))
    assert keyed.returncode == 0 and again.returncode == 0, again.stderr
    assert again.stdout == keyed.stdout and "fired before" in again.stderr
    # Once that run has ended, the key makes nothing
    assert cli("runs", "cancel", keyed.stdout.strip(), env=child_env(settings, OVERLAP)).returncode == 0
    ended = cli("fire", "ov-allow", "--key", "k1", env=child_env(settings, OVERLAP))
    assert ended.returncode == 1 and ended.stdout == "", ended
    assert "already ended cancelled" in ended.stderr and "another --key" in ended.stderr
    assert cli("fire", "ov-allow", "--payload", "{nope", env=child_env(settings, OVERLAP)).returncode == 2
    assert "Exit codes" in cli("fire", "--help").stdout
