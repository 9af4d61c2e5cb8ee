"""The alert manager: whether an alert is new, a reminder or a duplicate; stored, then sent.

- Every alert is stored; the row's unique key (dedupe_key, episode, state)
  decides which replica sends it, so N watchdogs send one alert.
- While an episode keeps firing it is not re-sent, except a reminder every
  `alert_repeat`.
- Channels: the log (always), apprise URLs and a signed webhook. Each non-log
  channel has its own thread and retries with exponential backoff, so a dead
  channel neither blocks the others nor the watchdog loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from tenacity import Retrying, stop_after_attempt, stop_when_event_set, wait_exponential

from scheduler.alerts.alert import Alert, scrubbed
from scheduler.alerts.channels import Channel
from scheduler.core import metrics, scrub
from scheduler.core.clock import Clock
from scheduler.core.vocabulary import AlertState
from scheduler.storage.alert_store import AlertStore, ChannelOutcome

log = logging.getLogger("nightowl.alerts")


class _Worker:
    """One thread per channel, draining its own queue with retries."""

    def __init__(
        self, channel: Channel, store: AlertStore, clock: Clock, attempts: int, backoff_max: float
    ) -> None:
        self.channel = channel
        self.store = store
        self.clock = clock
        self.attempts = attempts
        self.backoff_max = backoff_max
        self.queue: queue.Queue[tuple[int, Alert, dict[str, Any]] | None] = queue.Queue()
        # Set on close: a delivery still retrying makes no further attempt, and what is
        # still queued gets one try each (a watchdog stopping while a channel is down used
        # to wait out every backoff, 15 s on SIGTERM).
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"nightowl-alert-{channel.name}", daemon=True)
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

    def _pause(self, seconds: float) -> None:
        """The backoff between attempts, cut short by close()."""
        self.closing.wait(seconds)

    def _deliver(self, alert_id: int, alert: Alert, payload: dict[str, Any]) -> None:
        outcome: str = ChannelOutcome.SENT
        tried = 0
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.attempts) | stop_when_event_set(self.closing),
                reraise=True,
                wait=wait_exponential(multiplier=0.5, max=self.backoff_max),
                sleep=self._pause,
            ):
                with attempt:
                    tried += 1
                    self.channel.send(alert, payload)
        except Exception as exc:
            # Scrubbed before it is cut short: a cut could leave half a secret unrecognised.
            error = scrub.scrub_text(f"{type(exc).__name__}: {exc}")
            outcome = f"{ChannelOutcome.FAILED}: {error[:200]}"
            metrics.ALERTS_SENT.labels(self.channel.name, ChannelOutcome.FAILED).inc()
            log.error(
                "alert %s via %s failed after %d attempt(s): %s",
                alert.dedupe_key,
                self.channel.name,
                tried,
                error,
            )
        if outcome == ChannelOutcome.SENT:
            metrics.ALERTS_SENT.labels(self.channel.name, ChannelOutcome.SENT).inc()
        try:
            self.store.record_channel(alert_id, self.channel.name, outcome, self.clock.now())
        except Exception:
            log.warning("could not record the outcome of alert %s", alert_id, exc_info=True)


class AlertManager:
    """Decides whether an alert is new, a reminder or a duplicate, stores it and sends it."""

    def __init__(
        self,
        store: AlertStore,
        clock: Clock,
        channels: Sequence[Channel] = (),
        *,
        repeat: timedelta = timedelta(hours=1),
        attempts: int = 5,
        backoff_max: float = 30.0,
    ) -> None:
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
        resolved = Alert(**{**asdict(alert), "state": AlertState.RESOLVED})
        alert_id = self.store.insert(self._row(resolved, open_.episode, self.clock.now()))
        if alert_id is None:
            return False
        self._send(alert_id, resolved, reminder=False, episode=open_.episode)
        return True

    def _row(self, alert: Alert, episode: int, now: datetime) -> dict[str, Any]:
        return {
            "kind": alert.kind,
            "severity": alert.severity,
            "state": alert.state,
            "dedupe_key": alert.dedupe_key,
            "episode": episode,
            "run_id": alert.run_id,
            "trigger": alert.trigger,
            "agent": alert.agent,
            "attempt": alert.attempt,
            "message": alert.message,
            "details": alert.details,
            "channels": {},
            "created_at": now,
        }

    def _send(self, alert_id: int, alert: Alert, *, reminder: bool, episode: int) -> None:
        metrics.ALERTS_SENT.labels("log", ChannelOutcome.SENT).inc()
        level = logging.INFO if alert.state == AlertState.RESOLVED else logging.WARNING
        log.log(
            level,
            "ALERT %s%s %s: %s [%s]",
            alert.kind,
            " (reminder)" if reminder else "",
            alert.state,
            alert.message,
            alert.dedupe_key,
        )
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
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.closing.set()
            worker.queue.put(None)
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
