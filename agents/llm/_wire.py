"""The chat-completions wire format: the request body, the plain and the streamed answer,
and what an HTTP status means. Pure functions, so the HTTP client and `ScriptedLLM` read
answers the same way and the tests can check the format without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from agents.llm._errors import LLMError, LLMRequestError, LLMResponseError, LLMTransientError
from agents.llm._types import TokenUsage


def chat_body(
    model: str,
    messages: list[dict[str, Any]],
    *,
    stream: bool,
    temperature: float | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    """The POST /chat/completions body; a stream asks for the final usage chunk."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


@dataclass(frozen=True, slots=True)
class Reply:
    """One well-formed answer: its content and, when the provider sent them, model and usage."""

    content: str
    model: str | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None


def estimate_tokens(text: str) -> int:
    """A deterministic guess at a text's tokens: about four characters each."""
    return len(text) // 4 + 1


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(value: Any) -> TokenUsage | None:
    """The `usage` object, or None when absent or not counts (then the tokens are estimated)."""
    if not isinstance(value, dict):
        return None
    prompt, completion = _count(value.get("prompt_tokens")), _count(value.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    total = _count(value.get("total_tokens"))
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion if total is None else total,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_reply(provider: str, body: str) -> Reply:
    """A plain (not streamed) answer; anything but a chat completion is `LLMResponseError`."""
    try:
        data = json.loads(body)
    except ValueError:
        raise LLMResponseError(provider, f"the answer is not JSON: {body!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise LLMResponseError(provider, f"the answer has no choices[0].message: {body!r}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise LLMResponseError(provider, f"choices[0].message.content is not text: {body!r}")
    assert isinstance(first, dict)
    return Reply(
        content or "", _text(data.get("model")), _text(first.get("finish_reason")), _usage(data.get("usage"))
    )


class StreamReader:
    """Reads a server-sent-events answer line by line.

    `feed` returns how many content characters a line added: zero for keep-alive comments
    (`: ping`), empty deltas and the usage chunk, which are not progress. A stream is whole
    once it sent `data: [DONE]` or a chunk with a `finish_reason`; one that ends before
    either was cut (`cut`), whatever the transport said.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.chars = 0
        self._parts: list[str] = []
        self._model: str | None = None
        self._finish: str | None = None
        self._usage: TokenUsage | None = None
        self._done = False

    def feed(self, line: str) -> int:
        field, _, value = line.partition(":")
        if field != "data":  # blank separators, comments (keep-alives), event:, id:, retry:
            return 0
        value = value.strip()
        if value == "[DONE]":
            self._done = True
            return 0
        try:
            chunk = json.loads(value)
        except ValueError:
            raise LLMResponseError(self.provider, f"a stream chunk is not JSON: {value!r}") from None
        if not isinstance(chunk, dict):
            raise LLMResponseError(self.provider, f"a stream chunk is not an object: {value!r}")
        if chunk.get("error") is not None:
            raise LLMTransientError(self.provider, "server_error", f"the stream carried an error: {value}")
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> int:
        self._model = _text(chunk.get("model")) or self._model
        self._usage = _usage(chunk.get("usage")) or self._usage
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            return 0
        self._finish = _text(first.get("finish_reason")) or self._finish
        delta = first.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(text, str) or not text:
            return 0
        self._parts.append(text)
        self.chars += len(text)
        return len(text)

    @property
    def started(self) -> bool:
        """True once a content chunk arrived (the first-token deadline is met)."""
        return self.chars > 0

    def reply(self) -> Reply:
        if not self._done and self._finish is None:
            raise LLMTransientError(
                self.provider,
                "cut",
                f"the stream ended after {self.chars} characters without its final chunk or [DONE]",
            )
        return Reply("".join(self._parts), self._model, self._finish, self._usage)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds from now: a number of seconds or an HTTP date; None when
    absent or unreadable (the backoff then decides alone)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_failure(provider: str, status: int, retry_after: str | None, detail: str) -> LLMError:
    """What a non-2xx status means: 429, 408 and 5xx are retried (5xx and 408 count as an
    outage, a 429 does not); every other status is a request the provider will not take."""
    if status == 429:
        wait = parse_retry_after(retry_after)
        detail = f"HTTP 429: {detail}"
        return LLMTransientError(
            provider, "rate_limited", detail, status=status, retry_after=wait, outage=False
        )
    if status == 408:
        return LLMTransientError(provider, "timeout", f"HTTP 408: {detail}", status=status)
    if status >= 500:
        wait = parse_retry_after(retry_after) if status == 503 else None
        return LLMTransientError(
            provider, "server_error", f"HTTP {status}: {detail}", status=status, retry_after=wait
        )
    return LLMRequestError(provider, status, detail)
