"""From a trigger's evaluation to what one tick commits: the runs, the state write, chunks.

Pure: nothing here touches the database, Redis or the clock, so the rules of step 3-4 of
the tick (scheduler/dispatch/service.py) are tested on their own:

- each firing becomes a `NewRun` under its overlap policy; a firing whose event cannot be
  stored (PostgreSQL would refuse it) becomes a run that ends `failed/not_serialisable`
  at once, instead of failing the whole chunk's commit;
- a polling trigger's state is written after every poll (`next_evaluation` doubles as
  "last polled"), a cron trigger's only when it moved;
- chunks hold at most CHUNK_SIZE runs (the first FIRST_CHUNK_SIZE, so the first agents
  are on the queue within milliseconds of a big slot).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agents import AgentSpec, event_to_json
from agents.values import event_problem, storable
from scheduler.core.overlap import overlap_for
from scheduler.core.values import NewRun, StateWrite
from scheduler.core.vocabulary import Reason, RunStatus
from triggers import Evaluation, TriggerSpec, TriggerStatus

log = logging.getLogger("nightowl.scheduler")

CHUNK_SIZE = 500
# The first chunk of a tick is small, so the first agents are on the queue within tens of
# milliseconds of their slot even when 10,000 triggers are due together; the rest go in
# full chunks (fewer, larger transactions).
FIRST_CHUNK_SIZE = 50


@dataclass
class Pending:
    """One trigger's evaluation, waiting to be committed."""

    spec: TriggerSpec
    evaluation: Evaluation
    runs: list[NewRun]
    write: StateWrite | None
    final: bool = True  # False for the leading pieces of a trigger split across chunks


def pending_for(
    spec: TriggerSpec, agent: AgentSpec, ev: Evaluation, state: dict[str, Any] | None, revision: int
) -> Pending:
    """The runs and the state write one evaluation asks for (`state`, `revision`: what the
    evaluation started from)."""
    runs: list[NewRun] = []
    for i, f in enumerate(ev.firings):
        overlap, key = overlap_for(spec.overlap, spec.name, f.overlap_key, catchup=i > 0)
        event_json = event_to_json(f.event)
        problem = event_problem(f.event, event_json)
        refused = problem is not None
        if refused:
            # Refused where it was produced: the run records it and ends, instead of the
            # whole chunk's commit failing on PostgreSQL (and passing on SQLite).
            log.warning("trigger %s: firing %s refused: %s", spec.name, f.idempotency_key, problem)
        runs.append(
            NewRun(
                idempotency_key=f.idempotency_key,
                trigger=spec.name,
                agent=agent.name,
                queue=agent.queue,
                event=storable(event_json) if refused else event_json,
                logical_time=f.logical_time,
                agent_version=agent.version,
                status=RunStatus.FAILED if refused else RunStatus.PENDING,
                terminal_reason=Reason.NOT_SERIALISABLE if refused else None,
                error=f"the event cannot be stored: {problem}" if refused else None,
                overlap=None if refused else overlap,
                overlap_key=None if refused else key,
            )
        )
    write = None
    # Polling triggers write every poll: `next_evaluation` then doubles as "last polled"
    # for listings and the watchdog. Cron writes only when its state moved.
    if revision == 0 or ev.state != state or ev.missed or spec.source.polls:
        write = StateWrite(
            spec.name,
            spec.kind,
            ev.state,
            revision,
            ev.next_at,
            source_failing=ev.status is TriggerStatus.SOURCE_FAILING,
        )
    return Pending(spec, ev, runs, write)


def chunks(pending: Iterable[Pending]) -> Iterator[list[Pending]]:
    """Group evaluations so each transaction holds at most CHUNK_SIZE runs and state writes
    (the first, FIRST_CHUNK_SIZE).

    A single trigger with more runs than that (catch-up `all`) is split; its
    state travels with its last piece, and the UNIQUE key makes a re-run of an
    earlier piece after a crash harmless.
    """
    chunk: list[Pending] = []
    size = 0
    limit = FIRST_CHUNK_SIZE
    for p in pending:
        runs = p.runs
        while len(runs) > CHUNK_SIZE:
            head, runs = runs[:CHUNK_SIZE], runs[CHUNK_SIZE:]
            if chunk:
                yield chunk
                chunk, size = [], 0
            yield [Pending(p.spec, _no_state(p.evaluation), head, None, final=False)]
            limit = CHUNK_SIZE
        weight = max(1, len(runs))
        if chunk and size + weight > limit:
            yield chunk
            chunk, size, limit = [], 0, CHUNK_SIZE
        chunk.append(Pending(p.spec, p.evaluation, runs, p.write))
        size += weight
    if chunk:
        yield chunk


def _no_state(ev: Evaluation) -> Evaluation:
    return Evaluation([], ev.state, ev.next_at, [])
