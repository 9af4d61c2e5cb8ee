"""tests/fakellm.py itself: its control API (what a test uses to script a FakeLLM in another
process), per-model queues, and the wire it speaks, read with plain httpx rather than with
the client under test."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fakellm import FakeLLM, FakeLLMControl, answer, rate_limited, server_error


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def chat(url: str, model: str = "m", *, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return httpx.post(f"{url}/chat/completions", json=body, timeout=5)


def test_the_control_api_scripts_and_counts(fake: FakeLLM) -> None:
    control = FakeLLMControl(fake.url)
    control.enqueue(rate_limited(7), server_error(503))
    control.enqueue(answer("for b"), model="b")
    control.set_default(answer("default"))
    first = chat(fake.url, "a")
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert chat(fake.url, "b").json()["choices"][0]["message"]["content"] == "for b"  # its own queue first
    assert chat(fake.url, "a").status_code == 503
    assert chat(fake.url, "a").json()["choices"][0]["message"]["content"] == "default"
    assert (control.count(), control.count("a"), control.count("b")) == (4, 3, 1)
    calls = control.calls()
    assert [c["behaviour"] for c in calls["calls"]] == ["status", "answer", "status", "answer"]
    control.reset()
    assert control.count() == 0 and chat(fake.url).json()["choices"][0]["message"]["content"] == "ok"


def test_a_stream_is_server_sent_events_with_a_usage_chunk_and_done(fake: FakeLLM) -> None:
    fake.enqueue(answer("abcdef", chunks=3, ping_every_s=0.01, delay_s=0.03))
    response = chat(fake.url, stream=True)
    assert response.headers["content-type"] == "text/event-stream"
    events = [line for line in response.text.split("\n") if line]
    assert ": ping" in events and events[-1] == "data: [DONE]"
    data = [json.loads(e.removeprefix("data: ")) for e in events if e.startswith("data: {")]
    contents = [c["choices"][0]["delta"].get("content") for c in data if c["choices"]]
    assert contents == ["", "ab", "cd", "ef", None]
    assert data[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_unknown_routes_are_404(fake: FakeLLM) -> None:
    assert httpx.get(f"{fake.url}/models", timeout=5).status_code == 404
