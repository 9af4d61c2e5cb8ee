"""What `nightowl dev`'s console says about a run that took more than one try."""

from __future__ import annotations

from agents import StepRecord
from scheduler.cli.dev_console import steps_line, tries_note
from scheduler.storage.models import Run


def _steps(*attempts: int) -> list[StepRecord]:
    names = ["metrics", "hypothesise", "logs", "conclude"]
    return [StepRecord(seq=i + 1, name=names[i], result=None, attempt=a) for i, a in enumerate(attempts)]


def test_the_steps_line_names_what_was_replayed_and_what_ran() -> None:
    assert steps_line(_steps(1, 1, 2, 2), attempt=2) == (
        "    steps 1-2 (metrics, hypothesise) replayed from attempt 1, not run again; "
        "3-4 (logs, conclude) ran in attempt 2"
    )
    assert steps_line(_steps(1, 2, 3), attempt=3) == (
        "    steps 1-2 (metrics, hypothesise) replayed from attempts 1, 2, not run again; "
        "3 (logs) ran in attempt 3"
    )
    assert steps_line(_steps(1, 1), attempt=3) == (
        "    steps 1-2 (metrics, hypothesise) replayed from attempt 1, not run again"
    )
    assert steps_line(_steps(2, 2), attempt=2) is None  # nothing replayed
    assert steps_line([], attempt=2) is None


def test_deferrals_are_not_counted_as_attempts() -> None:
    assert tries_note(Run(attempt=1, deferrals=0)) == ""
    assert tries_note(Run(attempt=2, deferrals=0)) == " after 2 attempts"
    assert tries_note(Run(attempt=2, deferrals=1)) == " after 1 deferral"
    assert tries_note(Run(attempt=5, deferrals=2)) == " after 3 attempts, 2 deferrals"
