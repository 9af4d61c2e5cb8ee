"""Logging set-up: readable text by default, JSON lines with NIGHTOWL_LOG_FORMAT=json.

Run context (run_id, trigger, agent, attempt) rides on records as `extra`,
so every line from inside a run carries it in either format.

Every record is scrubbed of secrets (`scheduler.core.scrub`) when it is created, whoever
logs it (nightowl, Celery, kombu, httpx, apprise) and whichever handler prints it: the
message is rendered and scrubbed, and the traceback is rendered into `exc_text`
scrubbed, which every formatter prints as is. Uncaught exceptions (the interpreter's
and threads' hooks) are printed scrubbed too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from scheduler.core.scrub import scrub_record, scrub_text

CONTEXT_FIELDS = ("run_id", "trigger", "agent", "attempt")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_text or record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(ctx)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{k}={getattr(record, k)}" for k in CONTEXT_FIELDS if getattr(record, k, None) is not None]
        record.ctx = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


_installed = False
_install_lock = threading.Lock()


def install_scrubbing() -> None:
    """Scrub every log record of this process, and uncaught exceptions (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        make_record = logging.getLogRecordFactory()

        def scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            scrub_record(record)
            return record

        logging.setLogRecordFactory(scrubbed_record)
        sys.excepthook = _scrubbing_hook(sys.excepthook)

        def scrubbed_thread_hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is SystemExit:
                return
            text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
            name = args.thread.name if args.thread is not None else "?"
            sys.stderr.write(f"Exception in thread {name}:\n{scrub_text(text)}")

        threading.excepthook = scrubbed_thread_hook


def _scrubbing_hook(
    previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any],
) -> Callable[[type[BaseException], BaseException, TracebackType | None], None]:
    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        sys.stderr.write(scrub_text("".join(traceback.format_exception(kind, value, tb))))

    return hook


def configure_logging(fmt: str = "text", level: int | str = logging.INFO) -> None:
    install_scrubbing()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("nightowl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
