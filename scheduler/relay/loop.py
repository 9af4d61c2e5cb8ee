"""Wiring for `nightowl relay`: a relay over the configured database, stepped back to back."""

from __future__ import annotations

import logging
from datetime import timedelta

from scheduler.core.clock import Clock, SystemClock
from scheduler.core.loop import IntervalLoop, Step
from scheduler.core.settings import Settings
from scheduler.relay.service import Relay
from scheduler.storage.engine import make_engine
from scheduler.storage.outbox_store import OutboxStore

log = logging.getLogger("nightowl.relay")


def build_relay(settings: Settings, *, batch: int = 200, clock: Clock | None = None) -> Relay:
    """A relay over the configured database; sinks come from the loaded trigger modules."""
    store = OutboxStore(make_engine(settings.require_database_url()))
    return Relay(
        store,
        clock or SystemClock(),
        batch=batch,
        claim_ttl=settings.claim_ttl,
        retention=settings.retention,
        defaults=settings.source_defaults(),
    )


class RelayLoop(IntervalLoop):
    """Steps the relay until `stop()`; idles `poll` seconds when there is nothing to do.

    A failing step (the database down) logs one scrubbed line, then one "still failing"
    line a minute and one "recovered" line (scheduler.core.steplog), not a traceback per step."""

    def __init__(self, relay: Relay, poll: float = 0.5) -> None:
        self.relay = relay
        super().__init__(
            [Step("relay step", self._step_once, timedelta(seconds=poll), drain=True)],
            relay.close,
            log,
            monotonic=relay.clock.monotonic,
        )

    def _step_once(self) -> bool:
        return self.relay.step().claimed > 0
