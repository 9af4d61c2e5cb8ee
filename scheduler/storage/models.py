"""Tables, as typed SQLAlchemy 2.0 models. The same schema runs on SQLite and PostgreSQL.

The statuses stored in them are the vocabulary's (scheduler/core/vocabulary.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from scheduler.core.vocabulary import OutboxStatus, RunStatus
from scheduler.storage.dialect import Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in and out on every backend (SQLite would hand back naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if Dialect.named(dialect.name).naive_datetimes else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# The partial index's predicate (a constant: the vocabulary's value, never user input).
_RUNNING = f"status = '{RunStatus.RUNNING.value}'"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSONType,
        Any: JSONType,
    }


class Run(Base):
    """One firing of a trigger (or a manual fire). UNIQUE idempotency_key dedupes firings."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.Index("ix_runs_status_not_before", "status", "not_before"),
        sa.Index("ix_runs_status_lease", "status", "lease_expires_at"),
        sa.Index("ix_runs_overlap_active", "overlap_key", "status"),
        sa.Index("ix_runs_agent_status", "agent", "status"),
        # At most one running run per overlap key, across every worker and machine.
        sa.Index(
            "uq_runs_running_overlap",
            "overlap_key",
            unique=True,
            postgresql_where=sa.text(_RUNNING),
            sqlite_where=sa.text(_RUNNING),
        ),
        sa.Index("ix_runs_trigger_created", "trigger", "created_at"),
        sa.Index("ix_runs_created", "created_at"),
        sa.Index("ix_runs_replay_of", "replay_of"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(512), unique=True)
    trigger: Mapped[str | None] = mapped_column(sa.String(64))
    agent: Mapped[str] = mapped_column(sa.String(64))
    queue: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16))
    terminal_reason: Mapped[str | None] = mapped_column(sa.String(32))
    attempt: Mapped[int] = mapped_column(default=0)
    deliveries: Mapped[int] = mapped_column(default=0)
    fence: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    not_before: Mapped[datetime | None]
    logical_time: Mapped[datetime | None]
    event: Mapped[Any]
    result: Mapped[Any | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    usage: Mapped[Any | None]
    agent_version: Mapped[str | None] = mapped_column(sa.String(64))
    overlap_key: Mapped[str | None] = mapped_column(sa.String(256))
    # How this run yields to others with its overlap_key: skip | buffer_one | cancel_other | wait.
    overlap: Mapped[str | None] = mapped_column(sa.String(16))
    # Why a `waiting` run waits: overlap | concurrency (woken when a holder ends) or retry.
    waiting_for: Mapped[str | None] = mapped_column(sa.String(32))
    # Attempts deferred because a provider was unavailable: not counted against the limits.
    deferrals: Mapped[int] = mapped_column(default=0, server_default="0")
    last_heartbeat: Mapped[Any | None]
    # Mirrors the Redis run lease: past it with status `running`, the holder is gone.
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    queued_at: Mapped[datetime | None]
    # A cancel request (by_user | cancel_other) aimed at the run and its future attempts:
    # the worker's beat reads it, a retry verdict yields to it, a later start ends it.
    cancel_requested: Mapped[str | None] = mapped_column(sa.String(32))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # live (its trigger fired it) | manual (`fire`) | backfill | replay (`runs replay`).
    origin: Mapped[str | None] = mapped_column(sa.String(16))
    replay_of: Mapped[str | None] = mapped_column(sa.String(36))  # the run a replay re-runs


class Attempt(Base):
    """One try of a run, with the fence it held."""

    __tablename__ = "attempts"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "number", name="uq_attempts_run_number"),
        # The watchdog reads running attempts and recently stalled ones.
        sa.Index("ix_attempts_status_finished", "status", "finished_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    fence: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    error_class: Mapped[str | None] = mapped_column(sa.String(256))
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    worker: Mapped[str | None] = mapped_column(sa.String(256))
    celery_task_id: Mapped[str | None] = mapped_column(sa.String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    progress_at: Mapped[datetime | None]
    usage: Mapped[Any | None]  # what this attempt spent (the run's usage sums every attempt)
    agent_version: Mapped[str | None] = mapped_column(sa.String(64))  # the code that ran it
    traceback: Mapped[str | None] = mapped_column(sa.Text)  # scrubbed, bounded, agent frames first


class Step(Base):
    """One completed `ctx.step` of a run: replayed by later attempts, deleted with the run."""

    __tablename__ = "steps"
    __table_args__ = (
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_steps"),
        # A step is addressed by its name and occurrence (the n-th completed call of it).
        sa.UniqueConstraint("run_id", "name", "occurrence", name="uq_steps_run_name_occurrence"),
    )

    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int]  # the order steps completed in
    name: Mapped[str] = mapped_column(sa.String(128))
    occurrence: Mapped[int]
    attempt: Mapped[int]
    result: Mapped[Any | None]
    usage: Mapped[Any | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime]


class TriggerState(Base):
    """A trigger's versioned durable state, written with compare-and-set on `revision`."""

    __tablename__ = "trigger_state"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(default=1)
    next_evaluation: Mapped[datetime | None]
    source_failing: Mapped[bool] = mapped_column(default=False)
    paused: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime]


class Pause(Base):
    """A paused trigger or agent (`name = '*'`: all of them); a resume deletes the row."""

    __tablename__ = "pauses"

    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # trigger | agent
    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    paused_by: Mapped[str | None] = mapped_column(sa.String(256))
    paused_at: Mapped[datetime]
    # A cron trigger's slots while paused: skip (ledger entries `skipped/paused`) or
    # run-latest-on-resume (the newest one runs when it is resumed).
    missed: Mapped[str] = mapped_column(sa.String(32))
    # An agent's runs while paused: wait (until resumed) or skip (end `skipped/paused`).
    pending: Mapped[str] = mapped_column(sa.String(16))


class RunLog(Base):
    """One `ctx.log` line of an attempt (`runs logs`), bounded per attempt, scrubbed."""

    __tablename__ = "run_logs"
    __table_args__ = (sa.UniqueConstraint("run_id", "attempt", "seq", name="uq_run_logs_run_attempt_seq"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    seq: Mapped[int]
    at: Mapped[datetime]
    level: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text)


class MissedSlot(Base):
    """The missed-run ledger: one row per contiguous gap of slots that did not run."""

    __tablename__ = "missed_slots"
    __table_args__ = (sa.Index("ix_missed_trigger_first", "trigger", "first_slot"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    trigger: Mapped[str] = mapped_column(sa.String(64))
    first_slot: Mapped[datetime]
    last_slot: Mapped[datetime]
    count: Mapped[int]
    reason: Mapped[str] = mapped_column(sa.String(32))
    recorded_at: Mapped[datetime]


class OutboxEntry(Base):
    """An intended write to a sink, committed with its run's success."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("sink", "key", "seq", name="uq_outbox_sink_key_seq"),
        sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # <run_id>:<seq>
    run_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    sink: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(512))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    value: Mapped[Any]
    status: Mapped[str] = mapped_column(sa.String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(256))
    claim_expires: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    dead_at: Mapped[datetime | None] = mapped_column(index=True)


class OutboxKey(Base):
    """The last sequence number handed out per (sink, key); locked while taking the next."""

    __tablename__ = "outbox_keys"

    sink: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger)


class Alert(Base):
    """One alert event (an episode firing or resolving); the unique key makes sending
    idempotent across replicas: whoever inserts the row sends it."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.UniqueConstraint("dedupe_key", "episode", "state", name="uq_alerts_dedupe_episode_state"),
        sa.Index("ix_alerts_kind_state", "kind", "state"),
        sa.Index("ix_alerts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    severity: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16))
    dedupe_key: Mapped[str] = mapped_column(sa.String(512))
    run_id: Mapped[str | None] = mapped_column(sa.String(36))
    trigger: Mapped[str | None] = mapped_column(sa.String(64))
    agent: Mapped[str | None] = mapped_column(sa.String(64))
    attempt: Mapped[int | None]
    message: Mapped[str] = mapped_column(sa.Text)
    details: Mapped[Any | None]
    channels: Mapped[Any | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    episode: Mapped[int] = mapped_column(default=0, server_default="0")
    reminded_at: Mapped[datetime | None]
    # `alerts ack`: the episode stays open until its cause ends, but sends no reminder.
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(sa.String(256))
    ack_reason: Mapped[str | None] = mapped_column(sa.Text)


class DeadLetter(Base):
    """A message that could not be processed (bad payload, unknown task or run)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    reason: Mapped[str] = mapped_column(sa.String(64))
    task_name: Mapped[str | None] = mapped_column(sa.String(256))
    task_id: Mapped[str | None] = mapped_column(sa.String(64))
    payload: Mapped[str | None] = mapped_column(sa.Text)
    details: Mapped[Any | None]
    created_at: Mapped[datetime] = mapped_column(index=True)
