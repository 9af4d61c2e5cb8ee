"""Long-running subcommands: `scheduler`, `worker`, `dev`, and `db upgrade`."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from types import FrameType
from typing import Annotated

import typer
from pydantic import SecretStr

from scheduler.cli import dev_reload
from scheduler.cli._common import TriggersOpt, fail, progress, registry_for, settings_for
from scheduler.cli.dev_console import DevConsole
from scheduler.cli.embedded_redis import EmbeddedRedis, worker_dies_with_parent
from scheduler.core.errors import ConfigError
from scheduler.core.logs import configure_logging
from scheduler.core.metrics import MULTIPROC_ENV, multiprocess_dir, serve_multiprocess
from scheduler.core.metrics import serve as serve_metrics
from scheduler.core.settings import DEV_DIR, DEV_ENV_FILE, Settings
from scheduler.core.startup import BROKER, DATABASE, REDIS, wait_until_ready
from scheduler.dispatch.loop import ServiceLoop, build_service
from scheduler.ops.doctor import visibility_problems
from scheduler.outbox import registered_sinks
from scheduler.relay.loop import RelayLoop, build_relay
from scheduler.storage.engine import make_engine
from scheduler.storage.migrate import pending, upgrade
from scheduler.watchdog.loop import WatchdogLoop, build_watchdog
from scheduler.worker.app import STARTUP_CHECKED_ENV, create_app, set_app
from triggers import Registry

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations up to the newest (safe to repeat)."""
    settings = settings_for()
    engine = make_engine(settings.require_database_url())
    applied: list[str] = []
    with progress(len(pending(engine)), "migrating") as advance:

        def step(rev: str, doc: str) -> None:
            applied.append(rev)
            advance(f"{rev}: {doc.splitlines()[0] if doc else ''}")

        upgrade(engine, on_step=step)
    done = f" (applied {', '.join(applied)})" if applied else ""
    typer.echo(f"database at {settings.describe()['database_url']} is up to date{done}")


def _wait_for_signal(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(0.5):
        pass


def _require_urls(settings: Settings) -> None:
    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as exc:
        fail(
            f"{exc} (long-running commands need URLs set on purpose: they neither create "
            f"a local database nor reuse {DEV_ENV_FILE}, which is for `nightowl dev`)"
        )


def _checked_registry(settings: Settings) -> Registry:
    """The registry, refusing to run agents the broker would redeliver mid-run."""
    registry = registry_for(settings)
    problems = visibility_problems(registry, settings.visibility_timeout)
    if problems:
        fail("\n".join(problems))
    return registry


def _service_settings(
    service: str, triggers: str | None, needs: tuple[str, ...] = (DATABASE, REDIS, BROKER)
) -> Settings:
    """Settings of a long-running role: explicit URLs only (never .nightowl/env), logging on,
    and what it needs reachable (waiting up to NIGHTOWL_STARTUP_TIMEOUT), or exit 1."""
    settings = settings_for(triggers, dev_env_file=False)
    configure_logging(settings.log_format, settings.log_level)
    _require_urls(settings)
    wait_until_ready(service, settings, needs)
    return settings


MetricsPortOpt = Annotated[
    int | None,
    typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.", show_default=False),
]
MetricsAddressOpt = Annotated[
    str, typer.Option("--metrics-address", help="Address for /metrics (loopback unless you open it).")
]


def _run_until_signal(
    loop: ServiceLoop | WatchdogLoop | RelayLoop, metrics_port: int | None, metrics_address: str
) -> None:
    serve_metrics(metrics_port, metrics_address)
    loop.start()
    try:
        _wait_for_signal(threading.Event())
    finally:
        loop.stop()


def scheduler(
    triggers: TriggersOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "127.0.0.1",
) -> None:
    """Evaluate triggers and dispatch runs (one leader among replicas)."""
    settings = _service_settings("scheduler", triggers)
    typer.echo(f"nightowl scheduler: {settings.describe()}")
    _run_until_signal(
        ServiceLoop(build_service(settings, _checked_registry(settings)), settings),
        metrics_port,
        metrics_address,
    )


def watchdog(
    triggers: TriggersOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "127.0.0.1",
) -> None:
    """Detect stalled, dead and late runs and failing sources; send alerts (one leader)."""
    settings = _service_settings("watchdog", triggers)
    typer.echo(f"nightowl watchdog: {settings.describe()}")
    _run_until_signal(
        WatchdogLoop(build_watchdog(settings, registry_for(settings)), settings),
        metrics_port,
        metrics_address,
    )


def relay(
    triggers: TriggersOpt = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Rows claimed per step.")] = 200,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "127.0.0.1",
) -> None:
    """Deliver outbox rows to their sinks (run several: they share the work)."""
    settings = _service_settings("relay", triggers, (DATABASE,))
    registry_for(settings)  # importing the trigger modules registers their sinks
    typer.echo(
        f"nightowl relay: sinks {', '.join(sorted(registered_sinks())) or 'none'}; {settings.describe()}"
    )
    _run_until_signal(RelayLoop(build_relay(settings, batch=batch)), metrics_port, metrics_address)


def worker(
    triggers: TriggersOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Pool size, as Celery's -c.")
    ] = 2,
    pool: Annotated[str, typer.Option("--pool", "-P", help="prefork | threads | solo")] = "prefork",
    queues: Annotated[
        str | None,
        typer.Option("--queues", "-Q", help="Comma-separated queues (default: every agent's queue)"),
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery's log level")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default celery@host)")] = None,
    metrics_port: MetricsPortOpt = None,
    metrics_address: MetricsAddressOpt = "127.0.0.1",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No banner and no settings line.")] = False,
) -> None:
    """A Celery worker for `scheduler.celery_app` (thin wrapper, scales out anywhere)."""
    if pool not in ("prefork", "threads", "solo"):
        raise typer.BadParameter("use prefork, threads or solo", param_hint="--pool")
    # Two libraries decide at import time, which has already happened here, so the command
    # starts itself again with the environment they read:
    # - prometheus_client's multiprocess mode (pool children share one metrics directory);
    # - billiard's REMAP_SIGTERM: SIGTERM (what `docker stop` and Kubernetes send) becomes
    #   Celery's soft shutdown: stop consuming, let running agents finish within
    #   NIGHTOWL_SHUTDOWN_GRACE, requeue the rest. (A plain warm shutdown waits without limit,
    #   until the orchestrator's SIGKILL.) NIGHTOWL_SHUTDOWN_GRACE=0 keeps the warm shutdown
    #   (`nightowl dev` does: its worker dies with it and its broker).
    settings = settings_for(triggers, dev_env_file=False)
    wanted = {"REMAP_SIGTERM": "SIGQUIT"} if settings.shutdown_grace > timedelta(0) else {}
    if metrics_port:
        wanted[MULTIPROC_ENV] = os.environ.get(MULTIPROC_ENV) or multiprocess_dir()
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, "-m", "scheduler.cli", *sys.argv[1:]])  # noqa: S606
    serve_multiprocess(metrics_port, metrics_address)
    configure_logging(settings.log_format, settings.log_level)
    _require_urls(settings)
    wait_until_ready("worker", settings, (DATABASE, REDIS, BROKER))
    os.environ[STARTUP_CHECKED_ENV] = "1"  # Celery's worker_init need not check again
    if settings.triggers:
        # Prefork children and the lazily built runtime read the same modules.
        os.environ["NIGHTOWL_TRIGGERS"] = ",".join(settings.triggers)
    registry = _checked_registry(settings)
    app = create_app(settings, registry)
    set_app(app)
    chosen = queues or ",".join(app.conf.nightowl_queues)
    if quiet:
        import warnings

        from celery.exceptions import SecurityWarning

        warnings.simplefilter("ignore", SecurityWarning)  # running as root: said once, in docs
    else:
        typer.echo(f"nightowl worker: queues={chosen} {settings.describe()}")
    argv = [
        *(["--quiet"] if quiet else []),
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--queues={chosen}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    asked_to_stop = _watch_shutdown_signals()
    try:
        app.worker_main(argv)
    except SystemExit:
        if asked_to_stop:
            raise
    if not asked_to_stop:
        # Celery's consumer gave up by itself: kombu 5.7's Redis transport raises an
        # AttributeError while restoring unacked messages when the broker drops, which
        # Celery treats as "Unrecoverable" and exits 0. Start again rather than leave the
        # queue unserved until an orchestrator notices; the messages it held are republished
        # by the sweeper's lost-message check.
        typer.echo(
            "nightowl worker: the Celery worker stopped by itself; starting again in "
            f"{WORKER_RESTART_PAUSE_S:.0f} s",
            err=True,
        )
        time.sleep(WORKER_RESTART_PAUSE_S)
        os.execv(sys.executable, [sys.executable, "-m", "scheduler.cli", *sys.argv[1:]])  # noqa: S606


WORKER_RESTART_PAUSE_S = 2.0


def _watch_shutdown_signals() -> list[str]:
    """A list that gets the signal's name once Celery starts a shutdown it was asked for."""
    from celery import signals as celery_signals

    seen: list[str] = []

    def _shutting_down(sig: str = "", **_: object) -> None:
        seen.append(sig or "shutdown")

    celery_signals.worker_shutting_down.connect(_shutting_down, weak=False)
    return seen


def _write_env_file(values: dict[str, str]) -> None:
    DEV_DIR.mkdir(exist_ok=True)
    body = "".join(f"{k}={v}\n" for k, v in values.items())
    DEV_ENV_FILE.write_text("# written by `nightowl dev`; other nightowl commands here read it\n" + body)


def dev(
    triggers: TriggersOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 2,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also every service log line and the Celery banner.")
    ] = False,
    reset: Annotated[
        bool,
        typer.Option("--reset", help="Start from an empty .nightowl/ (runs, state, embedded Redis data)."),
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload", help="Restart the services when a trigger module changes (and still loads)."
        ),
    ] = False,
) -> None:
    """Everything in one process tree: embedded Redis + SQLite unless URLs are set.

    The console prints one line per run outcome, retry or wait, and one per alert; the
    services' own log lines show only when something is wrong (warnings from the scheduler,
    errors from the worker), or all of them with --verbose."""
    if reset and DEV_DIR.exists():
        shutil.rmtree(DEV_DIR)
        typer.echo(
            f"nightowl dev: --reset: removed {DEV_DIR}/ (its runs, trigger state and embedded Redis data)"
        )
    explicit = Settings(_env_file=None)  # a stale env file from an earlier run is not "set"
    settings = settings_for(triggers)
    if not settings.triggers:
        raise typer.BadParameter("pass --triggers MODULE (or set NIGHTOWL_TRIGGERS)", param_hint="--triggers")
    configure_logging(settings.log_format, settings.log_level if verbose else "WARNING")
    if not verbose:
        # The console prints every alert; the alert log channel would print each twice.
        logging.getLogger("nightowl.alerts").setLevel(logging.ERROR)
    registry_for(settings)  # fail fast on a broken module, before starting anything
    embedded = EmbeddedRedis(DEV_DIR) if explicit.redis_url is None else None
    if embedded is not None:
        embedded.start()
    redis_url = embedded.url if embedded is not None else _secret(explicit.redis_url)
    db_url = _secret(explicit.database_url) or f"sqlite:///{(DEV_DIR / 'nightowl.db').resolve()}"
    values = {
        "NIGHTOWL_DATABASE_URL": db_url,
        "NIGHTOWL_REDIS_URL": redis_url,
        "NIGHTOWL_TRIGGERS": ",".join(settings.triggers),
        "NIGHTOWL_REDIS_PREFIX": settings.redis_prefix,
    }
    _write_env_file(values)
    settings = settings.model_copy(
        update={"database_url": SecretStr(db_url), "redis_url": SecretStr(redis_url)}
    )
    restart = threading.Event()
    try:
        upgrade(make_engine(db_url))
        typer.echo(f"nightowl dev: database {db_url}")
        typer.echo(f"nightowl dev: redis {redis_url}{' (embedded)' if embedded else ''}")
        typer.echo(f"nightowl dev: wrote {DEV_ENV_FILE}; try `nightowl runs list` in this folder")
        _run_dev(settings, values, concurrency, verbose, restart if reload else None)
    finally:
        if embedded is not None:
            embedded.stop()  # last: the worker drained through it
    if restart.is_set():  # a fresh process: every module imported anew
        argv = [a for a in sys.argv[1:] if a != "--reset"]
        os.execv(sys.executable, [sys.executable, "-m", "scheduler.cli", *argv])  # noqa: S606


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _run_dev(
    settings: Settings,
    values: dict[str, str],
    concurrency: int,
    verbose: bool,
    restart: threading.Event | None,
) -> None:
    """The worker, the three loops, the console (and the reload watcher) until Ctrl-C, a
    SIGTERM or a change that validates; then each is stopped, the worker drained."""
    worker_proc: subprocess.Popen[bytes] | None = None
    loops: list[ServiceLoop | WatchdogLoop | RelayLoop] = []
    stop = threading.Event()
    try:
        worker_proc = _start_dev_worker(values, concurrency, verbose)
        service = build_service(settings, registry_for(settings))
        loops = [
            ServiceLoop(service, settings),
            WatchdogLoop(build_watchdog(settings, registry_for(settings)), settings),
            RelayLoop(build_relay(settings)),
        ]
        for loop in loops:
            loop.start()
        threading.Thread(target=DevConsole(service.store).run, args=(stop,), daemon=True).start()
        if restart is not None:

            def restart_now() -> None:
                restart.set()
                stop.set()

            threading.Thread(
                target=dev_reload.watch, args=(settings.triggers, stop, restart_now), daemon=True
            ).start()
        typer.echo("nightowl dev: running; Ctrl-C to stop" + ("; reloading on changes" if restart else ""))
        _wait_for_signal(stop)
    finally:
        stop.set()
        typer.echo("nightowl dev: stopping")
        for loop in reversed(loops):
            loop.stop()
        if worker_proc is not None:
            _stop_child(worker_proc)


def _start_dev_worker(values: dict[str, str], concurrency: int, verbose: bool) -> subprocess.Popen[bytes]:
    """`nightowl dev`'s worker: it dies with `dev` (and with its embedded broker), so there is
    no drain to wait for; quiet unless --verbose (the console reports retries and failures)."""
    level = "INFO" if verbose else "ERROR"
    env = {**os.environ, **values, "NIGHTOWL_LOG_LEVEL": level, "NIGHTOWL_SHUTDOWN_GRACE": "0"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "worker",
            f"--concurrency={concurrency}",
            f"--loglevel={level}",
            *([] if verbose else ["--quiet"]),
        ],
        env=env,
        preexec_fn=worker_dies_with_parent,  # noqa: PLW1509
    )


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
