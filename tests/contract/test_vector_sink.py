"""The vector sink's contract on both of its stores: sqlite-vec and a real pgvector.

Upsert by key keeping the highest `seq` (a redelivered older entry never overwrites a newer
one), metadata kept beside the embedding, a wrong-sized vector failing only its own entry,
and a nearest-neighbour query that an agent's recall would run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.outbox import Entry, VectorSink
from scheduler.outbox.sinks.sql import dispose_sink_engines


@pytest.fixture(params=["sqlite-vec", "pgvector"])
def vector_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite-vec":
        yield f"sqlite:///{tmp_path / 'vectors.db'}"
    else:
        yield request.getfixturevalue("pgvector_url")
    dispose_sink_engines()


def entry(n: int, key: str, seq: int, vector: list[float], **meta: Any) -> Entry:
    return Entry(f"run:{n}", "run", "memory", key, seq, {"vector": vector, **meta})


def stored(url: str, table: str, key: str) -> tuple[int, dict[str, Any]]:
    engine = sa.create_engine(url.replace("sqlite:", "sqlite+pysqlite:", 1))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(f'SELECT seq, metadata FROM "{table}" WHERE key = :k'), {"k": key}
            ).one()
    finally:
        engine.dispose()
    meta = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
    return int(row.seq), meta


def test_newest_embedding_per_key_wins_and_nearest_finds_it(vector_url: str) -> None:
    table = f"memory_{uuid.uuid4().hex[:8]}"
    sink = VectorSink(table=table, dim=3, db_url=vector_url)
    # Given three memories
    assert (
        sink.deliver(
            [
                entry(1, "a", 1, [1, 0, 0], text="a1"),
                entry(2, "b", 1, [0, 1, 0], text="b1"),
                entry(3, "c", 1, [0, 0, 1], text="c1"),
            ]
        )
        == [None] * 3
    )
    # When "a" is rewritten, and then its older entry is redelivered (a relay retry)
    assert sink.deliver([entry(4, "a", 2, [0, 0.9, 0.1], text="a2")]) == [None]
    assert sink.deliver([entry(1, "a", 1, [1, 0, 0], text="a1")]) == [None]
    # Then the newest write stays, embedding and metadata together
    assert stored(vector_url, table, "a") == (2, {"text": "a2"})
    nearest = sink.nearest([0, 1, 0], k=2)
    assert [key for key, _ in nearest] == ["b", "a"]
    assert nearest[0][1] == pytest.approx(0.0, abs=1e-6)
    assert nearest[1][1] == pytest.approx(0.02**0.5, rel=1e-4)


def test_a_wrong_sized_vector_fails_only_its_own_entry(vector_url: str) -> None:
    sink = VectorSink(table=f"memory_{uuid.uuid4().hex[:8]}", dim=3, db_url=vector_url)
    outcomes = sink.deliver(
        [
            entry(1, "short", 1, [1, 2]),
            entry(2, "ok", 1, [5, 5, 5]),
            Entry("run:3", "run", "memory", "bad", 1, {"text": "no vector"}),
        ]
    )
    assert outcomes[0] is not None and "2 dimensions, the sink 3" in outcomes[0]
    assert outcomes[1] is None
    assert outcomes[2] is not None and "{'vector': [floats]" in outcomes[2]
    assert [key for key, _ in sink.nearest([5, 5, 5], k=5)] == ["ok"]


def test_pgvector_indexes_the_embeddings_for_recall(pgvector_url: str) -> None:
    table = f"memory_{uuid.uuid4().hex[:8]}"
    sink = VectorSink(table=table, dim=3, db_url=pgvector_url)
    assert sink.deliver([entry(1, "a", 1, [1, 0, 0])]) == [None]
    engine = sa.create_engine(pgvector_url)
    try:
        with engine.connect() as conn:
            indexdef = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = :t AND indexname = :i"),
                {"t": table, "i": f"{table}_hnsw"},
            ).scalar_one()
            version = conn.execute(
                sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert "hnsw" in indexdef and "vector_l2_ops" in indexdef
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 5)


def deliver_or_error(sink: VectorSink, entries: list[Entry]) -> list[str | None] | str:
    try:
        return sink.deliver(entries)
    except Exception as exc:  # the sink raised: the relay fails the whole batch
        return f"raised {type(exc).__name__}: {exc}"


def test_a_first_batch_the_database_rolls_back_does_not_leave_the_sink_without_its_table(
    vector_url: str,
) -> None:
    """The table used to be created inside the first batch's transaction and remembered as
    created before the commit: when the database refused that batch, the table was rolled
    back with it, and every later batch failed ("no such table") until the relay restarted."""
    table = f"memory_{uuid.uuid4().hex[:8]}"
    sink = VectorSink(table=table, dim=3, db_url=vector_url)
    # Given a first batch that the database refuses (a sequence number beyond bigint)
    first = deliver_or_error(sink, [entry(1, "a", 2**64, [1, 0, 0])])
    assert first != [None]
    # When the next batch comes, it is stored, and recall finds it
    assert deliver_or_error(sink, [entry(2, "b", 1, [0, 1, 0], text="b1")]) == [None]
    assert stored(vector_url, table, "b") == (1, {"text": "b1"})
    assert [key for key, _ in sink.nearest([0, 1, 0], k=1)] == ["b"]


def test_an_entry_the_database_refuses_fails_alone_and_bad_numbers_are_named(
    vector_url: str,
) -> None:
    sink = VectorSink(table=f"memory_{uuid.uuid4().hex[:8]}", dim=3, db_url=vector_url)
    outcomes = sink.deliver(
        [
            entry(1, "ok", 1, [1, 1, 1]),
            entry(2, "huge-seq", 2**64, [1, 0, 0]),
            entry(3, "nan", 1, [float("nan"), 0, 0]),
            entry(4, "big", 1, [1e39, 0, 0]),
            Entry("run:5", "run", "memory", "text", 1, {"vector": ["x", {}, 0]}),
        ]
    )
    assert outcomes[0] is None and outcomes[1] is not None
    assert outcomes[2] is not None and "NaN, an infinity" in outcomes[2]
    assert outcomes[3] is not None and "float32" in outcomes[3]
    assert outcomes[4] is not None and "not a number" in outcomes[4]
    assert [key for key, _ in sink.nearest([1, 1, 1], k=5)] == ["ok"]
