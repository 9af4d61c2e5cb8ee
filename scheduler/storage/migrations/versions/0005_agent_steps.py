"""Durable steps, run-wide usage, provider deferrals and agent versions per attempt.

- `steps`: each completed `ctx.step` of a run (its name and occurrence, result, usage and
  times), so a later attempt replays it instead of calling the LLM again; deleted with its
  run.
- `attempts.usage` / `attempts.agent_version`: what each attempt spent and which code ran
  it (a retry after a deploy runs new code; the run keeps the version it started with).
- `runs.deferrals`: attempts deferred because a provider's breaker was open; they count
  towards neither max_attempts nor max_deliveries.
- `runs.waiting_for` widens to 32 characters for `provider_unavailable`.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _widen_waiting_for() -> None:
    """`runs.deferrals`, and `runs.waiting_for` widened to 32 characters. SQLite rebuilds
    `runs` to change a column, and dropping the old table (foreign keys on) cascades into
    `attempts`: they are kept aside and put back. Runs first, while `attempts` still has the
    columns its copy was taken with."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE _keep_attempts AS SELECT * FROM attempts")
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("deferrals", sa.Integer(), nullable=False, server_default="0"))
        batch.alter_column(
            "waiting_for",
            existing_type=sa.String(length=16),
            type_=sa.String(length=32),
            existing_nullable=True,
        )
    if sqlite:
        op.execute("DELETE FROM attempts")  # what the cascade left, if anything
        op.execute("INSERT INTO attempts SELECT * FROM _keep_attempts")
        op.execute("DROP TABLE _keep_attempts")


def upgrade() -> None:
    _widen_waiting_for()
    op.create_table(
        "steps",
        sa.Column(
            "run_id", sa.String(length=36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("usage", _JSON, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_steps"),
        sa.UniqueConstraint("run_id", "name", "occurrence", name="uq_steps_run_name_occurrence"),
    )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("usage", _JSON, nullable=True))
        batch.add_column(sa.Column("agent_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "runs",
            "waiting_for",
            existing_type=sa.String(length=32),
            type_=sa.String(length=16),
            existing_nullable=True,
        )
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deferrals")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("agent_version")
        batch.drop_column("usage")
    op.drop_table("steps")
