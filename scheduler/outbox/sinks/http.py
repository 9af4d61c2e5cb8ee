"""A webhook sink: each entry POSTed once, signed like alerts, with an Idempotency-Key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from scheduler.alerts import sign
from scheduler.core import scrub
from scheduler.outbox.abc import Entry, Outcome, SinkError


def origin(url: str) -> str:
    """`scheme://host[:port]`: how a URL whose path or query may carry a secret is shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


class WebhookSink:
    """POST `{id, run_id, key, seq, value}`; the receiver dedupes on `Idempotency-Key`.

    The relay hands it one entry per call (`one_at_a_time`), marking each delivered as soon
    as the receiver accepted it and never sending an entry whose claim it no longer holds.
    The URL is a secret (Slack-style hooks carry their token in the path): it is shown and
    written to errors as its scheme and host only.
    """

    one_at_a_time = True

    def __init__(
        self, *, url: str | SecretStr, secret: str | SecretStr | None = None, timeout: float = 10.0
    ) -> None:
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        if not isinstance(raw, str) or urlsplit(raw).scheme not in {"http", "https"}:
            raise SinkError("WebhookSink url must be an http(s) URL")
        self.url = SecretStr(raw)
        self.shown = origin(raw)
        self.secret = SecretStr(secret) if isinstance(secret, str) else secret
        self.timeout = timeout
        scrub.register(raw, f"{self.shown}/***")
        if self.secret is not None:
            scrub.register(self.secret)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": "webhook", "url": self.shown, "signed": self.secret is not None}

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
            return self._client

    def deliver(self, entries: Sequence[Entry]) -> list[Outcome]:
        client = self.client()
        return [self._post(client, e) for e in entries]

    def _post(self, client: httpx.Client, e: Entry) -> Outcome:
        body = json.dumps(
            {"id": e.id, "run_id": e.run_id, "key": e.key, "seq": e.seq, "value": e.value}, sort_keys=True
        ).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": e.id,
            "X-Nightowl-Timestamp": str(timestamp),
        }
        if self.secret is not None:
            headers["X-Nightowl-Signature"] = sign(self.secret.get_secret_value(), timestamp, body)
        try:
            response = client.post(self.url.get_secret_value(), content=body, headers=headers)
        except httpx.HTTPError as exc:
            return scrub.scrub_text(f"{type(exc).__name__} posting to {self.shown}: {exc}")
        if response.is_success:
            return None
        return f"HTTP {response.status_code} {response.reason_phrase} from {self.shown}"

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
