"""Alert episodes (a condition that fires, resolves and fires again is a new episode),
and the attempts index the watchdog reads by.

The unique key becomes (dedupe_key, episode, state), so every replica that
detects the same episode inserts the same row and only the first one sends;
`reminded_at` paces the `alert_repeat` reminders of a still-firing episode.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("episode", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_alerts_dedupe_state", type_="unique")
        batch.create_unique_constraint("uq_alerts_dedupe_episode_state", ["dedupe_key", "episode", "state"])
        batch.create_index("ix_alerts_kind_state", ["kind", "state"])
        batch.create_index("ix_alerts_created_at", ["created_at"])
    op.create_index("ix_attempts_status_finished", "attempts", ["status", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_status_finished", table_name="attempts")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_created_at")
        batch.drop_index("ix_alerts_kind_state")
        batch.drop_constraint("uq_alerts_dedupe_episode_state", type_="unique")
        batch.create_unique_constraint("uq_alerts_dedupe_state", ["dedupe_key", "state"])
        batch.drop_column("reminded_at")
        batch.drop_column("episode")
