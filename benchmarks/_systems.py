"""The schedulers the cron benchmarks start as real processes, each given N cron entries due
at one boundary and a broker queue of its own: nightowl's `nightowl scheduler`, Celery beat
(PersistentScheduler), RedBeat, and APScheduler 3 with CronTrigger jobs doing `send_task`.

Each is configured the way its documentation shows, with defaults kept except where a
default would drop the very messages being timed (APScheduler's one-second misfire grace:
a job that starts more than a second late is skipped, so it is raised to a minute).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis

from benchmarks._harness import REDIS_URL, base_env, spawn


@dataclass
class Started:
    """A system's process and what the harness reads of it."""

    proc: subprocess.Popen[bytes]
    queue_keys: list[str]
    ready: Callable[[], bool] | None  # leading / holding its lock, where the system has one
    cleanup: Callable[[], None] = lambda: None
    log: Path | None = None
    # when its process started (made right after the spawn): start-up is timed from here,
    # not from before the database was created and migrated
    spawned_at: float = field(default_factory=time.time)


@dataclass
class System:
    name: str
    seconds: bool  # can a cron entry name a second (else boundaries are whole minutes)
    peer: bool = True
    requires: tuple[str, ...] = field(default_factory=tuple)

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def start(self, n: int, when: datetime, tmp: Path, spread: bool = False) -> Started:
        raise NotImplementedError


def _celery_conf(tmp: Path, n: int, when: datetime, queue: str, rb_prefix: str) -> str:
    """A Celery app module with N beat entries `crontab(minute, hour)` (beat and RedBeat)."""
    name = f"bench_beat_{uuid.uuid4().hex[:8]}"
    (tmp / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from celery import Celery
            from celery.schedules import crontab

            app = Celery("bench", broker={REDIS_URL!r})
            app.conf.update(
                task_serializer="json",
                accept_content=["json"],
                timezone="UTC",
                enable_utc=True,
                redbeat_redis_url={REDIS_URL!r},
                redbeat_key_prefix={rb_prefix!r},
                beat_schedule={{
                    f"t{{i}}": {{
                        "task": "bench.noop",
                        "schedule": crontab(minute={when.minute}, hour={when.hour}),
                        "options": {{"queue": {queue!r}}},
                    }}
                    for i in range({n})
                }},
            )
            """
        )
    )
    return name


class CeleryBeat(System):
    def __init__(self) -> None:
        super().__init__("celery_beat", seconds=False, requires=("celery",))

    def start(self, n: int, when: datetime, tmp: Path, spread: bool = False) -> Started:
        queue = f"bench-beat-{uuid.uuid4().hex[:8]}"
        module = _celery_conf(tmp, n, when, queue, "unused:")
        argv = [sys.executable, "-m", "celery", "-A", module, "beat", "-s", str(tmp / f"{module}.db")]
        log = tmp / f"{module}.log"
        proc = spawn([*argv, "--loglevel", "WARNING"], base_env(PYTHONPATH=f"{tmp}"), log, cwd=tmp)
        return Started(proc, [queue], None, _deleting([queue]), log)


class RedBeat(System):
    def __init__(self) -> None:
        super().__init__("redbeat", seconds=False, requires=("celery", "redbeat"))

    def start(self, n: int, when: datetime, tmp: Path, spread: bool = False) -> Started:
        queue = f"bench-redbeat-{uuid.uuid4().hex[:8]}"
        rb_prefix = f"bench-rb-{uuid.uuid4().hex[:8]}:"
        module = _celery_conf(tmp, n, when, queue, rb_prefix)
        argv = [sys.executable, "-m", "celery", "-A", module, "beat", "-S", "redbeat.RedBeatScheduler"]
        log = tmp / f"{module}.log"
        proc = spawn([*argv, "--loglevel", "WARNING"], base_env(PYTHONPATH=f"{tmp}"), log, cwd=tmp)
        client = redis.Redis.from_url(REDIS_URL)
        return Started(
            proc,
            [queue],
            lambda: bool(client.exists(f"{rb_prefix}:lock")),
            _deleting([queue], prefix=rb_prefix),
            log,
        )


class APScheduler(System):
    def __init__(self) -> None:
        super().__init__("apscheduler", seconds=True, requires=("celery", "apscheduler"))

    def start(self, n: int, when: datetime, tmp: Path, spread: bool = False) -> Started:
        queue = f"bench-aps-{uuid.uuid4().hex[:8]}"
        script = tmp / f"bench_aps_{uuid.uuid4().hex[:8]}.py"
        script.write_text(
            textwrap.dedent(
                f"""
                from apscheduler.schedulers.blocking import BlockingScheduler
                from apscheduler.triggers.cron import CronTrigger
                from celery import Celery

                app = Celery("bench", broker={REDIS_URL!r})
                app.conf.update(task_serializer="json", accept_content=["json"])
                scheduler = BlockingScheduler(
                    timezone="UTC", job_defaults={{"misfire_grace_time": 60, "coalesce": True}}
                )

                def fire(i):
                    app.send_task("bench.noop", args=[i], queue={queue!r})

                trigger = CronTrigger(
                    hour={when.hour}, minute={when.minute}, second={when.second}, timezone="UTC"
                )
                for i in range({n}):
                    scheduler.add_job(fire, trigger, args=[i], id=f"t{{i}}")
                scheduler.start()
                """
            )
        )
        log = script.with_suffix(".log")
        proc = spawn([sys.executable, str(script)], base_env(), log, cwd=tmp)
        return Started(proc, [queue], None, _deleting([queue]), log)


class Nightowl(System):
    """The real `nightowl scheduler` on PostgreSQL: N `cron` triggers in a module of their own."""

    def __init__(self) -> None:
        super().__init__("nightowl", seconds=True, peer=False)
        self.database_url: str | None = None
        self.extra_env: dict[str, str] = {}

    def start(self, n: int, when: datetime, tmp: Path, spread: bool = False) -> Started:
        from benchmarks._db import create_database, drop_database
        from scheduler.core import keys

        prefix = f"bench-no-{uuid.uuid4().hex[:8]}:"
        module = f"bench_no_{uuid.uuid4().hex[:8]}"
        if spread:  # spread over the hour: about n/60 due each minute, at its second `when`
            expr = f'f"{when.second} {{i % 60}} * * * *"'
        else:
            expr = repr(f"{when.second} {when.minute} {when.hour} * * *")
        (tmp / f"{module}.py").write_text(
            textwrap.dedent(
                f"""
                from agents import agent
                from triggers import cron

                @agent("noop")
                def noop(ctx, event):
                    return None

                for i in range({n}):
                    cron({expr}, agent=noop, name=f"t{{i}}")
                """
            )
        )
        url = create_database("cron", "postgresql")
        env = base_env(
            PYTHONPATH=f"{tmp}:{base_env()['PYTHONPATH']}",
            NIGHTOWL_DATABASE_URL=url,
            NIGHTOWL_REDIS_URL=REDIS_URL,
            NIGHTOWL_REDIS_PREFIX=prefix,
            NIGHTOWL_TRIGGERS=module,
            **self.extra_env,
        )
        subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "db", "upgrade"], env=env, check=True, capture_output=True
        )
        log = tmp / f"{module}.log"
        proc = spawn([sys.executable, "-m", "scheduler.cli", "scheduler"], env, log)
        profile = os.environ.get("BENCH_PROFILE")  # a directory: py-spy records the process
        if profile:
            out = Path(profile) / f"nightowl-scheduler-{n}.txt"  # collapsed stacks
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            record = [py_spy, "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw"]
            subprocess.Popen([*record, "--duration", os.environ.get("BENCH_PROFILE_S", "40"), "-o", str(out)])
        client = redis.Redis.from_url(REDIS_URL)

        def cleanup() -> None:
            _deleting([], prefix=prefix)()
            drop_database(url)

        return Started(
            proc,
            keys.queue_lists(prefix, "agents"),
            lambda: bool(client.exists(keys.leader(prefix, "scheduler"))),
            cleanup,
            log,
        )


def _deleting(queues: list[str], prefix: str | None = None) -> Callable[[], None]:
    def clean() -> None:
        from benchmarks._harness import delete_prefix

        client = redis.Redis.from_url(REDIS_URL)
        if queues:
            client.delete(*queues)
        if prefix:
            delete_prefix(client, prefix)
        client.close()

    return clean


def floor_burst(n: int, queue: str, body: bytes) -> None:
    """The floor: the same N messages written through one Redis pipeline, no database."""
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for _ in range(n):
        pipe.lpush(queue, body)
    pipe.execute()
    client.close()


SYSTEMS: dict[str, Callable[[], System]] = {
    "nightowl": Nightowl,
    "redbeat": RedBeat,
    "celery_beat": CeleryBeat,
    "apscheduler": APScheduler,
}


def utc_now() -> datetime:
    return datetime.now(UTC)
