"""dedupe_storm: every run's message delivered three times (what visibility-timeout
redelivery, a replayed queue or a double-publishing bug do), against plain Celery's cost
per no-op message in the same run.

nightowl must execute each run once (zero extra executions: the lease and the fence drop
the copies), and a dropped duplicate should cost at most 1.5x one plain Celery no-op
message: cost per duplicate = (time for 3N messages - time for N) / 2N, both measured here
with 2 prefork worker processes on PostgreSQL.
"""

from __future__ import annotations

from benchmarks._harness import Result, Stat, ratio, say
from benchmarks.throughput import nightowl_runs, plain_celery


def run(quick: bool) -> Result:
    n, repeat = (300, 1) if quick else (3_000, 3)
    dup_cost, extra, plain_cost = [], [], []
    for r in range(repeat):
        say(f"dedupe_storm: {n} runs x 3 deliveries, round {r + 1}/{repeat}")
        once = nightowl_runs(n, "postgresql", copies=1)
        thrice = nightowl_runs(n, "postgresql", copies=3)
        plain_cost.append(1 / plain_celery(n))  # seconds per plain no-op message
        dup_cost.append(max(0.0, thrice["elapsed_s"] - once["elapsed_s"]) / (2 * n))
        extra.append(thrice["executions"] - n)
    cost, base = Stat(dup_cost, "s"), Stat(plain_cost, "s")
    r_ = ratio(cost.median, base.median)
    return Result(
        name="dedupe_storm",
        figures={"per_dropped_duplicate": cost, "extra_executions": Stat(extra, "runs"), "n": n},
        baseline={"plain_celery_per_message": base},
        ratio=r_,
        target="0 extra executions; a dropped duplicate <= 1.5x one plain Celery no-op message",
        met=None if quick else max(extra) == 0 and r_ <= 1.5,
        notes=[f"EXTRA EXECUTIONS: {max(extra):.0f}"] if max(extra) > 0 else [],
    )
