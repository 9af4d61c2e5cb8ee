"""Outbox ordering: a per-(sink, key) sequence counter, and when a row went dead.

The counter row is locked by the success transaction that takes the next
numbers, so two runs writing the same key get sequence numbers in commit
order, and pruning delivered rows never resets a key's sequence.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_keys",
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sink", "key"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_outbox_dead_at", ["dead_at"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_dead_at")
        batch.drop_column("dead_at")
    op.drop_table("outbox_keys")
