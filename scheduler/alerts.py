"""Alerts: what went wrong quietly, told loudly, once.

- Every alert is stored; the row's unique key (dedupe_key, episode, state)
  decides which replica sends it, so N watchdogs send one alert.
- While an episode keeps firing it is not re-sent, except a reminder every
  `alert_repeat`.
- Channels: the log (always), apprise URLs (Slack, email, PagerDuty, ...)
  and a signed JSON webhook. Each non-log channel has its own thread and
  retries with exponential backoff, so a dead channel neither blocks the
  others nor the watchdog loop.

Webhook signature: `X-Nightowl-Timestamp: <unix seconds>` and
`X-Nightowl-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`;
signing the timestamp with the body means a replayed old body with a fresh
timestamp does not verify (docs/alerts.md has the reference verifier).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import httpx
from pydantic import SecretStr
from tenacity import Retrying, stop_after_attempt, wait_exponential

from scheduler import metrics, scrub
from scheduler.clock import Clock
from scheduler.storage.alert_store import AlertStore

log = logging.getLogger("nightowl.alerts")

AlertKind = Literal["run_stalled", "run_dead", "run_late", "run_stuck", "trigger_source_failing",
                    "scheduler_failing", "outbox_dead", "watchdog_down", "scheduler_down"]
SEVERITY: dict[str, str] = {
    "run_stalled": "warning", "run_dead": "critical", "run_late": "warning",
    "run_stuck": "critical", "scheduler_failing": "critical",
    "trigger_source_failing": "warning", "outbox_dead": "critical",
    "watchdog_down": "critical", "scheduler_down": "critical",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event. `dedupe_key` names the condition (`run_stalled:<run>:<attempt>`)."""

    kind: str
    message: str
    dedupe_key: str
    state: str = "firing"
    run_id: str | None = None
    trigger: str | None = None
    agent: str | None = None
    attempt: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return "info" if self.state == "resolved" else SEVERITY.get(self.kind, "warning")

    def payload(self, *, reminder: bool = False, episode: int = 0) -> dict[str, Any]:
        data = asdict(self)
        data.update(severity=self.severity, reminder=reminder, episode=episode)
        return data

    def title(self) -> str:
        subject = self.trigger or self.agent or self.run_id or ""
        return f"[nightowl {self.state}] {self.kind} {subject}".strip()

    def body(self) -> str:
        lines = [self.message]
        for label, value in (("run", self.run_id), ("trigger", self.trigger), ("agent", self.agent),
                             ("attempt", self.attempt)):
            if value is not None:
                lines.append(f"{label}: {value}")
        if self.details:
            lines.append(json.dumps(self.details, sort_keys=True, default=str))
        return "\n".join(lines)


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
        headers = {"Content-Type": "application/json", "X-Nightowl-Timestamp": str(timestamp),
                   "User-Agent": "nightowl-alerts"}
        if self.secret is not None:
            headers["X-Nightowl-Signature"] = sign(self.secret.get_secret_value(), timestamp, body)
        response = httpx.post(self.url.get_secret_value(), content=body, headers=headers,
                              timeout=self.timeout)
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
            raise ValueError(f"apprise does not understand the URL for {self.name!r}; check "
                             "NIGHTOWL_ALERT_URLS")

    def send(self, alert: Alert, payload: dict[str, Any]) -> None:
        if not self._apprise.notify(title=alert.title(), body=alert.body()):
            raise RuntimeError(f"{self.name} refused the notification")


class _Worker:
    """One thread per channel, draining its own queue with retries."""

    def __init__(self, channel: Channel, store: AlertStore, clock: Clock, attempts: int,
                 backoff_max: float) -> None:
        self.channel = channel
        self.store = store
        self.clock = clock
        self.attempts = attempts
        self.backoff_max = backoff_max
        self.queue: queue.Queue[tuple[int, Alert, dict[str, Any]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"nightowl-alert-{channel.name}",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            finally:
                self.queue.task_done()

    def _deliver(self, alert_id: int, alert: Alert, payload: dict[str, Any]) -> None:
        outcome = "sent"
        try:
            for attempt in Retrying(stop=stop_after_attempt(self.attempts), reraise=True,
                                    wait=wait_exponential(multiplier=0.5, max=self.backoff_max)):
                with attempt:
                    self.channel.send(alert, payload)
        except Exception as exc:
            # Scrubbed before it is cut short: a cut could leave half a secret unrecognised.
            error = scrub.scrub_text(f"{type(exc).__name__}: {exc}")
            outcome = f"failed: {error[:200]}"
            metrics.ALERTS_SENT.labels(self.channel.name, "failed").inc()
            log.error("alert %s via %s failed after %d attempts: %s", alert.dedupe_key,
                      self.channel.name, self.attempts, error)
        if outcome == "sent":
            metrics.ALERTS_SENT.labels(self.channel.name, "sent").inc()
        try:
            self.store.record_channel(alert_id, self.channel.name, outcome, self.clock.now())
        except Exception:
            log.warning("could not record the outcome of alert %s", alert_id, exc_info=True)


class AlertManager:
    """Decides whether an alert is new, a reminder or a duplicate, stores it and sends it."""

    def __init__(self, store: AlertStore, clock: Clock, channels: Sequence[Channel] = (), *,
                 repeat: timedelta = timedelta(hours=1), attempts: int = 5,
                 backoff_max: float = 30.0) -> None:
        self.store = store
        self.clock = clock
        self.repeat = repeat
        self._workers = [_Worker(c, store, clock, attempts, backoff_max) for c in channels]

    def fire(self, alert: Alert) -> bool:
        """Raise (or remind about) a firing alert; True when something was sent."""
        alert = scrubbed(alert)
        now = self.clock.now()
        open_, episode = self.store.episode(alert.dedupe_key)
        if open_ is not None:
            if self.store.claim_reminder(open_.id, now, self.repeat):
                self._send(open_.id, alert, reminder=True, episode=open_.episode)
                return True
            return False
        alert_id = self.store.insert(self._row(alert, episode, now))
        if alert_id is None:
            return False  # another replica inserted this episode first and sends it
        self._send(alert_id, alert, reminder=False, episode=episode)
        return True

    def fire_once(self, alert: Alert) -> bool:
        """Raise an alert whose condition happens once (a stalled attempt): never a second
        episode of the same key, whether or not the first was resolved meanwhile. (With
        `fire`, a stall re-read by the next check after its recovery resolved it opened a new
        episode: dozens of sends for one stall.)"""
        open_, episode = self.store.episode(scrubbed(alert).dedupe_key)
        if open_ is None and episode > 0:
            return False
        return self.fire(alert)

    def resolve(self, alert: Alert) -> bool:
        """Close the open episode of `alert.dedupe_key`, if any; True when sent."""
        alert = scrubbed(alert)
        open_, _ = self.store.episode(alert.dedupe_key)
        if open_ is None:
            return False
        resolved = Alert(**{**asdict(alert), "state": "resolved"})
        alert_id = self.store.insert(self._row(resolved, open_.episode, self.clock.now()))
        if alert_id is None:
            return False
        self._send(alert_id, resolved, reminder=False, episode=open_.episode)
        return True

    def _row(self, alert: Alert, episode: int, now: datetime) -> dict[str, Any]:
        return {"kind": alert.kind, "severity": alert.severity, "state": alert.state,
                "dedupe_key": alert.dedupe_key, "episode": episode, "run_id": alert.run_id,
                "trigger": alert.trigger, "agent": alert.agent, "attempt": alert.attempt,
                "message": alert.message, "details": alert.details, "channels": {},
                "created_at": now}

    def _send(self, alert_id: int, alert: Alert, *, reminder: bool, episode: int) -> None:
        metrics.ALERTS_SENT.labels("log", "sent").inc()
        level = logging.INFO if alert.state == "resolved" else logging.WARNING
        log.log(level, "ALERT %s%s %s: %s [%s]", alert.kind, " (reminder)" if reminder else "",
                alert.state, alert.message, alert.dedupe_key)
        payload = alert.payload(reminder=reminder, episode=episode)
        for worker in self._workers:
            worker.queue.put((alert_id, alert, payload))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued send finished (tests, shutdown). False on timeout."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            while worker.queue.unfinished_tasks:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the channel threads and wait for them, so no thread still holds a database
        connection when the caller disposes the engine."""
        for worker in self._workers:
            worker.queue.put(None)
        for worker in self._workers:
            worker.thread.join(timeout)


def scrubbed(alert: Alert) -> Alert:
    """The alert as it may be stored and sent: no secret in its message or details (they
    often quote an error, and errors quote URLs)."""
    message, details = scrub.scrub_text(alert.message), scrub.scrub_value(alert.details)
    if message == alert.message and details == alert.details:
        return alert
    return Alert(**{**asdict(alert), "message": message, "details": details})


def channels_from(urls: Sequence[str | SecretStr], webhook_url: str | SecretStr | None,
                  webhook_secret: SecretStr | None) -> list[Channel]:
    """The configured channels; a URL apprise cannot parse fails at start, by name."""
    channels: list[Channel] = [AppriseChannel(u) for u in urls]
    if webhook_url:
        channels.append(WebhookChannel(webhook_url, webhook_secret))
    return channels


def leader_watch(owner: Any, role: str, now: datetime, alerts: AlertManager, message: str) -> int:
    """Alert `<role>_down` when no `<role>` leader lease exists for a grace period; resolve it
    when one is back. Shared by the watchdog (watching the scheduler) and the scheduler
    (watching the watchdog)."""
    attr = f"_{role}_missing_since"
    present = bool(owner.redis.exists(f"{owner.prefix}leader:{role}"))
    key = f"{role}_down"
    if present:
        setattr(owner, attr, None)
        return int(alerts.resolve(Alert(kind=key, dedupe_key=key,
                                        message=f"a {role} leader is back")))
    since = getattr(owner, attr, None)
    if since is None:
        setattr(owner, attr, now)
        return 0
    if now - since < owner.leader_grace:
        return 0
    return int(alerts.fire(Alert(kind=key, dedupe_key=key, message=message,
                                 details={"missing_since": since.isoformat()})))
