"""Alembic environment: the URL and connection come from `scheduler.storage.migrate`."""

from __future__ import annotations

from alembic import context

from scheduler.storage.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
    on_version_apply=config.attributes.get("on_version_apply"),  # progress in `db upgrade`
)
with context.begin_transaction():
    context.run_migrations()
