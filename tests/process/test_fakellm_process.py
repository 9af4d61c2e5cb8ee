"""`python -m tests.fakellm --port N`: the fake provider as a process of its own, scripted from
outside through its control API, as a worker-process test uses it to inject an outage."""

from __future__ import annotations

import os
import sys

from agents.llm import LLM, Endpoint
from tests.fakellm import FakeLLMControl, server_error
from tests.helpers import ROOT, OutputProcess, free_port, wait_for


def test_the_fake_runs_as_a_process_scripted_from_outside() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = OutputProcess([sys.executable, "-m", "tests.fakellm", "--port", str(port)], env)
    try:
        wait_for(lambda: "listening on" in proc.output(), timeout=20, message="fakellm to listen")
        url = f"http://127.0.0.1:{port}/v1"
        assert url in proc.output()
        control = FakeLLMControl(url)
        # Given an outage of two 503s scripted from outside, a client rides it out.
        control.enqueue(server_error(503), server_error(503))
        slept: list[float] = []
        with LLM(Endpoint(url, "gpt-4o-mini"), sleep=slept.append) as llm:
            assert llm.complete(None, "hi").requests == 3
        assert control.count() == control.count("gpt-4o-mini") == 3 and len(slept) == 2
    finally:
        proc.stop(timeout=10)
    assert proc.proc.returncode == 0, proc.output()
