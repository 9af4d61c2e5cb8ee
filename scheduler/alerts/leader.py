"""`<role>_down`: no leader lease for a role (scheduler or watchdog) for a grace period.

The scheduler watches the watchdog's lease and the watchdog the scheduler's, so
either process dying alone is told by the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import redis

from scheduler.alerts.alert import Alert
from scheduler.alerts.manager import AlertManager
from scheduler.core import keys
from scheduler.core.vocabulary import AlertKind


class LeaderWatch:
    """Alerts `<role>_down` once the `<role>` leader lease has been missing for `grace`;
    resolves it when a leader is back."""

    def __init__(self, client: redis.Redis, prefix: str, role: str, grace: timedelta, message: str) -> None:
        self.client = client
        self.key = keys.leader(prefix, role)
        self.role = role
        self.grace = grace
        self.message = message
        self.missing_since: datetime | None = None

    def check(self, now: datetime, alerts: AlertManager) -> int:
        """Alerts sent or resolved by this check (0 or 1)."""
        kind = AlertKind(f"{self.role}_down")
        if self.client.exists(self.key):
            self.missing_since = None
            return int(
                alerts.resolve(Alert(kind=kind, dedupe_key=kind, message=f"a {self.role} leader is back"))
            )
        if self.missing_since is None:
            self.missing_since = now
            return 0
        if now - self.missing_since < self.grace:
            return 0
        return int(
            alerts.fire(
                Alert(
                    kind=kind,
                    dedupe_key=kind,
                    message=self.message,
                    details={"missing_since": self.missing_since.isoformat()},
                )
            )
        )
