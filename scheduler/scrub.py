"""One scrubber for everything nightowl stores or prints.

Secrets reach text in many ways: a driver error quoting its connection URL, httpx
naming the webhook it failed to reach (Slack-style hooks carry their secret in the
path), a traceback. Every place that writes an error to a table, a log line, an
alert body or a listing passes it through `scrub_text`, which removes the secret
values registered from settings and the password of any URL it recognises.
"""

from __future__ import annotations

import re
import threading

from pydantic import SecretStr

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # raw value -> what to show instead
# scheme://user:password@host -> scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s/:@]*):(?P<pw>[^\s@/]+)@", re.I)


def register(value: SecretStr | str | None, shown: str = "***") -> None:
    """Remember a secret value so `scrub_text` replaces it wherever it appears."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= 4:
        with _lock:
            _secrets[raw] = shown


def scrub_text(text: str) -> str:
    """`text` without any registered secret or URL password."""
    with _lock:
        known = sorted(_secrets.items(), key=lambda kv: len(kv[0]), reverse=True)
    for raw, shown in known:
        if raw in text:
            text = text.replace(raw, shown)
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)
