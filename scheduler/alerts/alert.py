"""The alert value: what is told, to whom it matters, and how severe it is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scheduler.core import scrub

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


def scrubbed(alert: Alert) -> Alert:
    """The alert as it may be stored and sent: no secret in its message or details (they
    often quote an error, and errors quote URLs)."""
    message, details = scrub.scrub_text(alert.message), scrub.scrub_value(alert.details)
    if message == alert.message and details == alert.details:
        return alert
    return Alert(**{**asdict(alert), "message": message, "details": details})
