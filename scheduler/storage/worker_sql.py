"""The worker's two hot statements on PostgreSQL: start an attempt, finish it, one round trip
each.

A run's start took a transaction of BEGIN, UPDATE runs, INSERT attempts, COMMIT (four round
trips) and its finish as many again; in a throughput benchmark they were two thirds of a
run's cost. Data-modifying CTEs do the same work in one statement, run in autocommit: a
single statement is atomic on its own, and its sub-statements share one snapshot (the stale
attempt being closed cannot see the attempt being opened). SQLite keeps the transaction
path, which `BEGIN IMMEDIATE` already serialises.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa

from scheduler.storage.models import ACTIVE_STATUSES, Attempt, Run

runs_t = cast(sa.Table, Run.__table__)
attempts_t = cast(sa.Table, Attempt.__table__)
# Bind names carry a p_ prefix: a name equal to a column of an UPDATE would be taken as a
# SET value for that column.
_b = sa.bindparam


def startable(now: Any) -> list[sa.ColumnElement[bool]]:
    """Which active runs a delivery may start: none with a cancel request (the request ends
    it instead), and no `waiting` one before its `not_before` (a stray message must not cut
    a retry's backoff short)."""
    return [
        runs_t.c.status.in_(ACTIVE_STATUSES),
        runs_t.c.cancel_requested.is_(None),
        sa.or_(runs_t.c.status != "waiting", runs_t.c.not_before.is_(None),
               runs_t.c.not_before <= now),
    ]


def finish_outcome(p: str) -> dict[str, Any]:
    """The run columns a finish sets, as CASE expressions over the binds `<p>status`,
    `<p>reason`, `<p>not_before`, `<p>waiting_for`, `<p>finished_at` and `<p>now`: a retry
    verdict (`waiting`) yields to a cancel request that reached the run first, so a cancel
    is never lost to a retry."""
    status, reason, not_before, waiting_for, finished_at, now = (
        f"{p}{n}" for n in ("status", "reason", "not_before", "waiting_for", "finished_at", "now"))
    cancelled = sa.and_(runs_t.c.cancel_requested.is_not(None),
                        _b(status, type_=sa.String) == "waiting")
    when = runs_t.c.not_before.type
    return {
        "status": sa.case((cancelled, sa.literal("cancelled")), else_=_b(status, type_=sa.String)),
        "terminal_reason": sa.case((cancelled, runs_t.c.cancel_requested),
                                   else_=_b(reason, type_=sa.String)),
        "not_before": sa.case((cancelled, sa.null()), else_=_b(not_before, type_=when)),
        "waiting_for": sa.case((cancelled, sa.null()), else_=_b(waiting_for, type_=sa.String)),
        "finished_at": sa.case((cancelled, _b(now, type_=when)), else_=_b(finished_at, type_=when)),
    }


def _begin() -> sa.Select[tuple[object, ...]]:
    started = (
        sa.update(runs_t)
        .where(runs_t.c.id == _b("p_run_id"), runs_t.c.agent == _b("p_agent"),
               *startable(_b("p_now", type_=runs_t.c.not_before.type)))
        .values(status="running", fence=runs_t.c.fence + 1, attempt=runs_t.c.attempt + 1,
                deliveries=runs_t.c.deliveries + 1, not_before=None, waiting_for=None,
                lease_expires_at=_b("p_lease_expires_at"),
                started_at=sa.func.coalesce(runs_t.c.started_at, _b("p_now")))
        .returning(runs_t.c.fence, runs_t.c.attempt, runs_t.c.deliveries, runs_t.c.overlap_key,
                   runs_t.c.idempotency_key, runs_t.c.trigger, runs_t.c.event,
                   runs_t.c.logical_time, runs_t.c.last_heartbeat)
        .cte("started")
    )
    # An attempt still `running` belonged to a worker that vanished.
    stale = (
        sa.update(attempts_t)
        .where(attempts_t.c.run_id == _b("p_run_id"), attempts_t.c.status == "running",
               sa.exists(sa.select(started.c.fence)))
        .values(status="stalled", reason="worker_lost", finished_at=_b("p_now"))
        .returning(attempts_t.c.id)
        .cte("stale")
    )
    opened = (
        sa.insert(attempts_t)
        .from_select(
            ["run_id", "number", "fence", "status", "worker", "celery_task_id", "started_at",
             "heartbeat_at"],
            sa.select(_b("p_run_id", type_=sa.Text), started.c.attempt, started.c.fence,
                      sa.literal("running"), _b("p_worker", type_=sa.Text),
                      _b("p_task_id", type_=sa.Text), _b("p_now", type_=attempts_t.c.started_at.type),
                      _b("p_now", type_=attempts_t.c.heartbeat_at.type)))
        .cte("opened")
    )
    took_over = sa.select(sa.func.count()).select_from(stale).scalar_subquery()
    return sa.select(started, (took_over > 0).label("took_over")).add_cte(opened)


def _finish() -> sa.Select[tuple[str]]:
    finished = (
        sa.update(runs_t)
        .where(runs_t.c.id == _b("p_run_id"), runs_t.c.fence == _b("p_fence"),
               runs_t.c.status == "running")
        .values(result=_b("p_result"), error=_b("p_error"), usage=_b("p_usage"),
                last_heartbeat=_b("p_heartbeat"), lease_expires_at=None,
                **finish_outcome("p_"))
        .returning(runs_t.c.id, runs_t.c.status)
        .cte("finished")
    )
    closed = (
        sa.update(attempts_t)
        .where(attempts_t.c.run_id.in_(sa.select(finished.c.id)),
               attempts_t.c.number == _b("p_number"))
        .values(status=_b("p_attempt_status"), reason=_b("p_reason"),
                error_class=_b("p_error_class"), error_message=_b("p_error"),
                finished_at=_b("p_now"))
        .cte("closed")
    )
    return sa.select(finished.c.status).add_cte(closed)


BEGIN_ATTEMPT = _begin()
FINISH_ATTEMPT = _finish()
