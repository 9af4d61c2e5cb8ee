"""`python -m tests.faults.shifted_clock <nightowl args>`: nightowl with a clock that jumps.

The real `nightowl` CLI, with one change made before it starts: `SystemClock.now()` (the
one clock nightowl's logic reads) runs `offset` seconds ahead, and each SIGUSR1 moves it
forward by NIGHTOWL_FAULT_JUMP seconds (default an hour), as a host whose clock is stepped
by NTP. The monotonic clock does not jump (NTP steps do not move it either).

Debian's `faketime` cannot do this for Python 3.11: with FAKETIME_DONT_FAKE_MONOTONIC,
`time.sleep` fails with EINVAL, and with a faked monotonic clock every `Event.wait` hangs.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from types import FrameType

from scheduler.core import clock

_offset = timedelta(0)
_jump = timedelta(seconds=float(os.environ.get("NIGHTOWL_FAULT_JUMP", "3600")))


def _now(self: clock.SystemClock) -> datetime:
    return datetime.now(UTC) + _offset


def _on_jump(signum: int, frame: FrameType | None) -> None:
    global _offset
    _offset += _jump
    print(f"shifted_clock: the clock jumped forward {_jump}, now {datetime.now(UTC) + _offset}", flush=True)


def main() -> None:
    clock.SystemClock.now = _now  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, _on_jump)
    from scheduler.cli import main as nightowl

    sys.argv = ["nightowl", *sys.argv[1:]]
    nightowl()


if __name__ == "__main__":
    main()
