"""db_change per-poll cost on PostgreSQL at 10k and 1M rows: it should follow changes, not size.

For each table size, three medians over repeated polls of a real `db_change`
trigger (its `evaluate`, as the scheduler calls it; reflection is cached after
the first poll):
- idle: no new rows (the forward keyset page and the look-back re-scan, both empty-ish);
- 500 new: a poll that picks up 500 freshly inserted rows (one full page);
- baseline: in the same run, the naive poll people write first,
  `SELECT * FROM t WHERE updated_at > :last` on a table without the
  `(updated_at, id)` index, i.e. a sequential scan.

Run: `.venv/bin/python benchmarks/db_change_poll.py [--sizes 10000,1000000] [--repeat 30]`.
Needs PostgreSQL's `test` database on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Result, Stat, ratio, say
from triggers import db_change, dispose_engines
from triggers.abc import forget_module

PG = "postgresql://postgres@127.0.0.1:5432/test"


def build(conn: psycopg.Connection[Any], table: str, rows: int, *, index: bool) -> None:
    conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL, "
        "payload text NOT NULL, updated_at timestamptz NOT NULL)"
    )
    # Rows one second apart ending an hour ago: the look-back window behind the cursor is sparse,
    # as on a real table whose history is old.
    conn.execute(
        f"INSERT INTO {table} SELECT g, 'new', repeat('x', 120), "
        "now() - interval '1 hour' - (%s - g) * interval '1 second' FROM generate_series(1, %s) g",
        (rows, rows),
    )
    if index:
        conn.execute(f"CREATE INDEX ON {table} (updated_at, id)")
    conn.execute(f"ANALYZE {table}")


def insert_new(conn: psycopg.Connection[Any], table: str, start: int, n: int, round_: int) -> None:
    """`n` rows in one burst, a minute (of cursor time) after the previous burst."""
    conn.execute(
        f"INSERT INTO {table} SELECT g, 'new', repeat('x', 120), "
        "'2030-01-01'::timestamptz + %s * interval '1 minute' + (g - %s::bigint) * interval '1 ms' "
        "FROM generate_series(%s::bigint, %s::bigint) g",
        (round_, start, start, start + n - 1),
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_size(rows: int, repeat: int, changed: int = 500) -> dict[str, float]:
    table = f"bench_dbchange_{uuid.uuid4().hex[:8]}"
    naive = f"{table}_noindex"
    with psycopg.connect(PG, autocommit=True) as conn:
        build(conn, table, rows, index=True)
        build(conn, naive, rows, index=False)
        try:
            spec = db_change(
                table,
                agent="bench",
                name="bench",
                db_url=PG,
                cursor="updated_at",
                key="id",
                batch_size=max(500, changed),
            )
            trigger = spec.source
            now = datetime.now(UTC)
            state = trigger.evaluate("bench", now, None).state  # start="now": after the newest row
            state = trigger.evaluate("bench", now, state).state  # warm: reflection, pool, plans
            idle: list[float] = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                ev = trigger.evaluate("bench", now, state)
                idle.append(time.perf_counter() - t0)
                assert not ev.firings
                state = ev.state
            fresh: list[float] = []
            next_id = rows + 1
            for round_ in range(repeat):
                insert_new(conn, table, next_id, changed, round_)
                next_id += changed
                t0 = time.perf_counter()
                ev = trigger.evaluate("bench", now, state)
                fresh.append(time.perf_counter() - t0)
                assert len(ev.firings) == changed, len(ev.firings)
                state = ev.state
            last = conn.execute(f"SELECT max(updated_at) FROM {naive}").fetchone()
            assert last is not None
            baseline: list[float] = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                conn.execute(f"SELECT * FROM {naive} WHERE updated_at > %s", (last[0],)).fetchall()
                baseline.append(time.perf_counter() - t0)
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {naive}")
            forget_module(__name__)
            dispose_engines()
    return {"idle_ms": median_ms(idle), "new500_ms": median_ms(fresh), "naive_idle_ms": median_ms(baseline)}


def run(quick: bool) -> Result:
    """db_poll_cost: a db_change poll that picks up 100 changed rows, at 10k, 100k and 1M
    rows on PostgreSQL; the baseline is the same poll at 10k rows."""
    sizes, repeat = ((10_000, 100_000), 5) if quick else ((10_000, 100_000, 1_000_000), 30)
    per: dict[str, Stat] = {}
    idle: dict[str, Stat] = {}
    for size in sizes:
        say(f"db_poll_cost: {size:,} rows, {repeat} polls")
        got = bench_size(size, repeat, changed=100)
        per[f"rows={size}"] = Stat([got["new500_ms"] / 1000], "s")
        idle[f"rows={size}"] = Stat([got["idle_ms"] / 1000], "s")
    small, big = per[f"rows={sizes[0]}"].median, per[f"rows={sizes[-1]}"].median
    r = ratio(big, small)
    return Result(
        name="db_poll_cost",
        figures={"poll_100_changed": per, "idle_poll": idle},
        baseline={f"rows={sizes[0]}": per[f"rows={sizes[0]}"]},
        ratio=r,
        target=f"poll at {sizes[-1]:,} rows / at {sizes[0]:,} rows <= 1.5 (medians of {repeat} polls)",
        met=None if quick else r <= 1.5,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        results[size] = bench_size(size, args.repeat)
        r = results[size]
        print(
            f"{size:>9,} rows: idle poll {r['idle_ms']:.2f} ms, poll with 500 new rows "
            f"{r['new500_ms']:.2f} ms; naive seq-scan poll {r['naive_idle_ms']:.2f} ms "
            f"(naive / ours = {r['naive_idle_ms'] / r['idle_ms']:.1f})"
        )
    sizes = sorted(results)
    if len(sizes) >= 2:
        small, big = results[sizes[0]], results[sizes[-1]]
        print(
            f"growth {sizes[0]:,} -> {sizes[-1]:,} rows: "
            f"idle poll x{big['idle_ms'] / small['idle_ms']:.2f}, "
            f"500-row poll x{big['new500_ms'] / small['new500_ms']:.2f}, "
            f"naive poll x{big['naive_idle_ms'] / small['naive_idle_ms']:.1f}"
        )


if __name__ == "__main__":
    main()
