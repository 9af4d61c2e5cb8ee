"""One scrubber for everything nightowl stores or prints.

Secrets reach text in many ways: a driver error quoting its connection URL, httpx
naming the webhook it failed to reach (Slack-style hooks carry their secret in the
path), a traceback. Every place that writes an error to a table, a log line, an
alert body or a listing passes it through `scrub_text`, which removes the secret
values registered from settings and the password of any URL it recognises.

`register_settings` registers every secret-bearing setting (it runs whenever a
`Settings` is loaded, so every process and command has them): database, Redis and
broker URLs (shown masked, their passwords as `***`), the alert webhook URL (shown
as `scheme://host/***`: its path and query are the secret), its signing secret,
each apprise URL of NIGHTOWL_ALERT_URLS (shown as `scheme://***`: apprise URLs carry
tokens anywhere) and Flower's basic auth. Sinks register their own URLs when built.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from triggers.urls import mask_url, scrub_url_passwords

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # raw value -> what to show instead
_ordered: list[tuple[str, str]] = []  # longest first, rebuilt on register
# Shorter values would scrub ordinary words out of every line.
MIN_SECRET_CHARS = 4
# A password on its own (outside its URL) is replaced only from this length: a short one
# ("owl", "test") would also be an ordinary word in every log line. Inside a URL any
# password is masked (the whole URL is registered, and `scrub_url_passwords` catches the rest).
MIN_BARE_PASSWORD_CHARS = 8


def register(value: SecretStr | str | None, shown: str = "***") -> None:
    """Remember a secret value so `scrub_text` replaces it wherever it appears."""
    global _ordered
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= MIN_SECRET_CHARS:
        with _lock:
            if _secrets.get(raw) == shown:
                return
            _secrets[raw] = shown
            _ordered = sorted(_secrets.items(), key=lambda kv: len(kv[0]), reverse=True)


def scrub_text(text: str) -> str:
    """`text` without any registered secret or URL password."""
    if not text:
        return text
    for raw, shown in _ordered:  # a snapshot: register() swaps the list, never mutates it
        if raw in text:
            text = text.replace(raw, shown)
    return scrub_url_passwords(text)


def scrub_value(value: Any) -> Any:
    """A JSON-like value (alert details, a dead letter's details) with every string scrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    return value


def origin(url: str) -> str:
    """`scheme://host[:port]`: how a URL whose path or query carries a secret is named."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port
    except ValueError:
        return "(an invalid URL)"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def _raw(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def register_connection_url(value: SecretStr | str | None) -> None:
    """A database/Redis/broker URL: the whole URL shows masked, its password as `***`."""
    raw = _raw(value)
    if not raw:
        return
    masked = mask_url(raw)
    if masked != raw:
        register(raw, masked)
    try:
        password = urlsplit(raw).password
    except ValueError:
        password = None
    _register_bare_password(password)


def _register_bare_password(password: str | None) -> None:
    if password and len(password) >= MIN_BARE_PASSWORD_CHARS:
        register(password)


def register_path_secret_url(value: SecretStr | str | None) -> None:
    """A URL whose path and query are the secret (a webhook): shown as `scheme://host/***`."""
    raw = _raw(value)
    if not raw:
        return
    shown = origin(raw)
    register(raw, f"{shown}/***")
    try:
        parts = urlsplit(raw)
    except ValueError:
        return
    tail = raw[raw.index(parts.netloc) + len(parts.netloc) :] if parts.netloc else ""
    if len(tail) >= 8:  # the path alone, as a server's access log or an error may quote it
        register(tail, "/***")
    _register_bare_password(parts.password)


def register_apprise_url(value: SecretStr | str | None) -> None:
    """An apprise URL (`slack://TokenA/TokenB/...`): tokens can sit anywhere after the scheme."""
    raw = _raw(value)
    if not raw:
        return
    scheme, _, rest = raw.partition("://")
    register(raw, f"{scheme}://***")
    if len(rest) >= 8:
        register(rest, "***")


def register_settings(settings: Any) -> None:
    """Register every secret-bearing setting of a `Settings` (called when one is loaded)."""
    for name in ("database_url", "redis_url", "broker_url"):
        register_connection_url(getattr(settings, name, None))
    register_path_secret_url(getattr(settings, "alert_webhook_url", None))
    for url in getattr(settings, "alert_urls", None) or ():
        register_apprise_url(url)
    for name in ("alert_webhook_secret", "flower_basic_auth", "llm_api_key"):
        secret = getattr(settings, name, None)
        register(secret)
        raw = _raw(secret)
        if name == "flower_basic_auth" and raw and ":" in raw:
            _register_bare_password(raw.split(":", 1)[1])  # the password alone


# Attributes of trigger sources and sinks that hold a URL (SecretStr): connection URLs
# show masked; a webhook sink's URL is all secret past its host.
_CONNECTION_ATTRS = ("db_url", "broker_url", "redis_url")


def register_registry(registry: Any) -> None:
    """Register the secret URLs of every loaded trigger source and outbox sink.

    Trigger modules name their own databases, brokers and sinks (`db_change(db_url=...)`,
    `SqlUpsertSink(db_url=...)`, `WebhookSink(url=...)`); whatever logs or stores an error
    from them scrubs those too. Called wherever the CLI and the Celery app load a registry.
    """
    from scheduler.outbox import registry as sinks

    for spec in getattr(registry, "triggers", {}).values():
        for value in spec.source.secrets():
            register_connection_url(value)
    for name in sinks.registered_sinks():
        sink = sinks.sink_for(name)
        for value in _secret_attrs(sink, _CONNECTION_ATTRS):
            register_connection_url(value)
        for value in _secret_attrs(sink, ("url",)):
            register_path_secret_url(value)
        register(
            getattr(sink, "secret", None)
            if isinstance(getattr(sink, "secret", None), SecretStr | str)
            else None
        )


def _secret_attrs(obj: object, names: tuple[str, ...]) -> list[SecretStr | str]:
    if obj is None:
        return []
    found = (getattr(obj, name, None) for name in names)
    return [v for v in found if isinstance(v, SecretStr) or (isinstance(v, str) and "://" in v)]


class ScrubbingFilter(logging.Filter):
    """Scrubs a record's message, arguments and traceback before any handler formats it.

    The message is rendered once (`getMessage`) and stored scrubbed with no arguments; the
    traceback is rendered into `exc_text`, which every `logging.Formatter` prints instead
    of formatting `exc_info` again.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record, self._formatter)
        return True


def scrub_record(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> None:
    if getattr(record, "_nightowl_scrubbed", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken %-format: logging reports it; keep what we can
        message = str(record.msg)
    record.msg, record.args = scrub_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = (formatter or ScrubbingFilter._formatter).formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub_text(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub_text(record.stack_info)
    record._nightowl_scrubbed = True
