"""What tests share besides fixtures: where the services are, waiting, child processes, and
builders for services, watchdogs and runs, and running the CLI (tests/conftest.py holds only
fixtures)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, cast

import psycopg
import redis

from agents import ManualFire, event_to_json
from agents.outbox import OutboxWrite
from scheduler.alerts import AlertManager, Channel
from scheduler.core.clock import Clock, FakeClock
from scheduler.core.publish import Publisher
from scheduler.core.settings import Settings
from scheduler.core.verdict import SUCCEEDED
from scheduler.dispatch.service import SchedulerService
from scheduler.ops.runs import fire
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.engine import make_engine
from scheduler.storage.store import NewRun, StartedAttempt, Store
from scheduler.watchdog.service import Watchdog
from scheduler.worker.app import create_app
from triggers import Registry, load
from triggers.abc import forget_module

REDIS_URL = os.environ.get("NIGHTOWL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get("NIGHTOWL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, message: str = "condition"
) -> object:
    """Poll until `predicate()` is truthy (real processes need real waiting, bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def child_env(settings: Settings, triggers: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env.update(
        {
            "NIGHTOWL_DATABASE_URL": settings.require_database_url(),
            "NIGHTOWL_REDIS_URL": settings.require_redis_url(),
            "NIGHTOWL_REDIS_PREFIX": settings.redis_prefix,
            "NIGHTOWL_TRIGGERS": triggers,
            "NIGHTOWL_HEARTBEAT_INTERVAL": "0.5",
            # A test's teardown must not wait 30 s for an agent that ignores its cancel
            # (test_drain sets its own grace).
            "NIGHTOWL_SHUTDOWN_GRACE": "2",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


class OutputProcess:
    """A real process whose combined stdout and stderr are kept as it runs (for assertions
    and failure messages)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self.on_line(line)

    def on_line(self, line: str) -> None:
        """Called for each line as it arrives (subclasses watch for readiness)."""

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 20) -> str:
        """SIGTERM, then SIGKILL after `timeout`; the output collected."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.output()


class WorkerProcess(OutputProcess):
    """A real `nightowl worker` process; its output is kept for failure messages."""

    def __init__(
        self, env: dict[str, str], pool: str, concurrency: int, command: list[str] | None = None
    ) -> None:
        name = f"test-{uuid.uuid4().hex[:6]}@%h"
        if command is None:
            command = [sys.executable, "-m", "scheduler.cli", "worker"]
        self._ready = threading.Event()
        super().__init__(
            [
                *command,
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--hostname={name}",
                "--loglevel=INFO",
            ],
            env,
        )

    def on_line(self, line: str) -> None:
        if " ready." in line:
            self._ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("worker did not become ready:\n" + "".join(self.lines[-40:]))


def registry_of(module: str, only: list[str] | None = None) -> Registry:
    """The module's registry, optionally restricted to some triggers."""
    full = load(module)
    if only is None:
        return full
    return Registry(full.modules, full.agents, {n: full.triggers[n] for n in only})


_open: list[SchedulerService] = []


def close_services() -> None:
    """Close every service `make_service` built (called after each test)."""
    while _open:
        _open.pop().close()


def make_service(
    settings: Settings,
    registry: Registry,
    clock: Clock,
    *,
    owner: str | None = None,
    publisher: Publisher | None = None,
    leader_ttl: float = 10.0,
) -> SchedulerService:
    svc = SchedulerService(
        registry=registry,
        store=Store(make_engine(settings.require_database_url())),
        publisher=publisher or Publisher(create_app(settings, registry)),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        key_prefix=settings.redis_prefix,
        leader_ttl=timedelta(seconds=leader_ttl),
        pending_grace=settings.pending_grace,
        owner=owner,
        source_defaults=settings.source_defaults(),
    )
    _open.append(svc)
    return svc


def follow_real_time(clock: FakeClock) -> None:
    """Move a fake clock up to the wall clock, for tests with real worker processes
    (workers stamp leases and retries with real time)."""
    clock.set(max(clock.now(), datetime.now(UTC)))


def fire_then_drain(
    svc: SchedulerService, clock: FakeClock, store: Store, seconds: float, drain_timeout: float = 40
) -> None:
    """Tick and sweep on real time for `seconds`, then stop firing and sweep until every
    run is terminal."""

    def step() -> None:
        follow_real_time(clock)
        svc.tick()
        svc.sweep()

    def drained() -> bool:
        step()
        return all(r.finished_at for r in store.list_runs())

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step()
        time.sleep(0.1)
    svc.registry.triggers.clear()
    wait_for(drained, timeout=drain_timeout, interval=0.2, message="every run to finish")


def queue_length(client: redis.Redis, prefix: str, queue: str = "agents") -> int:
    """Messages waiting in a kombu Redis queue (bare list plus priority sub-lists)."""
    total = 0
    for key in client.scan_iter(match=f"{prefix}{queue}*"):
        name = key.decode()
        if name == f"{prefix}{queue}" or name.startswith(f"{prefix}{queue}\x06\x16"):
            total += int(client.llen(key))
    return total


def make_watchdog(
    settings: Settings,
    registry: Registry,
    clock: Clock,
    *,
    channels: Sequence[Channel] = (),
    owner: str | None = None,
    revoke: Callable[[str], None] | None = None,
    repeat: float = 3600,
) -> Watchdog:
    """A watchdog on the test's Redis prefix and database, closed after the test."""
    store = Store(make_engine(settings.require_database_url()))
    dog = Watchdog(
        registry=registry,
        store=store,
        alerts=AlertManager(
            AlertStore(store.engine),
            clock,
            channels,
            repeat=timedelta(seconds=repeat),
            attempts=3,
            backoff_max=0.2,
        ),
        redis_client=redis.Redis.from_url(settings.require_redis_url()),
        clock=clock,
        publisher=Publisher(create_app(settings, registry)),
        key_prefix=settings.redis_prefix,
        leader_ttl=timedelta(seconds=10),
        revoke=revoke,
        owner=owner,
    )
    _dogs.append(dog)
    return dog


_dogs: list[Watchdog] = []


def close_watchdogs() -> None:
    while _dogs:
        _dogs.pop().close()


def build_revoke(settings: Settings, registry: Registry) -> Callable[[str], None]:
    """The production revoke (Celery remote control, terminate with SIGKILL)."""
    app = create_app(settings, registry)

    def revoke(task_id: str) -> None:
        app.control.revoke(task_id, terminate=True, signal="SIGKILL")

    return revoke


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server of the test's own, on a free port, to stop and start again
    (Redis going down, or coming up after a service started)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait:
            client = redis.Redis.from_url(self.url)
            wait_for(lambda: _pings(client), timeout=10, message="redis-server to start")
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def run_of(store: Store, run_id: str) -> tuple[str, str | None]:
    """A run's (status, terminal_reason)."""
    run = store.get_run(run_id)
    assert run is not None
    return run.status, run.terminal_reason


@contextlib.contextmanager
def database_refusing(settings: Settings) -> Iterator[None]:
    """PostgreSQL refusing every connection to the test's database (its sessions ended), as
    during a restart or a failover, until the block ends."""
    database = settings.require_database_url().rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def fire_run(settings: Settings, store: Store, module: str, trigger: str) -> str:
    """`nightowl fire TRIGGER` on the module's registry, now; the run's id."""
    registry = registry_of(module)
    publisher = Publisher(create_app(settings, registry))
    try:
        return fire(store, publisher, registry, trigger, datetime.now(UTC)).run_id
    finally:
        publisher.close()


def marks(client: redis.Redis, prefix: str, run_id: str) -> list[str]:
    """What the stall agents (tests/fixtures/stall_agents.py) recorded for a run, in order."""
    return [m.decode() for m in cast(list[bytes], client.lrange(f"{prefix}marks:{run_id}", 0, -1))]


def stream_entries(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A Redis stream's entries as (id, fields): the tests' clients keep bytes (redis-py's
    types allow str and None for clients that decode)."""
    return cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key))


def run_with_writes(
    store: Store, clock: FakeClock, writes: list[OutboxWrite], key: str, *, finish: bool = True
) -> StartedAttempt:
    """A manual run of the `steady` agent whose attempt commits `writes` to the outbox (or is
    left running with `finish=False`)."""
    (run,) = store.commit_tick(
        [
            NewRun(
                idempotency_key=key,
                trigger=None,
                agent="steady",
                queue="agents",
                event=event_to_json(ManualFire(trigger="m", fired_by="t")),
                logical_time=clock.now(),
                agent_version=None,
            )
        ],
        [],
        [],
        clock.now(),
    )
    started = store.begin_attempt(run.id, "w", "t", clock.now(), agent="steady")
    assert started is not None
    if finish:
        assert store.finish(started, SUCCEEDED, now=clock.now(), outbox=writes)
    return started


# -- the CLI -------------------------------------------------------------------------------

# Commands that run until stopped: always a real process, so a regression that starts one
# instead of refusing cannot take over the test process.
SERVICE_COMMANDS = frozenset({"scheduler", "worker", "watchdog", "relay", "flower", "dev"})


@dataclass(frozen=True)
class CliResult:
    """What one `nightowl` run returned, with the attributes of subprocess.CompletedProcess."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Cli(Protocol):
    """The `cli` fixture: run `nightowl ARGS` with the test's settings (see tests/conftest.py)."""

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 60,
        process: bool = False,
        **extra: str,
    ) -> CliResult: ...


def bare_env(**extra: str) -> dict[str, str]:
    """This process's environment with no NIGHTOWL_ setting at all (no URLs, no modules)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli_process(
    args: Sequence[str], env: Mapping[str, str], cwd: str | Path, timeout: float = 60
) -> CliResult:
    """`python -m scheduler.cli ARGS` as a real process."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(tuple(args), done.returncode, done.stdout, done.stderr)


def run_cli_in_process(args: Sequence[str], env: Mapping[str, str], cwd: str | Path) -> CliResult:
    """`nightowl ARGS` in this process, as `python -m scheduler.cli` would run it elsewhere.

    1. The environment becomes `env` for the run (typer's CliRunner isolation, which also
       captures stdout and stderr apart); the working directory becomes `cwd` and leads
       sys.path, as it does for `python -m`.
    2. `scheduler.cli.main` runs with `argv = ["nightowl", *args]`, so its exit-code mapping
       is the one under test; SystemExit gives the return code. Warnings logged meanwhile go
       to the captured stderr, as logging's last resort handler sends them in a fresh process.
    3. Like a process exit, the run leaves nothing behind: argv and sys.path are restored,
       modules imported from a test's folder are forgotten (the next run in another folder
       may reuse the module name), and connections the command left open are collected without warnings.
    """
    from typer.testing import CliRunner

    from scheduler.cli import main

    changes: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    changes.update({k: v for k, v in env.items() if os.environ.get(k) != v})
    folder = Path(cwd).resolve()
    saved_argv, saved_path, before = sys.argv, list(sys.path), set(sys.modules)
    with (
        contextlib.chdir(folder),
        CliRunner().isolation(env=changes) as (out, err, _),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ResourceWarning)
        last_resort = logging.StreamHandler(sys.stderr)  # the captured stream, by now
        last_resort.setLevel(logging.WARNING)
        logging.getLogger().addHandler(last_resort)
        sys.argv = ["nightowl", *args]
        sys.path.insert(0, str(folder))
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        finally:
            logging.getLogger().removeHandler(last_resort)
            sys.argv, sys.path[:] = saved_argv, saved_path
            _forget_modules_under(folder, set(sys.modules) - before)
            gc.collect()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return CliResult(tuple(args), code, stdout, stderr)


def _exit_code(code: object) -> int:
    """SystemExit's code as a process would report it (None is 0, a message is 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _forget_modules_under(folder: Path, names: set[str]) -> None:
    """Forget the modules a run imported from a test's own folder (never the project's: a
    second copy of a project module would be a second copy of its classes)."""
    for name in names:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file:
            continue
        where = Path(file).resolve()
        if where.is_relative_to(folder) and not where.is_relative_to(ROOT):
            del sys.modules[name]
            forget_module(name)
