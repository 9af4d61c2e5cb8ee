"""What nightowl's settings, scrubber and storage engine need of the trigger sources, without
their drivers: `import triggers.sources` brings Redis and SQLAlchemy with it, and a CLI
command that only reads runs should not pay for Redis. `triggers.sources` re-exports all of
it, so existing imports keep working."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class SourceDefaults:
    """nightowl's own connections, for triggers that leave `db_url`/`broker_url` unset."""

    database_url: str | None = None
    broker_url: str | None = None
    # The key prefix nightowl's own broker uses (NIGHTOWL_REDIS_PREFIX): a queue_depth that
    # watches nightowl's broker reads its queues under it.
    broker_prefix: str = ""


def mask_url(url: str) -> str:
    """Hide the password of a URL for display (`redis://:***@host`)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else creds
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def secret_url(value: object, field: str) -> SecretStr | None:
    """Accept a URL as str or SecretStr; keep it secret from here on."""
    if value is None or isinstance(value, SecretStr):
        return value
    if isinstance(value, str) and "://" in value:
        return SecretStr(value)
    raise ValueError(f"{field} must be a URL like 'postgresql://user@host/db', got {type(value).__name__}")


def shown_url(url: SecretStr | None, default: str) -> str:
    return mask_url(url.get_secret_value()) if url is not None else default


# scheme://user:password@host -> scheme://user:***@host, for URLs nobody registered
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s/:@]*):(?P<pw>[^\s@/]+)@", re.I)


def scrub_url_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` it contains masked.

    The pure core of nightowl's one scrubber (`scheduler.core.scrub` builds on it with the
    secrets registered from settings); triggers use it for their source errors.
    """
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def scrub(message: str, *secrets: SecretStr | None) -> str:
    """An error message fit for state and logs: no secret URL or password, bounded length."""
    for secret in secrets:
        if secret is None:
            continue
        raw = secret.get_secret_value()
        message = message.replace(raw, mask_url(raw))
        password = _password(raw)
        if password:
            message = message.replace(password, "***")
    return scrub_url_passwords(message)[:MAX_ERROR_CHARS]


def _password(url: str) -> str | None:
    if "://" not in url or "@" not in url:
        return None
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    return creds.split(":", 1)[1] if ":" in creds and len(creds.split(":", 1)[1]) >= 3 else None


def sqlite_dbapi() -> Any | None:
    """The one SQLite library a nightowl process opens database files with.

    Two copies of SQLite in one process corrupt a shared file: POSIX locks belong to the
    process, so one library closing its descriptor drops the locks the other holds (seen:
    `database disk image is malformed` within a minute of `make demo`, whose relay wrote
    the vector sink through pysqlite3 and the outbox through the stdlib). pysqlite3 is the
    one that can load sqlite-vec, so it is used for every engine when it is installed;
    without it (not Linux), the stdlib module everywhere.
    """
    try:
        import pysqlite3.dbapi2 as module  # type: ignore[import-untyped]
    except ImportError:
        return None
    return module
