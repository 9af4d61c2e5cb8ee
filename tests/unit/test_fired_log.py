"""The scheduler's firing log: one INFO line per tick however many runs it fired."""

from __future__ import annotations

import logging

import pytest

from scheduler.dispatch.loop import log_fired


def test_a_burst_is_one_info_line_and_each_run_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    fired = [(f"t{i}", f"r{i}") for i in range(10_000)]
    with caplog.at_level(logging.INFO, logger="nightowl.scheduler"):
        log_fired(fired)
    (line,) = caplog.records
    assert line.getMessage().startswith("fired t0 -> run r0, t1 -> run r1")
    assert "and 9995 more (10000 runs this tick)" in line.getMessage()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="nightowl.scheduler"):
        log_fired(fired[:2])
    assert [r.levelname for r in caplog.records] == ["INFO", "DEBUG", "DEBUG"]
    assert caplog.records[0].getMessage() == "fired t0 -> run r0, t1 -> run r1"
