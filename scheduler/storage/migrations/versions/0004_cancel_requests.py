"""Cancel requests live on the run row, not in Redis.

A cancel aims at the run and its future (a retry or redelivery started after it
does not clear it), survives a Redis restart, and reaches the worker through the
heartbeat statement it already runs, so no extra round trip is spent on it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("cancel_requested", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("cancel_requested")
