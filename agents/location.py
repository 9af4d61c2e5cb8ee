"""Find the user's `file.py:line` for a declaration, so errors point at their code."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_OUR_PACKAGES = ("agents", "triggers", "scheduler")


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where a trigger or agent was declared in a user's module."""

    file: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{_short(self.file)}:{self.line}"


def _short(path: str) -> str:
    """Relative to the working directory when inside it: shorter, still clickable."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def caller_location() -> SourceLocation:
    """The first stack frame outside nightowl's own packages."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        top = module.split(".", 1)[0]
        if top not in _OUR_PACKAGES:
            return SourceLocation(frame.f_code.co_filename, frame.f_lineno, module)
        back = frame.f_back
        if back is None:
            return SourceLocation(frame.f_code.co_filename, frame.f_lineno, module)
        frame = back
    raise RuntimeError("no caller frame")  # pragma: no cover - a frame always exists
