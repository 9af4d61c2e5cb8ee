"""Dead letters: messages Celery would discard before any task code runs.

A pickle payload, a body that is not JSON, an unknown task name, a message
for a run id we never created, arguments of the wrong shape: each becomes a
`dead_letters` row (`nightowl deadletters list`) and the message is acked, so
the worker neither crashes nor loops on it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import signals
from celery.worker.consumer.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from scheduler.core.scrub import scrub_text, scrub_value
from scheduler.core.vocabulary import DeadLetterReason

log = logging.getLogger("nightowl.deadletters")
MAX_PAYLOAD_CHARS = 4096


def _payload_text(message: Any) -> str:
    body = getattr(message, "body", b"")
    # Binary payloads (a pickle) are kept readable and storable: PostgreSQL text refuses NUL.
    text = body.decode("utf-8", "backslashreplace") if isinstance(body, bytes) else repr(body)
    return text.replace("\x00", "\\x00")[:MAX_PAYLOAD_CHARS]


def record(
    reason: DeadLetterReason,
    *,
    task_name: str | None = None,
    task_id: str | None = None,
    payload: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write a dead letter; never raises (a broken database must not crash the consumer)."""
    from scheduler.worker.runtime import current_runtime

    try:
        current_runtime().store.add_dead_letter(
            reason=reason,
            task_name=task_name,
            task_id=task_id,
            payload=None if payload is None else scrub_text(payload),
            details=None if details is None else scrub_value(details),
            now=datetime.now(UTC),
        )
        log.warning("dead letter: %s (task %s, id %s)", reason, task_name, task_id)
    except Exception:
        log.exception("could not record dead letter %s for task %s", reason, task_name)


class DeadLetterConsumer(Consumer):
    """Celery's consumer, recording undecodable messages before acking them."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        record(
            DeadLetterReason.DECODE_ERROR,
            payload=_payload_text(message),
            details={
                "error": f"{type(exc).__name__}: {exc}",
                "content_type": getattr(message, "content_type", None),
                "headers": {k: str(v) for k, v in (getattr(message, "headers", None) or {}).items()},
            },
        )
        super().on_decode_error(message, exc)


@signals.task_unknown.connect
def _on_unknown_task(
    sender: Any = None,
    message: Any = None,
    exc: Exception | None = None,
    name: str | None = None,
    id: str | None = None,
    **_: Any,
) -> None:
    record(
        DeadLetterReason.UNKNOWN_TASK,
        task_name=name,
        task_id=id,
        payload=_payload_text(message),
        details={"error": str(exc)},
    )


@signals.task_rejected.connect
def _on_rejected(sender: Any = None, message: Any = None, exc: Exception | None = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    # A pickle (or any non-JSON) payload: refused by accept_content=["json"], never deserialised.
    reason = (
        DeadLetterReason.CONTENT_DISALLOWED
        if isinstance(exc, ContentDisallowed)
        else DeadLetterReason.REJECTED
    )
    record(
        reason,
        task_name=headers.get("task"),
        task_id=headers.get("id"),
        payload=_payload_text(message),
        details={"error": str(exc) if exc else None},
    )
