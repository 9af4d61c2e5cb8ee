"""What the stores share: the table handles and the base every store group is built on."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scheduler.storage.dialect import Dialect
from scheduler.storage.models import Attempt, DeadLetter, MissedSlot, Pause, Run, RunLog, Step, TriggerState

runs_t = cast(sa.Table, Run.__table__)
attempts_t = cast(sa.Table, Attempt.__table__)
steps_t = cast(sa.Table, Step.__table__)
state_t = cast(sa.Table, TriggerState.__table__)
missed_t = cast(sa.Table, MissedSlot.__table__)
dead_t = cast(sa.Table, DeadLetter.__table__)
pauses_t = cast(sa.Table, Pause.__table__)
logs_t = cast(sa.Table, RunLog.__table__)


class StoreGroup:
    """One group of statements over one engine, with the engine's dialect chosen once.

    `dialect` may be given to pin a plan (the contract tests run the transaction plan on
    PostgreSQL with `Dialect.for_engine(engine).without_single_statement()`)."""

    def __init__(self, engine: Engine, *, dialect: Dialect | None = None) -> None:
        self.engine = engine
        self.dialect = dialect if dialect is not None else Dialect.for_engine(engine)
