"""A failure as it is stored and shown: the agent's frames first, scrubbed, bounded; and the
exception Flower shows, named like the agent's own."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.core import tracebacks
from scheduler.core.tracebacks import MAX_TRACEBACK_CHARS, format_failure, is_agent_frame
from scheduler.core.vocabulary import Delivery
from scheduler.worker.app import AttemptFailed, agent_failure


def _deep(n: int) -> None:
    if n == 0:
        raise KeyError("postgresql://u:pw-in-a-url@db/x is missing")
    _deep(n - 1)


def test_the_agents_frames_come_first_and_nightowls_are_not_among_them() -> None:
    try:
        _deep(2)
    except KeyError as exc:
        text = format_failure(exc)
    head, _, full = text.partition("\n\n")
    assert head.splitlines()[0].startswith("KeyError: ")
    assert head.count("in _deep") == 3 and "tests/unit/test_tracebacks.py" in head
    assert full.startswith("Traceback (most recent call last)")
    assert "pw-in-a-url" not in text  # scrubbed
    assert not is_agent_frame(tracebacks.__file__)
    assert not is_agent_frame(json.__file__)
    # a user's directory whose name only starts like nightowl's package is the user's
    sibling = Path(tracebacks.__file__).resolve().parents[2] / "agents_of_mine" / "bot.py"
    assert is_agent_frame(str(sibling))


def test_a_huge_traceback_keeps_its_start_and_end() -> None:
    try:
        _deep(400)
    except KeyError as exc:
        text = format_failure(exc)
    assert len(text) <= MAX_TRACEBACK_CHARS + 100
    assert text.startswith("KeyError: ") and "characters cut" in text
    assert text.rstrip().endswith("is missing'")


def test_flower_sees_the_agents_exception_not_a_wrapper() -> None:
    exc = agent_failure("r1", Delivery.FAILED, ("ValueError", "ValueError: bad input"))
    assert isinstance(exc, AttemptFailed) and type(exc).__name__ == "ValueError"
    assert str(exc).startswith("bad input (run r1: failed;")
    assert repr(exc).startswith("ValueError('bad input")
    assert type(agent_failure("r2", Delivery.DEAD, ("ValueError", "ValueError: again"))) is type(exc)
    plain = agent_failure("r3", Delivery.POISON, None)
    assert type(plain) is AttemptFailed and "nightowl runs show r3" in str(plain)
    assert type(agent_failure("r4", Delivery.FAILED, ("Outer.<locals>.Err", "Err: x"))).__name__ == "Err"
    assert type(agent_failure("r5", Delivery.FAILED, ("9lives", "9lives: x"))).__name__ == "AttemptFailed"
