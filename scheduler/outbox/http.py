"""A webhook sink: each entry POSTed once, signed like alerts, with an Idempotency-Key."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import SecretStr

from scheduler.alerts import sign
from scheduler.outbox._base import Outcome
from scheduler.storage.outbox_store import Entry
from triggers._polling import mask_url


class WebhookSink:
    """POST `{id, run_id, key, seq, value}`; the receiver dedupes on `Idempotency-Key`."""

    def __init__(self, *, url: str, secret: str | SecretStr | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.secret = SecretStr(secret) if isinstance(secret, str) else secret
        self.timeout = timeout

    def describe(self) -> dict[str, Any]:
        return {"kind": "webhook", "url": mask_url(self.url), "signed": self.secret is not None}

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with httpx.Client(timeout=self.timeout) as client:
            for e in entries:
                body = json.dumps({"id": e.id, "run_id": e.run_id, "key": e.key, "seq": e.seq,
                                   "value": e.value}, sort_keys=True).encode()
                timestamp = int(time.time())
                headers = {"Content-Type": "application/json", "Idempotency-Key": e.id,
                           "X-Nightowl-Timestamp": str(timestamp)}
                if self.secret is not None:
                    headers["X-Nightowl-Signature"] = sign(self.secret.get_secret_value(),
                                                           timestamp, body)
                try:
                    response = client.post(self.url, content=body, headers=headers)
                    response.raise_for_status()
                    outcomes.append(None)
                except httpx.HTTPError as exc:
                    outcomes.append(f"{type(exc).__name__}: {exc}")
        return outcomes
