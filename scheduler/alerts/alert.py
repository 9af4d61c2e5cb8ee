"""The alert value: what is told, to whom it matters, and how severe it is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from scheduler.core import scrub
from scheduler.core.vocabulary import AlertKind, AlertState

SEVERITY: dict[AlertKind, str] = {
    AlertKind.RUN_STALLED: "warning",
    AlertKind.RUN_DEAD: "critical",
    AlertKind.RUN_LATE: "warning",
    AlertKind.RUN_STUCK: "critical",
    # The run ended on purpose (its budget did its job), but someone should look at why.
    AlertKind.RUN_BUDGET_EXCEEDED: "warning",
    # Runs wait and resume on their own: nothing is lost while the provider is down.
    AlertKind.PROVIDER_UNAVAILABLE: "warning",
    AlertKind.SPEND_CAP_REACHED: "warning",
    AlertKind.SCHEDULER_FAILING: "critical",
    AlertKind.TRIGGER_SOURCE_FAILING: "warning",
    AlertKind.OUTBOX_DEAD: "critical",
    AlertKind.WATCHDOG_DOWN: "critical",
    AlertKind.SCHEDULER_DOWN: "critical",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event. `dedupe_key` names the condition (`run_stalled:<run>:<attempt>`)."""

    kind: AlertKind
    message: str
    dedupe_key: str
    state: AlertState = AlertState.FIRING
    run_id: str | None = None
    trigger: str | None = None
    agent: str | None = None
    attempt: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return "info" if self.state == AlertState.RESOLVED else SEVERITY[self.kind]

    def payload(self, *, reminder: bool = False, episode: int = 0) -> dict[str, Any]:
        data = asdict(self)
        data.update(severity=self.severity, reminder=reminder, episode=episode)
        return data

    def title(self) -> str:
        subject = self.trigger or self.agent or self.run_id or ""
        return f"[nightowl {self.state}] {self.kind} {subject}".strip()

    def body(self) -> str:
        lines = [self.message]
        for label, value in (
            ("run", self.run_id),
            ("trigger", self.trigger),
            ("agent", self.agent),
            ("attempt", self.attempt),
        ):
            if value is not None:
                lines.append(f"{label}: {value}")
        if self.details:
            lines.append(json.dumps(self.details, sort_keys=True, default=str))
        return "\n".join(lines)


def scrubbed(alert: Alert) -> Alert:
    """The alert as it may be stored and sent: no secret in its message or details (they
    often quote an error, and errors quote URLs)."""
    message, details = scrub.scrub_text(alert.message), scrub.scrub_value(alert.details)
    if message == alert.message and details == alert.details:
        return alert
    return Alert(**{**asdict(alert), "message": message, "details": details})
