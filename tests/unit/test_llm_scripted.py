"""`ScriptedLLM` outside a run, and the pure parts of `agents.llm`: the wire format, Retry-After,
answers checked against a schema, prices, endpoints and the client's options."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from agents import NonRetryable
from agents.llm import (
    DEFAULT_PRICES,
    LLM,
    Completion,
    Endpoint,
    Failure,
    LLMOutputInvalid,
    LLMRequestError,
    LLMResponseError,
    LLMTransientError,
    LLMUnavailable,
    Message,
    Price,
    ScriptedLLM,
    ScriptExhausted,
    TokenUsage,
)
from agents.llm._output import json_text
from agents.llm._prices import PriceTable
from agents.llm._wire import StreamReader, parse_reply, parse_retry_after, status_failure


class Ticket(BaseModel):
    label: str
    priority: int


# -- the script ---------------------------------------------------------------------------


def test_a_script_answers_in_order_then_the_default() -> None:
    seen: list[list[dict[str, Any]]] = []

    def echo(messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return f"echo: {messages[-1]['content']}"

    scripted = ScriptedLLM(["plain", {"a": 1}, Ticket(label="x", priority=1), echo], default="fallback")
    texts = [scripted.complete(None, f"q{i}").text for i in range(5)]
    assert texts == ["plain", '{"a": 1}', '{"label":"x","priority":1}', "echo: q3", "fallback"]
    assert seen == [[{"role": "user", "content": "q3"}]]
    assert [c["messages"][-1]["content"] for c in scripted.calls] == ["q0", "q1", "q2", "q3", "q4"]
    assert scripted.calls[0] == {
        "model": "scripted",
        "messages": [{"role": "user", "content": "q0"}],
        "stream": False,
    }


def test_a_callable_answer_may_be_a_failure_so_a_default_can_script_an_outage() -> None:
    down = [True]

    def answer(messages: list[dict[str, Any]]) -> str | Failure:
        return Failure.server_error(503) if down[0] else "up again"

    scripted = ScriptedLLM(default=answer, max_retries=1)
    with pytest.raises(LLMUnavailable) as caught:
        scripted.complete(None, "hi")
    assert isinstance(caught.value.last_error, LLMTransientError) and caught.value.last_error.status == 503
    down[0] = False
    assert scripted.complete(None, "hi").text == "up again" and len(scripted.calls) == 3


def test_a_used_up_script_without_a_default_says_so_and_is_not_retried() -> None:
    scripted = ScriptedLLM(["only"])
    scripted.complete(None, "a")
    with pytest.raises(ScriptExhausted, match="used up after 1 request") as caught:
        scripted.complete(None, "b")
    assert isinstance(caught.value, NonRetryable) and len(scripted.calls) == 2


def test_tokens_are_counted_deterministically_and_streams_match_plain_answers() -> None:
    scripted = ScriptedLLM(default="x" * 40)
    plain = scripted.complete(None, "y" * 8)
    streamed = scripted.complete(None, "y" * 8, stream=True)
    assert plain.usage == TokenUsage(prompt_tokens=3, completion_tokens=11, total_tokens=14)
    assert streamed.model_dump() == plain.model_dump() and not plain.usage_estimated
    assert scripted.calls[1]["stream_options"] == {"include_usage": True}


def test_messages_take_str_message_and_dict_forms() -> None:
    scripted = ScriptedLLM(default="ok")
    scripted.complete(None, [Message.system("be brief"), {"role": "user", "content": "hi", "name": "bo"}])
    assert scripted.calls[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "name": "bo"},
    ]
    with pytest.raises(ValueError, match="at least one message"):
        scripted.complete(None, [])
    with pytest.raises(ValueError, match="no role"):
        scripted.complete(None, [{"content": "x"}])


# -- scripted failures, outside a run ----------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (Failure.server_error(502), "server_error"),
        (Failure.timeout(), "timeout"),
        (Failure.connect_error(), "connect"),
        (Failure.cut(), "cut"),
        (Failure.first_token(), "first_token"),
        (Failure.rate_limited(retry_after=None), "rate_limited"),
        (Failure.malformed(), "malformed"),
    ],
)
def test_each_scripted_failure_is_the_transient_error_http_would_raise(failure: Failure, kind: str) -> None:
    scripted = ScriptedLLM(default=failure, max_retries=2)
    with pytest.raises(LLMUnavailable) as caught:
        scripted.complete(None, "hi")
    assert isinstance(caught.value.last_error, LLMTransientError)
    assert caught.value.last_error.kind == kind and len(scripted.calls) == 3 and len(scripted.slept) == 2
    assert isinstance(caught.value.last_error, LLMResponseError) is (kind == "malformed")


def test_a_scripted_request_error_is_not_retried() -> None:
    scripted = ScriptedLLM([Failure.request_error(404), "never"])
    with pytest.raises(LLMRequestError, match="HTTP 404"):
        scripted.complete(None, "hi")
    assert len(scripted.calls) == 1 and scripted.slept == []


def test_an_injected_sleep_is_used_instead_of_recording() -> None:
    slept: list[float] = []
    scripted = ScriptedLLM([Failure.server_error(503, retry_after=4.0), "ok"], sleep=slept.append)
    assert scripted.complete(None, "hi").text == "ok"
    assert scripted.slept == [] and len(slept) == 1 and 4.0 <= slept[0] <= 20.0


# -- structured answers ----------------------------------------------------------------------


def test_structured_repairs_an_off_schema_answer() -> None:
    scripted = ScriptedLLM([Failure.off_schema(), {"label": "bug", "priority": 1}])
    assert scripted.structured(None, "classify", Ticket) == Ticket(label="bug", priority=1)
    repair = scripted.calls[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"unexpected": true}'}
    assert (
        "label: Field required" in repair[-1]["content"]
        and "priority: Field required" in repair[-1]["content"]
    )


def test_the_schema_instruction_joins_a_leading_system_message() -> None:
    scripted = ScriptedLLM(default={"label": "a", "priority": 1})
    scripted.structured(None, [Message.system("You triage."), Message.user("x")], Ticket)
    messages = scripted.calls[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You triage.\n\nAnswer with only a JSON object")


def test_without_repairs_the_first_invalid_answer_is_output_invalid() -> None:
    scripted = ScriptedLLM(["not json " * 100], max_repairs=0, model="small-model")
    with pytest.raises(LLMOutputInvalid) as caught:
        scripted.structured(None, "x", Ticket)
    message = str(caught.value)
    assert "small-model answered 1 time(s) without a valid Ticket" in message and "Invalid JSON" in message
    assert "more characters" in message and len(message) < 800  # the content is quoted, cut short


def test_async_calls_answer_the_same() -> None:
    async def both() -> tuple[Completion, Ticket]:
        scripted = ScriptedLLM(["hello", '{"label": "q", "priority": 5}'])
        return await scripted.acomplete(None, "a", stream=True), await scripted.astructured(None, "b", Ticket)

    done, ticket = asyncio.run(both())
    assert done.text == "hello" and ticket == Ticket(label="q", priority=5)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('  \n{"a": 1}\n', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('Here you go:\n```\n{"a": 1}\n```\nAnything else?', '{"a": 1}'),
    ],
)
def test_json_is_taken_bare_or_from_a_fence(content: str, found: str) -> None:
    assert json_text(content) == found


# -- the wire format -------------------------------------------------------------------------


def test_parse_reply_refuses_what_is_not_a_chat_completion() -> None:
    ok = parse_reply("p", json.dumps({"model": "m", "choices": [{"message": {"content": None}}]}))
    assert ok.content == "" and ok.model == "m" and ok.usage is None
    for body in ["{not json", "[]", '{"choices": []}', '{"choices": [{"message": {"content": 3}}]}']:
        with pytest.raises(LLMResponseError):
            parse_reply("p", body)


def test_the_stream_reader_counts_content_only_and_knows_a_cut() -> None:
    reader = StreamReader("p")
    lines = [
        ": ping",
        "",
        'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}',
        'data: {"choices": [{"delta": {"content": "Hel"}}]}',
        "event: whatever",
        'data:{"choices": [{"delta": {"content": "lo"}, "finish_reason": null}]}',
    ]
    assert [reader.feed(line) for line in lines] == [0, 0, 0, 3, 0, 2]
    with pytest.raises(LLMTransientError, match="without its final chunk") as caught:
        reader.reply()
    assert caught.value.kind == "cut" and caught.value.outage
    reader.feed('data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}')
    reader.feed("data: [DONE]")
    reply = reader.reply()
    assert reply.content == "Hello" and reply.usage == TokenUsage(
        prompt_tokens=4, completion_tokens=2, total_tokens=6
    )
    with pytest.raises(LLMTransientError, match="the stream carried an error"):
        StreamReader("p").feed('data: {"error": {"message": "overloaded"}}')
    with pytest.raises(LLMResponseError):
        StreamReader("p").feed("data: {half")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0.0  # past: no wait
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_statuses_sort_into_retried_outages_retried_non_outages_and_refusals() -> None:
    def verdict(code: int, after: str | None = None) -> tuple[str, bool | None, float | None]:
        error = status_failure("p", code, after, "x")
        if isinstance(error, LLMTransientError):
            return error.kind, error.outage, error.retry_after
        assert isinstance(error, LLMRequestError)
        return "refused", None, None

    assert verdict(429, "3") == ("rate_limited", False, 3.0)
    assert verdict(503, "3") == ("server_error", True, 3.0)
    assert verdict(500, "3") == ("server_error", True, None)
    assert verdict(408) == ("timeout", True, None)
    assert [verdict(c)[0] for c in (400, 401, 403, 404, 422, 301)] == ["refused"] * 6


# -- prices ----------------------------------------------------------------------------------


def test_prices_match_dated_model_names_and_can_be_overridden() -> None:
    table = PriceTable({"gpt-4o": Price(1.0, 2.0), "my-model": Price(3.0, 0.0)})
    assert table.cost("gpt-4o-2024-08-06", 1_000_000, 1_000_000) == 3.0
    assert table.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.cost("my-model", 2_000_000, 5) == 6.0
    with pytest.raises(ValueError, match=">= 0"):
        Price(-1.0, 0.0)


def test_an_unknown_model_costs_nothing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    with caplog.at_level(logging.WARNING, logger="agents.llm"):
        assert table.cost("mystery-1", 100, 100) == 0.0
        assert table.cost("mystery-1", 100, 100) == 0.0
        assert table.cost("mystery-2", 1, 1) == 0.0
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "no price for model 'mystery-1'",
        "no price for model 'mystery-2'",
    ]


def test_a_scripted_model_is_free_unless_priced() -> None:
    assert ScriptedLLM(default="x").complete(None, "hi").cost_usd == 0.0
    priced = ScriptedLLM(default="x" * 4000, model="house", prices={"house": Price(0.0, 1000.0)})
    assert priced.complete(None, "hi").cost_usd == pytest.approx(1001 * 1000 / 1_000_000)


# -- endpoints and options -----------------------------------------------------------------------


def test_an_endpoint_names_its_provider_and_hides_its_key() -> None:
    local = Endpoint("http://127.0.0.1:8000/v1/", "llama", api_key="sk-hidden")
    assert (local.provider, local.chat_url) == ("127.0.0.1:8000", "http://127.0.0.1:8000/v1/chat/completions")
    assert isinstance(local.api_key, SecretStr) and local.api_key.get_secret_value() == "sk-hidden"
    assert Endpoint("https://api.openai.com/v1", "gpt-4o").provider == "api.openai.com"
    assert Endpoint("https://x.example/v1", "m", provider="team-proxy").provider == "team-proxy"
    tricky = Endpoint("https://user:pw-hidden@proxy.example/v1", "m", api_key=SecretStr("sk-hidden"))
    assert "hidden" not in repr(local) + repr(tricky) and "api_key=set" in repr(local)
    assert local.with_model("other").provider == local.provider
    with pytest.raises(ValueError, match="has no host"):
        Endpoint("/v1", "m")
    with pytest.raises(ValueError, match="model"):
        Endpoint("http://h/v1", "")


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_repairs": 1.5}, "max_repairs"),
        ({"backoff_base": 0}, "backoff"),
        ({"backoff_base": 5.0, "backoff_cap": 1.0}, "backoff"),
        ({"read_timeout": 0}, "read_timeout"),
    ],
)
def test_bad_options_fail_at_construction(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        LLM(Endpoint("http://127.0.0.1:1/v1", "m"), **options)


def test_an_llm_needs_http_endpoints() -> None:
    with pytest.raises(ValueError, match="http"):
        LLM(Endpoint("ftp://h/v1", "m"))
    with pytest.raises(ValueError, match="at least one"):
        LLM([])


def test_a_completion_round_trips_through_its_record() -> None:
    done = Completion(text="t", model="m", provider="p", parsed=Ticket(label="a", priority=1))
    record = json.loads(json.dumps(done.to_record()))
    assert record["parsed"] == {"label": "a", "priority": 1}
    assert Completion.from_record(record, Ticket) == done
    assert Completion.from_record(record, Ticket).parsed == Ticket(label="a", priority=1)
    assert Completion.from_record(record, None).parsed is None
