"""One scenario end to end: start a deployment, drive load, inject the fault, let it settle,
check the invariants, write the figures to `results/<scenario>.json`, fail with every
violation (invariant, run ids, states) and where the processes' logs are."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.faults.checks import Checker, Violation
from tests.faults.driver import Driver
from tests.faults.harness import RESULTS, TERMINAL_BOUND_S, Cluster

DRIVE_S = 30.0  # seconds of load per scenario (the fault happens inside it)


@dataclass
class Run:
    """What a fault function gets: the deployment, the driver, a seeded RNG, the clock of
    the drive, and a dict for its own measurements (recovery times)."""

    cluster: Cluster
    driver: Driver
    rng: random.Random
    started: float
    drive_s: float
    figures: dict[str, Any] = field(default_factory=dict)

    def at(self, offset: float) -> None:
        """Sleep until `offset` seconds into the drive."""
        delay = self.started + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def remaining(self) -> float:
        return self.started + self.drive_s - time.monotonic()


Fault = Callable[[Run], None]
Extra = Callable[[Cluster, Checker, dict[str, Any], list[Violation]], None]


def run_scenario(
    name: str,
    *,
    seed: int,
    fault: Fault,
    summary: str,
    expected: str,
    drive_s: float = DRIVE_S,
    cluster: dict[str, Any] | None = None,
    checker: dict[str, Any] | None = None,
    driver: dict[str, Any] | None = None,
    extra: Extra | None = None,
) -> None:
    began = time.time()
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "scenario": name,
        "seed": seed,
        "fault": summary,
        "expected": expected,
        "started_at": began,
        "bound_s": TERMINAL_BOUND_S,
        "overrides": {k: v for k, v in os.environ.items() if k.startswith("NIGHTOWL_FAULTS_SET_")},
    }
    violations: list[Violation] = []
    try:
        deployment = Cluster(name, **(cluster or {})).__enter__()
    except BaseException as exc:
        # the deployment never came up: still a result, so the matrix does not show a stale one
        result.update(
            figures={},
            violations=[Violation("harness", f"the deployment did not start: {str(exc)[:1500]}").public()],
            passed=False,
            duration_s=round(time.time() - began, 1),
        )
        write_result(name, result)
        raise
    try:
        result["startup_s"] = round(time.time() - began, 1)
        drv = Driver(deployment, rng, **(driver or {}))
        drv.start()
        ctx = Run(deployment, drv, rng, time.monotonic(), drive_s)
        try:
            fault(ctx)
            ctx.at(drive_s)
        except Exception as exc:  # judged all the same: the data shows what the fault did
            violations.append(Violation("harness", f"injecting the fault failed: {exc!r}"))
        finally:
            # every fault ends inside `fault` (its finally blocks); the load stops here
            driven = drv.stop()
        judge = Checker(deployment, driven, **(checker or {}))
        settle = judge.converge(deployment.faults.last_end)
        figures, found = judge.check()
        violations += found
        figures.update(ctx.figures)
        figures["service_crashes"] = len(deployment.crashes)
        if deployment.crashes:
            violations.append(
                Violation(
                    "services-survive",
                    "nightowl processes exited by themselves (the harness "
                    "restarted them a second later, as compose's restart: unless-stopped would)",
                    [{k: c[k] for k in ("service", "exit_code", "last_lines")} for c in deployment.crashes],
                    len(deployment.crashes),
                )
            )
        if extra is not None:
            extra(deployment, judge, figures, violations)
        figures["faults_injected"] = deployment.faults.count
        result["trigger_state"] = _trigger_states(deployment)
        result.update(
            figures=figures,
            settle=settle,
            faults=deployment.faults.public(),
            driven={
                "rows": len(driven.rows),
                "bursts": driven.bursts,
                "episodes": driven.episodes,
                "drive_s": drive_s,
                "switches": driven.switches,
            },
            violations=[x.public() for x in violations],
            passed=not violations,
            logs=str(deployment.workdir),
        )
        result["duration_s"] = round(time.time() - began, 1)
        write_result(name, result)
    finally:
        deployment.close()
    if violations:
        lines = "\n".join(f"  - {x.line()}" for x in violations)
        raise AssertionError(
            f"{name} (seed {seed}): {len(violations)} invariant(s) broken\n{lines}\n"
            f"figures: {json.dumps(result['figures'], default=str)}\n"
            f"settle: {result['settle']}\nlogs of every process: {result['logs']}\n"
            f"reproduce: .venv/bin/python -m pytest -n 0 -m faults tests/faults -k {name}"
        )


def _trigger_states(cluster: Cluster) -> dict[str, Any]:
    """Each trigger's stored state at the end (the database is dropped afterwards)."""
    import sqlalchemy as sa

    try:
        with cluster.engine.connect() as conn:
            return {
                r.name: {
                    "state": r.state,
                    "revision": r.revision,
                    "next_evaluation": r.next_evaluation,
                    "updated_at": r.updated_at,
                    "source_failing": r.source_failing,
                }
                for r in conn.execute(
                    sa.text(
                        "SELECT name, state, revision, next_evaluation, updated_at, "
                        "source_failing FROM trigger_state"
                    )
                )
            }
    except sa.exc.SQLAlchemyError as exc:
        return {"error": str(exc)[:300]}


def write_result(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
