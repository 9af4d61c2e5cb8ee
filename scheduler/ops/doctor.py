"""`nightowl doctor`: the settings that decide loss and duplication, checked together.

Celery users get this combination wrong more than anything else:
acks_late + reject_on_worker_lost + prefetch + a visibility timeout longer than
the longest task. Each check returns a verdict and a fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis

from scheduler.core import keys
from scheduler.core.settings import Settings
from triggers import Registry

if TYPE_CHECKING:
    from celery import Celery

# Room between an agent's hard stop and the broker handing its message to someone else.
VISIBILITY_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def visibility_problems(registry: Registry, limit: timedelta) -> list[str]:
    """Agents whose timeout (+ cancel_grace + margin) outlasts the broker's visibility timeout."""
    problems = []
    for spec in sorted(registry.agents.values(), key=lambda a: a.name):
        needed = spec.timeout + spec.cancel_grace + VISIBILITY_MARGIN
        if needed > limit:
            problems.append(
                f"{spec.location}: @agent({spec.name!r}): field 'timeout': timeout "
                f"{spec.timeout} + cancel_grace {spec.cancel_grace} + margin {VISIBILITY_MARGIN} "
                f"= {int(needed.total_seconds())} s exceeds the broker visibility timeout "
                f"{int(limit.total_seconds())} s (NIGHTOWL_VISIBILITY_TIMEOUT): Redis would hand "
                f"the message to another worker while this one still runs. Fix: set "
                f"NIGHTOWL_VISIBILITY_TIMEOUT to at least {int(needed.total_seconds())} or lower "
                "the timeout"
            )
    return problems


def celery_checks(app: Celery) -> list[Check]:
    conf = app.conf
    redis_broker = str(conf.broker_url or "").startswith(("redis://", "rediss://", "unix://"))
    return [
        Check(
            "json only",
            list(conf.accept_content) == ["json"] and conf.task_serializer == "json",
            f"accept_content={list(conf.accept_content)}, task_serializer={conf.task_serializer}",
        ),
        Check(
            "acks late + reject on worker lost",
            bool(conf.task_acks_late and conf.task_reject_on_worker_lost),
            f"task_acks_late={conf.task_acks_late}, "
            f"task_reject_on_worker_lost={conf.task_reject_on_worker_lost}",
        ),
        Check(
            "prefetch 1",
            conf.worker_prefetch_multiplier == 1,
            f"worker_prefetch_multiplier={conf.worker_prefetch_multiplier}",
        ),
        Check(
            "no prefetch on Redis",
            not redis_broker or bool(conf.worker_disable_prefetch),
            f"worker_disable_prefetch={conf.worker_disable_prefetch}",
        ),
    ]


def run_checks(settings: Settings, registry: Registry, app: Celery) -> list[Check]:
    """Every check, in the order `doctor` prints them; none raises."""
    checks = celery_checks(app)
    problems = visibility_problems(registry, settings.visibility_timeout)
    checks.append(
        Check(
            "visibility timeout covers every agent",
            not problems,
            "; ".join(problems)
            or f"{int(settings.visibility_timeout.total_seconds())} s > longest timeout + grace + margin",
        )
    )
    checks.append(
        Check(
            "pools",
            True,
            "prefork: cooperative cancel, then the pool process is terminated after "
            "cancel_grace; threads and solo: cooperative cancel only",
        )
    )
    checks.append(_database_check(settings))
    checks.append(_redis_check(settings))
    return checks


def _database_check(settings: Settings) -> Check:
    from scheduler.storage.engine import make_engine
    from scheduler.storage.migrate import current, head_revision

    try:
        engine = make_engine(settings.require_database_url())
        try:
            revision = current(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        return Check("database", False, f"{type(exc).__name__}: {exc}")
    ok = revision == head_revision()
    return Check(
        "database",
        ok,
        f"schema revision {revision}" if ok else f"schema revision {revision}; run `nightowl db upgrade`",
    )


def _redis_check(settings: Settings) -> Check:
    try:
        client = redis.Redis.from_url(settings.require_redis_url())
        try:
            info: Any = client.info("server")
            leader = client.get(keys.leader(settings.redis_prefix, "scheduler"))
        finally:
            client.close()
    except Exception as exc:
        return Check("redis", False, f"{type(exc).__name__}: {exc}")
    version = str(info.get("redis_version", "0"))
    major, minor = (int(p) for p in version.split(".")[:2])
    ok = (major, minor) >= (6, 2)
    who = leader.decode() if isinstance(leader, bytes) else "none (no scheduler running?)"
    return Check("redis", ok, f"version {version}{'' if ok else ' (need >= 6.2)'}; scheduler leader: {who}")
