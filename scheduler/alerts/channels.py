"""Alert channels: apprise URLs (Slack, email, PagerDuty, ...) and a signed JSON webhook.

Webhook signature: `X-Nightowl-Timestamp: <unix seconds>` and
`X-Nightowl-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`;
signing the timestamp with the body means a replayed old body with a fresh
timestamp does not verify (docs/alerts.md has the reference verifier).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from scheduler.alerts.alert import Alert
from scheduler.core import scrub


class Channel(Protocol):
    name: str

    def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        """Deliver or raise; the dispatcher retries."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookChannel:
    """A generic JSON webhook, signed with HMAC-SHA256 over timestamp and body.

    The URL is a secret (a Slack-style hook carries its token in the path): the channel
    is named by scheme and host only (`webhook:https://hooks.slack.com`), and the URL is
    registered with the scrubber so no error that quotes it is stored or logged whole.
    """

    def __init__(self, url: str | SecretStr, secret: SecretStr | None, timeout: float = 10.0) -> None:
        self.url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.secret = secret
        self.timeout = timeout
        raw = self.url.get_secret_value()
        scrub.register_path_secret_url(raw)
        scrub.register(secret)
        self.name = f"webhook:{scrub.origin(raw)}"

    def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Nightowl-Timestamp": str(timestamp),
            "User-Agent": "nightowl-alerts",
        }
        if self.secret is not None:
            headers["X-Nightowl-Signature"] = sign(self.secret.get_secret_value(), timestamp, body)
        response = httpx.post(
            self.url.get_secret_value(), content=body, headers=headers, timeout=self.timeout
        )
        response.raise_for_status()


class AppriseChannel:
    """Whatever apprise supports: `slack://...`, `mailto://...`, `pagerduty://...`."""

    def __init__(self, url: str | SecretStr) -> None:
        import apprise

        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        scrub.register_apprise_url(raw)
        self.name = f"apprise:{raw.split('://', 1)[0]}"
        self._apprise = apprise.Apprise()
        if not self._apprise.add(raw):
            raise ValueError(
                f"apprise does not understand the URL for {self.name!r}; check NIGHTOWL_ALERT_URLS"
            )

    def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        if not self._apprise.notify(title=alert.title(), body=alert.body()):
            raise RuntimeError(f"{self.name} refused the notification")


def channels_from(
    urls: Sequence[str | SecretStr], webhook_url: str | SecretStr | None, webhook_secret: SecretStr | None
) -> list[Channel]:
    """The configured channels; a URL apprise cannot parse fails at start, by name."""
    channels: list[Channel] = [AppriseChannel(u) for u in urls]
    if webhook_url:
        channels.append(WebhookChannel(webhook_url, webhook_secret))
    return channels
