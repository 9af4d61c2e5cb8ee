"""The operator's controls: pauses, replays and backfills, readable failures, acked alerts.

- `pauses`: one row per paused trigger or agent (`name = '*'` pauses them all), with who
  paused it, why and how its missed work is handled; a resume deletes the row. Every
  scheduler reads it each tick and every worker within a second.
- `runs.origin` (live, manual, backfill, replay) and `runs.replay_of` (the run a replay
  re-runs).
- `attempts.traceback`: the agent's formatted traceback, scrubbed and bounded.
- `run_logs`: the agent's `ctx.log` lines, per attempt, pruned with the run.
- `alerts.acked_at` / `acked_by` / `ack_reason`: an acknowledged episode sends no reminder.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("paused_by", sa.String(length=256), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("missed", sa.String(length=32), nullable=False),
        sa.Column("pending", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("scope", "name", name="pk_pauses"),
    )
    op.create_table(
        "run_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(
            "run_id", sa.String(length=36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_run_logs"),
        sa.UniqueConstraint("run_id", "attempt", "seq", name="uq_run_logs_run_attempt_seq"),
    )
    # Nullable columns: SQLite adds them in place (no rebuild of `runs`, which would cascade).
    op.add_column("runs", sa.Column("origin", sa.String(length=16), nullable=True))
    op.add_column("runs", sa.Column("replay_of", sa.String(length=36), nullable=True))
    op.create_index("ix_runs_replay_of", "runs", ["replay_of"])
    op.add_column("attempts", sa.Column("traceback", sa.Text(), nullable=True))
    op.add_column("alerts", sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("alerts", sa.Column("acked_by", sa.String(length=256), nullable=True))
    op.add_column("alerts", sa.Column("ack_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("ack_reason")
        batch.drop_column("acked_by")
        batch.drop_column("acked_at")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("traceback")
    op.drop_index("ix_runs_replay_of", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("replay_of")
        batch.drop_column("origin")
    op.drop_table("run_logs")
    op.drop_table("pauses")
