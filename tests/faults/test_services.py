"""Scheduler and relay faults: the leader SIGKILLed during a large tick, the relay SIGKILLed
mid-batch."""

from __future__ import annotations

import functools
import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.faults.checks import Checker, Violation
from tests.faults.harness import LEADER_TTL_S, PG_ADMIN, Cluster, wait_until
from tests.faults.scenario import Run, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

BIG_BURST = 250  # rows inserted in one transaction: one tick with 250 firings


def _kill_leader_mid_tick(run: Run) -> None:
    c = run.cluster
    takeovers: list[float] = []
    for i in range(3):
        run.at(4 + i * 9 + run.rng.uniform(0, 2))
        leader = wait_until(
            lambda: c.leader() not in (None, "?") and c.leader(), 10, 0.05, "a scheduler leader"
        )
        ids = run.driver.burst(BIG_BURST)
        # kill inside the tick that handles the burst, seen from the database (polled every
        # few ms): its INSERT INTO runs running, part of the burst committed, or committed
        # runs not yet handed to the broker; if none is caught, 5 s later
        try:
            seen = wait_until(functools.partial(_mid_tick, run, ids), 5, 0.002, "the tick to be in progress")
        except TimeoutError:
            seen = f"missed the tick: {_burst_runs(run, ids)}/{len(ids)} rows with runs"
        event = c.faults.begin(
            "scheduler leader SIGKILL during a large tick", blinds=True, killed=leader, at=seen
        )
        c.services[leader].kill()
        killed_at = time.monotonic()

        def took_over(old: object = leader) -> object:
            return (c.leader() or old) != old and c.leader()

        standby = wait_until(took_over, LEADER_TTL_S + 15, 0.02, "the standby to take the lead")
        took = time.monotonic() - killed_at
        takeovers.append(round(took, 2))
        c.services[leader].start()  # back as the new standby
        c.faults.end(event, standby=standby, takeover_s=round(took, 2))
    run.figures["standby_takeover_s"] = takeovers
    run.figures["standby_takeover_max_s"] = max(takeovers)
    run.figures["leader_ttl_s"] = LEADER_TTL_S


def _burst_runs(run: Run, ids: list[int]) -> int:
    """How many of the burst's rows have a run yet."""
    with run.cluster.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM runs WHERE trigger = 'rows' "
                    "AND (event->>'key')::bigint BETWEEN :lo AND :hi"
                ),
                {"lo": min(ids), "hi": max(ids)},
            ).scalar_one()
        )


def _mid_tick(run: Run, ids: list[int]) -> str:
    """What shows the tick is under way, or '' if nothing does."""
    c = run.cluster
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state <> 'idle' "
            "AND query ILIKE '%%INSERT INTO runs%%'",
            (c.dbs.nightowl_name,),
        ).fetchone()
    if row and row[0]:
        return "INSERT INTO runs in progress"
    with c.engine.connect() as conn:
        n, pending = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM runs "
                "WHERE trigger = 'rows' AND (event->>'key')::bigint BETWEEN :lo AND :hi"
            ),
            {"lo": min(ids), "hi": max(ids)},
        ).one()
    if 0 < n < len(ids):
        return f"{n}/{len(ids)} rows with runs"
    if pending:
        return f"{pending} runs committed, not yet published"
    return ""


TAKEOVER_SLACK_S = 0.5  # the standby's next tick (every 0.25 s) plus this harness's polling


def _takeover_within_ttl(
    cluster: Cluster, judge: Checker, figures: dict[str, Any], violations: list[Violation]
) -> None:
    late = [e for e in cluster.faults.events if e.get("takeover_s", 0) > LEADER_TTL_S + TAKEOVER_SLACK_S]
    if late:
        violations.append(
            Violation(
                "standby-takeover",
                f"the standby took longer than NIGHTOWL_LEADER_TTL={LEADER_TTL_S} s "
                f"(+{TAKEOVER_SLACK_S} s) to lead",
                [{k: e[k] for k in ("killed", "standby", "takeover_s", "at") if k in e} for e in late],
                len(late),
            )
        )


def test_scheduler_leader_kill_mid_tick() -> None:
    run_scenario(
        "scheduler_leader_kill",
        seed=201,
        fault=_kill_leader_mid_tick,
        extra=_takeover_within_ttl,
        summary=f"scheduler leader SIGKILLed during a tick of {BIG_BURST} db_change firings "
        "(3 times), restarted as standby",
        expected="the standby leads within NIGHTOWL_LEADER_TTL, re-evaluates from the committed "
        "cursor; every row gets exactly one run (UNIQUE key), pending runs are swept",
    )


def _claimed_now(run: Run) -> int:
    with run.cluster.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM outbox WHERE status = 'pending' AND claimed_by IS NOT NULL "
                    "AND claim_expires > now()"
                )
            ).scalar_one()
        )


def _kill_relay_mid_batch(run: Run) -> None:
    c = run.cluster
    claimed = []
    for i in range(4):
        run.at(4 + i * 6 + run.rng.uniform(0, 2))
        run.driver.burst(60)
        try:
            n = wait_until(lambda: _claimed_now(run), 10, 0.005, "the relay to hold a claimed batch")
        except TimeoutError:
            n = 0  # not caught holding a claim this time: the kill still happens
        claimed.append(n)
        event = c.faults.begin("relay SIGKILL mid-batch", claimed=n)
        c.services["relay"].kill()
        time.sleep(run.rng.uniform(0.2, 2.0))
        c.services["relay"].start()
        c.faults.end(event)
    run.figures["claimed_at_kill"] = claimed


def test_relay_kill_mid_batch() -> None:
    run_scenario(
        "relay_kill_mid_batch",
        seed=202,
        fault=_kill_relay_mid_batch,
        summary="relay SIGKILLed holding a claimed batch (4 times), restarted",
        expected="claims expire after NIGHTOWL_CLAIM_TTL and are delivered again; the sinks drop "
        "the redeliveries (seq per key, entry id), each effect lands once",
    )
