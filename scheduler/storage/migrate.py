"""`nightowl db upgrade`: Alembic, configured in code so no alembic.ini is needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from scheduler.storage.dialect import Dialect

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


OnStep = Callable[[str, str], None]


def upgrade(engine: Engine, revision: str = "head", on_step: OnStep | None = None) -> None:
    """Bring the schema to `revision` in one transaction; `on_step(revision, message)` after
    each migration applies.

    Idempotent, and safe to run from several replicas' init at once: on PostgreSQL a
    transaction-scoped advisory lock makes the others wait, then find nothing to do.
    """
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        lock = Dialect.of(conn).migration_lock()
        if lock is not None:
            conn.execute(lock)
        cfg.attributes["connection"] = conn
        if on_step is not None:
            cfg.attributes["on_version_apply"] = lambda *, step, **_: on_step(
                step.up_revision_id or "", step.up_revision.doc or ""
            )
        command.upgrade(cfg, revision)


def pending(engine: Engine) -> list[str]:
    """Revisions `upgrade` would apply, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(engine))
    return [r.revision for r in reversed(list(script.iterate_revisions("head", current(engine))))]


def current(engine: Engine) -> str | None:
    """The applied revision, or None on an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest migration this code ships (what `db upgrade` brings a database to)."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head
