"""The agent's `ctx.log` lines, kept per attempt for `nightowl runs logs`.

`ctx.log` is a logger adapter that still logs as before (the worker's log, with the run's
id) and also keeps each line of level INFO and above, scrubbed of secrets and bounded (so a
chatty loop cannot fill the database); the executor writes the kept lines with each
heartbeat and at the attempt's end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any

from scheduler.core.scrub import scrub_text
from scheduler.storage.run_logs import LogLine

MAX_LINES = 1_000  # per attempt
MAX_CHARS = 256_000  # per attempt
MAX_LINE_CHARS = 4_000

log = logging.getLogger("nightowl.worker")


class LogCapture:
    """The lines of one attempt, and which of them are written already."""

    def __init__(self, attempt: int, now: Callable[[], datetime]) -> None:
        self.attempt = attempt
        self._now = now
        self._lock = threading.Lock()
        self._pending: list[LogLine] = []
        self._seq = 0
        self._chars = 0
        self._dropped = 0

    def add(self, level: int, message: str) -> None:
        text = scrub_text(message).replace("\x00", "\\x00")
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + f"... ({len(text) - MAX_LINE_CHARS} characters cut)"
        with self._lock:
            if self._seq >= MAX_LINES - 1 or self._chars + len(text) > MAX_CHARS:
                self._dropped += 1
                return
            self._append(logging.getLevelName(level), text)

    def _append(self, level: str, text: str) -> None:
        self._seq += 1
        self._chars += len(text)
        self._pending.append(LogLine(self.attempt, self._seq, self._now(), level, text))

    def take(self, final: bool = False) -> list[LogLine]:
        """The lines not written yet (at the end, a last line says how many were not kept)."""
        with self._lock:
            if final and self._dropped:
                limits = f"limit {MAX_LINES} lines, {MAX_CHARS} characters per attempt"
                self._append("WARNING", f"... {self._dropped} more line(s) not kept ({limits})")
                self._dropped = 0
            out, self._pending = self._pending, []
            return out

    def put_back(self, lines: list[LogLine]) -> None:
        """Lines whose write failed: tried again with the next batch."""
        with self._lock:
            self._pending[:0] = lines


class CapturingAdapter(logging.LoggerAdapter[logging.Logger]):
    """`ctx.log`: logs like the run's adapter, and keeps what the agent said."""

    def __init__(self, plain: logging.LoggerAdapter[logging.Logger], capture: LogCapture) -> None:
        super().__init__(plain.logger, plain.extra)
        self.plain = plain  # the executor's own lines about the run go here, not captured
        self.capture = capture

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.INFO:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = f"{msg} {args}"
            self.capture.add(level, text)
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return self.plain.process(msg, kwargs)


def flush(store: Any, run_id: str, capture: LogCapture, *, final: bool = False) -> None:
    """Write the attempt's new lines; on a database error keep them for the next try (the
    last try's failure loses them, and says so once)."""
    lines = capture.take(final)
    if not lines:
        return
    try:
        store.record_logs(run_id, lines)
    except Exception as exc:
        if final:
            log.warning("run %s: %d log line(s) not stored (%s)", run_id, len(lines), type(exc).__name__)
        else:
            capture.put_back(lines)
