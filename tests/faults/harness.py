"""The fault harness's machinery: a Redis it may kill, databases it creates and drops, and
the six nightowl processes of a deployment (two scheduler replicas, two workers, the
watchdog, the relay), each a real `nightowl` process in its own session.

What is killed and what is not:
- nightowl's broker, leases and heartbeats live on a private `redis-server` (AOF on), which
  scenarios SIGKILL and restart, with or without its data;
- nightowl's own database is a fresh PostgreSQL database per scenario, whose sessions
  scenarios terminate or refuse;
- the sinks, the watched table, the watched list and the agent's execution counters live
  on stores no scenario touches: a second fresh database (`data`) and the shared Redis under
  a key prefix of the scenario's own.

Every process started here is stopped by its process group in `Cluster.close()`, and every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
NIGHTOWL = (
    [str(VENV_BIN / "nightowl")] if (VENV_BIN / "nightowl").exists() else [PYTHON, "-m", "scheduler.cli"]
)
SHARED_REDIS = os.environ.get("NIGHTOWL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = os.environ.get("NIGHTOWL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MODULE = "tests.faults.fault_triggers"
PREFIX = "nightowl:"  # nightowl's prefix on the private Redis

# Shorter timings than the defaults, so a scenario sees detection and recovery in seconds.
TIMING = {
    "NIGHTOWL_HEARTBEAT_INTERVAL": "0.5",
    "NIGHTOWL_WATCHDOG_INTERVAL": "0.5",
    "NIGHTOWL_SWEEP_INTERVAL": "0.5",
    "NIGHTOWL_TICK_INTERVAL": "0.25",
    "NIGHTOWL_LEADER_TTL": "3",
    "NIGHTOWL_CLAIM_TTL": "3",
    "NIGHTOWL_PENDING_GRACE": "1",
    "NIGHTOWL_SHUTDOWN_GRACE": "0",
    "NIGHTOWL_ALERT_REPEAT": "3600",
}
LEADER_TTL_S = float(TIMING["NIGHTOWL_LEADER_TTL"])
# The stated bound: every run is terminal this long after the last fault ended.
TERMINAL_BOUND_S = float(os.environ.get("NIGHTOWL_FAULTS_BOUND", "30"))


def _die_with_us() -> None:
    """preexec_fn: the kernel SIGKILLs the child if the harness dies first (PR_SET_PDEATHSIG),
    so an interrupted run leaves no Redis or nightowl process behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # a store under a fault may refuse the probe: try again
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- the Redis a scenario may kill -------------------------------------------------------


class PrivateRedis:
    """`redis-server` on a port and directory of its own, AOF on (everysec)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--logfile",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_us,  # noqa: PLW1509
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(client.ping, 15, 0.05, "the private Redis to answer")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def wipe(self) -> None:
        """Lose every write (as a failover to a replica that had none of them does)."""
        shutil.rmtree(self.dir)
        self.dir.mkdir()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)


# -- databases -----------------------------------------------------------------------------


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def db_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def engine_for(url: str) -> sa.Engine:
    """A harness engine that holds no connection between checks (faults kill sessions)."""
    from scheduler.storage.engine import normalise_url

    return sa.create_engine(normalise_url(url), poolclass=NullPool, connect_args={"connect_timeout": 3})


def drop_abandoned() -> None:
    """Drop scenario databases whose harness process is gone (a run that was killed)."""
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'nof\\_%'").fetchall()
        ]
    for name in names:
        pid = name.rsplit("_", 1)[-1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(psycopg.Error):
            _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """nightowl's database (faults target it) and the data database (never touched)."""

    def __init__(self, tag: str) -> None:
        self.nightowl_name = f"nof_{tag}"
        self.data_name = f"nof_data_{tag}"
        self.nightowl_url = db_url(self.nightowl_name)
        self.data_url = db_url(self.data_name)

    def create(self, rows_table: str) -> None:
        from scheduler.storage.engine import make_engine
        from scheduler.storage.migrate import upgrade

        drop_abandoned()
        for name in (self.nightowl_name, self.data_name):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _admin(f'CREATE DATABASE "{name}"')
        engine = make_engine(self.nightowl_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        data = engine_for(self.data_url)
        with data.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TABLE {rows_table} (id bigserial PRIMARY KEY, "
                    "payload text NOT NULL, created_at timestamptz DEFAULT now())"
                )
            )
        data.dispose()

    def drop(self) -> None:
        for name in (self.nightowl_name, self.data_name):
            with contextlib.suppress(psycopg.Error):
                _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_sessions(self) -> int:
        """pg_terminate_backend of every session on nightowl's database; how many."""
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.nightowl_name,),
            ).fetchall()
        return sum(1 for (ok,) in rows if ok)

    def busy_sessions(self) -> int:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND state IN ('active', 'idle in transaction')",
                (self.nightowl_name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def allow_connections(self, allowed: bool) -> None:
        _admin(f'ALTER DATABASE "{self.nightowl_name}" ALLOW_CONNECTIONS {str(allowed).lower()}')


# -- the test's HTTP servers: a Prometheus answer and a webhook receiver -------------------


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.port = free_port()
        self.handler = handler
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class MetricServer(_Server):
    """Answers `/api/v1/query` as Prometheus does, with the value the driver sets (`+Inf`
    included: an error ratio when traffic stops)."""

    def __init__(self) -> None:
        self.value = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                value = outer.value
                text = ("+Inf" if value > 0 else "-Inf") if math.isinf(value) else repr(value)
                body = json.dumps(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [{"metric": {"job": "faults"}, "value": [time.time(), text]}],
                        },
                    }
                )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)


class HookReceiver(_Server):
    """The webhook sink's receiver: records every POST in arrival order.

    `hold_until` (a monotonic instant) makes each request that arrives before it wait until
    then: a sink that hangs past the relay's claim TTL and then answers.
    """

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hold_until = 0.0
        self.held = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                wait = outer.hold_until - time.monotonic()
                if wait > 0:
                    with outer._lock:
                        outer.held += 1
                    time.sleep(wait)
                doc = json.loads(body)
                with outer._lock:
                    outer.received.append(
                        {
                            "id": doc["id"],
                            "key": doc["key"],
                            "seq": doc["seq"],
                            "run_id": doc["run_id"],
                            "at": time.time(),
                        }
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)


# -- nightowl processes --------------------------------------------------------------------


@dataclass
class Service:
    """One `nightowl <role>` process in a session of its own; output goes to a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stopped: bool = False  # SIGSTOPped right now
    down: bool = True  # killed on purpose (a fault, or the end): not restarted by the supervisor
    lock: threading.RLock = field(default_factory=threading.RLock)

    def start(self) -> None:
        with self.lock:
            self._start()

    def _start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise AssertionError(f"{self.name} is already running (pid {self.proc.pid})")
        self.down = False
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_us,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            self.stopped = sig == signal.SIGSTOP or (self.stopped and sig != signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker's pool children too), and reap it."""
        with self.lock:
            self._kill()

    def _kill(self) -> None:
        self.down = True
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.stopped = False

    def stop(self, grace: float = 3.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.stopped:
                self.signal(signal.SIGCONT)
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def output_since_start(self) -> str:
        text = self.output()
        marker = f"=== start {self.starts} at "
        return text[text.rfind(marker) :] if marker in text else text


@dataclass
class FaultLog:
    """What was injected and when (wall-clock seconds), for the figures and the bound."""

    events: list[dict[str, Any]] = field(default_factory=list)
    blind_until: float = 0.0  # the scheduler cannot see sources until then (driver holds)
    active: int = 0

    def begin(self, kind: str, blinds: bool = False, **details: Any) -> dict[str, Any]:
        event = {"fault": kind, "start": time.time(), "end": None, **details}
        self.events.append(event)
        if blinds:
            self.active += 1
        event["_blinds"] = blinds
        return event

    def end(self, event: dict[str, Any], **details: Any) -> None:
        event["end"] = time.time()
        event.update(details)
        if event.pop("_blinds", False):
            self.active -= 1
            self.blind_until = max(self.blind_until, event["end"] + LEADER_TTL_S + 2)

    def instant(self, kind: str, blinds: bool = False, **details: Any) -> dict[str, Any]:
        event = self.begin(kind, blinds, **details)
        self.end(event)
        return event

    def scheduler_blind(self) -> bool:
        return self.active > 0 or time.time() < self.blind_until

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def last_end(self) -> float | None:
        ends = [e["end"] or e["start"] for e in self.events]
        return max(ends) if ends else None

    def public(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in self.events]


class Cluster:
    """A whole deployment for one scenario. Use as a context manager: closing it stops every
    process, the private Redis and the servers, drops both databases and the shared keys."""

    def __init__(
        self,
        scenario: str,
        *,
        hook: bool = False,
        relays: int = 1,
        scheduler_launcher: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.tag = f"{scenario.replace('-', '_')[:24]}_{os.getpid()}"
        self.workdir = RESULTS / "logs" / scenario
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.prefix = f"nightowl-faults-{uuid.uuid4().hex[:8]}:"  # on the shared Redis
        self.rows_table = f"rows_{self.tag}"
        self.effects_table = f"fx_{self.tag}"
        self.redis = PrivateRedis(self.workdir)
        self.dbs = Databases(self.tag)
        self.metric = MetricServer()
        self.hook = HookReceiver() if hook else None
        self.faults = FaultLog()
        self.shared = redis.Redis.from_url(SHARED_REDIS)
        self.services: dict[str, Service] = {}
        self._relays = relays
        self._scheduler_launcher = scheduler_launcher
        self._extra_env = extra_env or {}
        self._engine: sa.Engine | None = None
        self._data: sa.Engine | None = None
        self.crashes: list[dict[str, Any]] = []
        self._supervising = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="fault-supervisor", daemon=True)

    # -- life cycle ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTOWL_")}
        env.update(TIMING)
        env.update(
            {
                "NIGHTOWL_DATABASE_URL": self.dbs.nightowl_url,
                "NIGHTOWL_REDIS_URL": self.redis.url,
                "NIGHTOWL_REDIS_PREFIX": PREFIX,
                "NIGHTOWL_TRIGGERS": MODULE,
                "NIGHTOWL_LOG_LEVEL": "INFO",
                "NIGHTOWL_FAULT_TAG": self.tag,
                "NIGHTOWL_FAULT_DATA_URL": self.dbs.data_url,
                "NIGHTOWL_FAULT_SINK_REDIS": SHARED_REDIS,
                "NIGHTOWL_FAULT_PREFIX": self.prefix,
                "NIGHTOWL_FAULT_METRIC_URL": self.metric.url,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.hook is not None:
            env["NIGHTOWL_FAULT_HOOK_URL"] = self.hook.hook_url
        env.update(self._extra_env)
        # NIGHTOWL_FAULTS_SET_<NAME>=v sets NIGHTOWL_<NAME>=v in every process (to try a
        # scenario under another setting; the parent's own NIGHTOWL_* never leak in)
        env.update(
            {
                "NIGHTOWL_" + k[len("NIGHTOWL_FAULTS_SET_") :]: v
                for k, v in os.environ.items()
                if k.startswith("NIGHTOWL_FAULTS_SET_")
            }
        )
        return env

    def __enter__(self) -> Cluster:
        try:
            self.redis.start()
            self.dbs.create(self.rows_table)
            env = self.env()
            schedulers = self._scheduler_launcher or [*NIGHTOWL, "scheduler"]
            roles: list[tuple[str, list[str]]] = [
                ("scheduler-a", schedulers),
                ("scheduler-b", schedulers),
                # the default pool (children a kill of the process group takes along) and
                # the threads pool, side by side
                (
                    "worker-1",
                    [*NIGHTOWL, "worker", "--pool=prefork", "--concurrency=3", "--hostname=fault-w1@%h"],
                ),
                (
                    "worker-2",
                    [*NIGHTOWL, "worker", "--pool=threads", "--concurrency=4", "--hostname=fault-w2@%h"],
                ),
                ("watchdog", [*NIGHTOWL, "watchdog"]),
            ]
            roles += [
                (f"relay-{i + 1}" if self._relays > 1 else "relay", [*NIGHTOWL, "relay", "--batch", "50"])
                for i in range(self._relays)
            ]
            for name, argv in roles:
                self.services[name] = Service(name, argv, env, self.workdir / f"{name}.log")
            for svc in self.services.values():
                svc.start()
            self.wait_ready()
            self._supervisor.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            for svc in self.services.values():
                if not svc.alive():
                    raise AssertionError(f"{svc.name} exited at start:\n{svc.output()[-3000:]}")
            workers = all(
                " ready." in self.services[w].output_since_start() for w in ("worker-1", "worker-2")
            )
            relays = all(
                "nightowl relay:" in s.output_since_start()
                for n, s in self.services.items()
                if n.startswith("relay")
            )
            client = self.redis.client()
            try:
                leaders = client.exists(f"{PREFIX}leader:scheduler", f"{PREFIX}leader:watchdog") == 2
            finally:
                client.close()
            return workers and relays and leaders

        try:
            wait_until(ready, timeout, 0.2, "every nightowl process to be ready")
        except TimeoutError as exc:
            tails = "\n".join(f"--- {s.name}\n{s.output()[-1500:]}" for s in self.services.values())
            raise AssertionError(f"{exc}\n{tails}") from None

    def wait_worker_ready(self, name: str, timeout: float = 60) -> None:
        svc = self.services[name]
        wait_until(lambda: " ready." in svc.output_since_start(), timeout, 0.1, f"{name} to be ready")

    def _supervise(self) -> None:
        """What compose's `restart: unless-stopped` does: a process that exits by itself is
        started again a second later; each such exit is recorded (a fault should not kill a
        service that was not its target)."""
        while not self._supervising.wait(0.5):
            for svc in list(self.services.values()):
                with svc.lock:  # a fault's kill holds it: its exit is no crash
                    proc = svc.proc
                    if svc.down or proc is None or proc.poll() is None:
                        continue
                tail = svc.output_since_start().strip().splitlines()[-3:]
                self.crashes.append(
                    {"service": svc.name, "exit_code": proc.returncode, "at": time.time(), "last_lines": tail}
                )
                if self._supervising.wait(1.0):
                    return
                with svc.lock:  # unless a fault restarted (or killed) it meanwhile
                    if svc.proc is proc and not svc.down:
                        svc.start()

    def close(self) -> None:
        self._supervising.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        for svc in self.services.values():
            svc.down = True
            svc.signal(signal.SIGCONT)
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(svc.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for svc in self.services.values():
            if svc.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            svc.kill()
        self.redis.kill()
        self.metric.stop()
        if self.hook is not None:
            self.hook.stop()
        for engine in (self._engine, self._data):
            if engine is not None:
                engine.dispose()
        try:
            self.dbs.drop()
        finally:
            keys = list(self.shared.scan_iter(match=f"{self.prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                self.shared.delete(*keys[i : i + 500])
            self.shared.close()

    # -- handles -----------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """nightowl's database, for the checks (no pooled connection survives a fault)."""
        if self._engine is None:
            self._engine = engine_for(self.dbs.nightowl_url)
        return self._engine

    @property
    def data(self) -> sa.Engine:
        if self._data is None:
            self._data = engine_for(self.dbs.data_url)
        return self._data

    def leader(self, role: str = "scheduler") -> str | None:
        """The service name holding the role's leader lease (by pid in the owner identity)."""
        client = self.redis.client()
        try:
            owner = client.get(f"{PREFIX}leader:{role}")
        finally:
            client.close()
        if not isinstance(owner, bytes):
            return None
        parts = owner.decode().split("-")
        for name, svc in self.services.items():
            if svc.proc is not None and str(svc.proc.pid) in parts:
                return name
        return "?"

    def worker_of(self, worker_field: str | None) -> str | None:
        """Which worker service an attempt's `worker` column names (`...-<pid>-<id>`; a
        prefork child's pid, whose process group is its worker's session)."""
        if not worker_field:
            return None
        try:
            group = os.getpgid(int(worker_field.split("-")[-2]))
        except (ValueError, IndexError, ProcessLookupError):
            group = None
        for name in ("worker-1", "worker-2"):
            svc = self.services[name]
            if svc.proc is not None and (group == svc.proc.pid or f"-{svc.proc.pid}-" in worker_field):
                return name
        return None

    def restart(self, name: str) -> None:
        svc = self.services[name]
        svc.kill()
        svc.start()
