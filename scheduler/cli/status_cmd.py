"""`nightowl status`: one screen for "is everything alive and keeping up?"."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

import sqlalchemy as sa
import typer

from scheduler.cli._common import (
    JsonOpt,
    TriggersOpt,
    echo,
    iso,
    print_json,
    redis_for,
    settings_for,
    store_for,
)
from scheduler.core import keys
from scheduler.core.breaker import RedisBreaker
from scheduler.core.errors import ConfigError
from scheduler.core.presence import live_workers
from scheduler.core.scrub import scrub_text
from scheduler.core.service_errors import service_error
from scheduler.core.vocabulary import AlertKind, RunStatus
from scheduler.storage.alert_store import AlertStore
from scheduler.storage.models import Attempt, Run
from scheduler.storage.outbox_store import OutboxStore
from triggers.sources import celery_redis_reading

ROLES = ("scheduler", "watchdog")
ALERT_KINDS = tuple(AlertKind)


def gather(settings: Any, *, now: datetime, ping_workers: bool = False) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-ready dict.

    A service that is down is part of the answer, not a crash: its sections stay empty and
    `errors` says what failed (status is what an operator runs when something is wrong).
    The database is read first: the queues whose runs are queued there are read on the
    broker too, with those the live workers consume (no trigger module is imported).
    """
    data: dict[str, Any] = {
        "at": iso(now),
        "leaders": {},
        "workers": [],
        "queues": {},
        "breakers": {},
        "queued_runs": {},
        "runs_last_hour": {},
        "open_alerts": {},
        "outbox": {},
        "outbox_lag_s": None,
        "paused": [],
        "running": [],
        "errors": {},
    }
    for section, read in (("database", _from_database), ("redis", _from_redis)):
        try:
            data.update(read(settings, now, data, ping_workers))
        except Exception as exc:
            message = service_error(exc)
            if message is None and not isinstance(exc, ConfigError):
                raise
            data["errors"][section] = scrub_text(message or str(exc))
    return data


def _from_redis(settings: Any, now: datetime, sofar: dict[str, Any], ping_workers: bool) -> dict[str, Any]:
    client = redis_for(settings)
    try:
        prefix = settings.redis_prefix
        leaders = {}
        for role in ROLES:
            owner = client.get(keys.leader(prefix, role))
            ttl = client.pttl(keys.leader(prefix, role))
            leaders[role] = {
                "alive": owner is not None,
                "owner": owner.decode() if isinstance(owner, bytes) else owner,
                "lease_ms_left": ttl if ttl and ttl > 0 else None,
            }
        present = live_workers(client, prefix)
        queues = {"agents", *sofar["queued_runs"], *(q for w in present for q in w.queues)}
        depths = {}
        for q in sorted(queues):
            reading = celery_redis_reading(client, q, prefix, now)
            depths[q] = {k: reading.extra[k] for k in ("depth", "unacked", "oldest_age_s")}
        states = RedisBreaker(client, prefix, settings.breaker_policy()).states()
        breakers = {provider: info.as_dict() for provider, info in states.items()}
    finally:
        client.close()
    workers = {w.hostname for w in present}
    if ping_workers:  # the broadcast answers only from workers that are not stuck
        from scheduler.core.celery import broker_app

        replies = broker_app(settings).control.ping(timeout=1.0) or []
        workers |= {name for reply in replies for name in reply}
    return {"leaders": leaders, "queues": depths, "breakers": breakers, "workers": sorted(workers)}


def _from_database(settings: Any, now: datetime, _sofar: dict[str, Any], _ping: bool) -> dict[str, Any]:
    store = store_for(settings)
    try:
        runs = cast(sa.Table, Run.__table__)
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(runs.c.status, runs.c.terminal_reason, sa.func.count())
                .where(runs.c.created_at >= now - timedelta(hours=1))
                .group_by(runs.c.status, runs.c.terminal_reason)
            )
            last_hour = {f"{s}/{r}" if r else s: n for s, r, n in rows}
            # Runs the database says are `queued`, per queue: set against the broker's
            # messages (`queues`), a surplus is runs whose message is gone.
            queued = {
                q: n
                for q, n in conn.execute(
                    sa.select(runs.c.queue, sa.func.count())
                    .where(runs.c.status == RunStatus.QUEUED)
                    .group_by(runs.c.queue)
                )
            }
        alerts = AlertStore(store.engine)
        open_alerts = Counter({k: len(alerts.open_of_kind(k)) for k in ALERT_KINDS})
        outbox = OutboxStore(store.engine).status(now)
        running = _running(store, now)
        paused = [
            {
                "scope": p.scope.value,
                "name": p.name,
                "reason": p.reason,
                "paused_by": p.paused_by,
                "paused_at": iso(p.paused_at),
            }
            for _, p in sorted(store.pauses().records.items())
        ]
    finally:
        store.engine.dispose()
    lag = max((s["oldest_pending_age_s"] or 0.0 for s in outbox.values()), default=0.0)
    return {
        "runs_last_hour": last_hour,
        "queued_runs": queued,
        "open_alerts": {k: v for k, v in open_alerts.items() if v},
        "outbox": outbox,
        "outbox_lag_s": lag,
        "paused": paused,
        "running": running,
    }


MAX_RUNNING_SHOWN = 20


def _running(store: Any, now: datetime) -> list[dict[str, Any]]:
    """The running runs, oldest first: how long each has run and what its agent last said."""
    runs = cast(sa.Table, Run.__table__)
    attempts = cast(sa.Table, Attempt.__table__)
    query = (
        sa.select(
            runs.c.id,
            runs.c.agent,
            runs.c.trigger,
            runs.c.attempt,
            runs.c.last_heartbeat,
            attempts.c.started_at,
            attempts.c.heartbeat_at,
            attempts.c.progress_at,
            attempts.c.worker,
        )
        .join(attempts, sa.and_(attempts.c.run_id == runs.c.id, attempts.c.number == runs.c.attempt))
        .where(runs.c.status == RunStatus.RUNNING)
        .order_by(attempts.c.started_at)
        .limit(MAX_RUNNING_SHOWN)
    )
    with store.engine.connect() as conn:
        rows = list(conn.execute(query))
    return [
        {
            "run_id": r.id,
            "agent": r.agent,
            "trigger": r.trigger,
            "attempt": r.attempt,
            "worker": r.worker,
            "age_s": round((now - r.started_at).total_seconds(), 1),
            "last_heartbeat": {
                "note": (r.last_heartbeat or {}).get("note"),
                "details": (r.last_heartbeat or {}).get("details") or {},
                "at": iso(r.progress_at if r.last_heartbeat else None),
            },
            "beat_age_s": None
            if r.heartbeat_at is None
            else round((now - r.heartbeat_at).total_seconds(), 1),
        }
        for r in rows
    ]


def breaker_line(breaker: dict[str, Any]) -> str:
    """One provider's breaker in words: its state, since when, and what comes next."""
    state = breaker["state"]
    if state == "closed":
        return f"closed ({breaker['failures']} recent failure(s))"
    since = f"open since {breaker['opened_at']}"
    if state == "open":
        return f"OPEN, {since}; a probe call in {breaker['retry_in']:.0f}s"
    return f"HALF-OPEN, {since}; the next call probes it"


def status(
    json_: JsonOpt = False,
    triggers: TriggersOpt = None,
    ping: Annotated[
        bool,
        typer.Option("--ping", help="Also broadcast a ping to the workers (waits one second)."),
    ] = False,
) -> None:
    """Leaders, workers, queue depths, provider breakers, what is paused, the running runs
    (age, last heartbeat), runs in the last hour, open alerts, outbox lag."""
    data = gather(settings_for(triggers), now=datetime.now(UTC), ping_workers=ping)
    if json_:
        print_json(data)
        return
    for section, message in data["errors"].items():
        echo(f"{section:20} UNREACHABLE: {message}")
    for role, lead in data["leaders"].items():
        state = f"alive ({lead['owner']})" if lead["alive"] else "NONE"
        typer.echo(f"{role + ' leader':20} {state}")
    typer.echo(f"{'workers':20} {', '.join(data['workers']) or 'none alive'}")
    for q in sorted(set(data["queues"]) | set(data["queued_runs"])):
        d = data["queues"].get(q)
        runs_queued = data["queued_runs"].get(q, 0)
        if d is None:
            typer.echo(f"{'queue ' + q:20} {runs_queued} runs queued (broker not read)")
            continue
        age = f", oldest {d['oldest_age_s']:.0f}s" if d["oldest_age_s"] is not None else ""
        gap = runs_queued - d["depth"] - (d["unacked"] or 0)
        lost = f" ({gap} without a message: republished by the sweeper)" if gap > 0 else ""
        typer.echo(
            f"{'queue ' + q:20} {runs_queued} runs queued; broker: {d['depth']} waiting, "
            f"{d['unacked']} reserved{age}{lost}"
        )
    if not data["running"]:
        typer.echo(f"{'running':20} none")
    for r in data["running"]:
        beat = r["last_heartbeat"]
        said = (
            f"last said {beat['note'] or '-'} {json.dumps(beat['details'])}"
            if beat["at"]
            else "no heartbeat yet"
        )
        echo(
            f"{'running':20} {r['run_id']} {r['trigger']} -> {r['agent']} attempt {r['attempt']}, "
            f"{r['age_s']:.0f}s; {said}"
        )
    for p in data["paused"]:
        what = f"every {p['scope']}" if p["name"] == "*" else f"{p['scope']} {p['name']}"
        why = f": {p['reason']}" if p["reason"] else ""
        echo(f"{'PAUSED':20} {what} since {p['paused_at']} by {p['paused_by']}{why}")
    for provider, breaker in sorted(data["breakers"].items()):
        typer.echo(f"{'breaker ' + provider:20} {breaker_line(breaker)}")
    runs = ", ".join(f"{k} {v}" for k, v in sorted(data["runs_last_hour"].items())) or "none"
    typer.echo(f"{'runs (last hour)':20} {runs}")
    alerts = ", ".join(f"{k} {v}" for k, v in sorted(data["open_alerts"].items())) or "none"
    typer.echo(f"{'open alerts':20} {alerts}")
    if data["outbox_lag_s"] is not None:
        typer.echo(f"{'outbox lag':20} {data['outbox_lag_s']:.1f}s")
