"""Scheduler and relay faults: the leader SIGKILLed during a large tick, the relay SIGKILLed
mid-batch."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.faults.harness import LEADER_TTL_S, wait_until
from tests.faults.scenario import Run, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

BIG_BURST = 250  # rows inserted in one transaction: one tick with 250 firings


def _kill_leader_mid_tick(run: Run) -> None:
    c = run.cluster
    takeovers: list[float] = []
    for i in range(3):
        run.at(4 + i * 9 + run.rng.uniform(0, 2))
        leader = wait_until(lambda: c.leader() not in (None, "?") and c.leader(), 10, 0.05,
                            "a scheduler leader")
        run.driver.burst(BIG_BURST)
        # the poll runs every 0.5 s and then commits in chunks: kill somewhere inside that
        time.sleep(run.rng.uniform(0.3, 1.2))
        event = c.faults.begin("scheduler leader SIGKILL during a large tick", blinds=True,
                               killed=leader)
        c.services[leader].kill()
        killed_at = time.monotonic()
        standby = wait_until(lambda old=leader: (c.leader() or old) != old and c.leader(),
                             LEADER_TTL_S + 15, 0.02, "the standby to take the lead")
        took = time.monotonic() - killed_at
        takeovers.append(round(took, 2))
        c.services[leader].start()  # back as the new standby
        c.faults.end(event, standby=standby, takeover_s=round(took, 2))
    run.figures["standby_takeover_s"] = takeovers
    run.figures["standby_takeover_max_s"] = max(takeovers)
    run.figures["leader_ttl_s"] = LEADER_TTL_S


def test_scheduler_leader_kill_mid_tick() -> None:
    run_scenario(
        "scheduler_leader_kill", seed=201, fault=_kill_leader_mid_tick,
        summary=f"scheduler leader SIGKILLed during a tick of {BIG_BURST} db_change firings "
                "(3 times), restarted as standby",
        expected="the standby leads within NIGHTOWL_LEADER_TTL, re-evaluates from the committed "
                 "cursor; every row gets exactly one run (UNIQUE key), pending runs are swept")


def _claimed_now(run: Run) -> int:
    with run.cluster.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM outbox WHERE status = 'pending' AND claimed_by IS NOT NULL "
            "AND claim_expires > now()")).scalar_one())


def _kill_relay_mid_batch(run: Run) -> None:
    c = run.cluster
    claimed = []
    for i in range(4):
        run.at(4 + i * 6 + run.rng.uniform(0, 2))
        run.driver.burst(60)
        try:
            n = wait_until(lambda: _claimed_now(run), 10, 0.005,
                           "the relay to hold a claimed batch")
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
        "relay_kill_mid_batch", seed=202, fault=_kill_relay_mid_batch,
        summary="relay SIGKILLed holding a claimed batch (4 times), restarted",
        expected="claims expire after NIGHTOWL_CLAIM_TTL and are delivered again; the sinks drop "
                 "the redeliveries (seq per key, entry id), each effect lands once")
