"""Alerts: what went wrong quietly, told loudly, once.

`alert` is the value, `channels` the apprise and signed-webhook channels,
`manager` decides new / reminder / duplicate and sends, `leader` watches the
other process's leader lease. `build_alerts` wires them from the settings.
"""

from __future__ import annotations

import sqlalchemy as sa

from scheduler.alerts.alert import SEVERITY, Alert, scrubbed
from scheduler.alerts.channels import AppriseChannel, Channel, WebhookChannel, channels_from, sign
from scheduler.alerts.leader import LeaderWatch
from scheduler.alerts.manager import AlertManager
from scheduler.core.clock import Clock
from scheduler.core.settings import Settings
from scheduler.core.vocabulary import AlertKind, AlertState
from scheduler.storage.alert_store import AlertStore

__all__ = [
    "SEVERITY",
    "Alert",
    "AlertKind",
    "AlertManager",
    "AlertState",
    "AppriseChannel",
    "Channel",
    "LeaderWatch",
    "WebhookChannel",
    "build_alerts",
    "channels_from",
    "scrubbed",
    "sign",
]


def build_alerts(settings: Settings, engine: sa.Engine, clock: Clock) -> AlertManager:
    """The alert manager the scheduler and the watchdog share: configured channels over the
    alerts table."""
    channels = channels_from(settings.alert_urls, settings.alert_webhook_url, settings.alert_webhook_secret)
    return AlertManager(AlertStore(engine), clock, channels, repeat=settings.alert_repeat)
