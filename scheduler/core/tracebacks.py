"""An agent's failure as the person on call needs to read it: the agent's own frames first
(file:line, function, the source line), then the full traceback, scrubbed of secrets and
bounded in size so a recursion error cannot fill the attempts table.

"The agent's own" frames are those outside nightowl (scheduler/, agents/, triggers/), the
standard library and installed packages: the code the user wrote, which is where the fix
usually is. An exception raised inside a library (httpx, sqlalchemy) still shows the
user's frame that called it.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path

from scheduler.core.scrub import scrub_text

MAX_TRACEBACK_CHARS = 16_000
_HEAD = 4_000  # a cut traceback keeps its start (the agent's frames) and its end (the raise)

# Directory prefixes, each ending in the separator: `/srv/app/agents2/x.py` is the user's
# even though it starts with the text of nightowl's `/srv/app/agents`.
_NIGHTOWL = tuple(
    str(Path(__file__).resolve().parents[2] / p) + os.sep for p in ("scheduler", "agents", "triggers")
)
_LIBRARY = tuple(
    {
        str(Path(p).resolve()) + os.sep
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_path(k))
    }
)


def is_agent_frame(filename: str) -> bool:
    """A frame of the user's code (not nightowl's, the standard library's or a package's)."""
    if filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    return not path.startswith(_NIGHTOWL) and not path.startswith(_LIBRARY)


def agent_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [f for f in traceback.extract_tb(exc.__traceback__) if is_agent_frame(f.filename)]


def format_failure(exc: BaseException) -> str:
    """`Type: message`, the agent's frames (innermost last), then the whole traceback;
    scrubbed, NUL-free (PostgreSQL's text refuses it) and at most MAX_TRACEBACK_CHARS."""
    head = [f"{type(exc).__name__}: {exc}"]
    for frame in agent_frames(exc):
        head.append(f"  at {frame.filename}:{frame.lineno} in {frame.name}")
        if frame.line:
            head.append(f"       {frame.line.strip()}")
    full = "".join(traceback.format_exception(exc))
    text = scrub_text("\n".join(head) + "\n\n" + full).replace("\x00", "\\x00")
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    cut = len(text) - MAX_TRACEBACK_CHARS
    tail = MAX_TRACEBACK_CHARS - _HEAD
    return f"{text[:_HEAD]}\n... ({cut} characters cut) ...\n{text[-tail:]}"
