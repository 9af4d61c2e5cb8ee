"""`ScriptedLLM`: deterministic answers and failures, for tests and the offline demo.

It is `LLM` with another transport: each request takes the next item of the script, and
the answer goes through the same wire parser, retries, breaker, schema checks, durable
step and usage as an HTTP answer would. A scripted failure is raised exactly as the HTTP
transport raises the real one, so an agent tested against `Failure.server_error()` meets
what it would meet in production.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from pydantic import BaseModel

from agents._errors import NonRetryable
from agents.llm._call import Send
from agents.llm._core import ChatCore
from agents.llm._errors import LLMError, LLMTransientError
from agents.llm._prices import Price, PriceTable
from agents.llm._types import Endpoint
from agents.llm._wire import Reply, StreamReader, estimate_tokens, parse_reply, status_failure

ScriptedKind = Literal[
    "server_error", "rate_limited", "timeout", "connect", "cut", "first_token", "malformed", "request_error"
]


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure in a script, raised as the HTTP client would see it."""

    kind: ScriptedKind
    status: int | None = None
    retry_after: float | None = None

    @classmethod
    def server_error(cls, status: int = 500, retry_after: float | None = None) -> Failure:
        """A 5xx (an outage: the breaker counts it); `retry_after` is honoured on a 503."""
        return cls("server_error", status, retry_after)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1.0) -> Failure:
        """A 429 with `Retry-After` (not an outage)."""
        return cls("rate_limited", 429, retry_after)

    @classmethod
    def timeout(cls) -> Failure:
        """The read timeout passed."""
        return cls("timeout")

    @classmethod
    def connect_error(cls) -> Failure:
        """The connection was refused."""
        return cls("connect")

    @classmethod
    def cut(cls) -> Failure:
        """The answer stopped mid-way (a stream without its final chunk)."""
        return cls("cut")

    @classmethod
    def first_token(cls) -> Failure:
        """A stream sent no content within the first-token deadline."""
        return cls("first_token")

    @classmethod
    def malformed(cls) -> Failure:
        """A 200 whose body is not a chat completion (retried, not counted by the breaker)."""
        return cls("malformed")

    @classmethod
    def request_error(cls, status: int = 400) -> Failure:
        """A 4xx: the request is wrong (not retried)."""
        return cls("request_error", status)

    @staticmethod
    def off_schema(content: Mapping[str, Any] | None = None) -> str:
        """A well-formed answer whose content does not fit the caller's schema."""
        return json.dumps(dict(content) if content is not None else {"unexpected": True})

    def raise_as(self, provider: str) -> NoReturn:
        """Raise what the HTTP transport raises for this failure."""
        detail = f"scripted {self.kind}"
        if self.kind in {"server_error", "rate_limited", "request_error"}:
            after = None if self.retry_after is None else str(self.retry_after)
            raise status_failure(provider, self.status or 500, after, detail)
        if self.kind == "malformed":
            parse_reply(provider, "{not a chat completion")
        if self.kind == "cut":
            StreamReader(provider).reply()
        kind: Literal["timeout", "connect", "first_token"] = self.kind  # type: ignore[assignment]
        raise LLMTransientError(provider, kind, detail)


ScriptItem = str | Mapping[str, Any] | BaseModel | Failure | Callable[[list[dict[str, Any]]], Any]


class ScriptExhausted(LLMError, NonRetryable):
    """The script ran out and there is no `default`: the test sent more requests than it
    scripted (retries and repair turns are requests too)."""


def _content(item: Any, messages: list[dict[str, Any]], provider: str) -> str:
    if isinstance(item, Failure):
        item.raise_as(provider)
    if callable(item) and not isinstance(item, BaseModel):
        item = item(messages)
        if isinstance(item, Failure):  # an answer that depends on the prompt, or on the time
            item.raise_as(provider)
    if isinstance(item, str):
        return item
    if isinstance(item, BaseModel):
        return item.model_dump_json()
    if isinstance(item, Mapping):
        return json.dumps(dict(item))
    raise TypeError(f"a script item must give a str, a dict or a pydantic model, got {item!r}")


def _chunks(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ScriptedTransport:
    """Answers from a script, in the order requests arrive (thread-safe)."""

    def __init__(self, script: Sequence[ScriptItem], default: ScriptItem | None, provider: str) -> None:
        self._script: deque[ScriptItem] = deque(script)
        self._default = default
        self._provider = provider
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []

    def push(self, *items: ScriptItem) -> None:
        with self._lock:
            self._script.extend(items)

    def _next(self, body: dict[str, Any]) -> ScriptItem:
        with self._lock:
            self.calls.append(json.loads(json.dumps(body)))
            if self._script:
                return self._script.popleft()
            if self._default is not None:
                return self._default
            served = len(self.calls) - 1
        raise ScriptExhausted(f"ScriptedLLM's script is used up after {served} request(s) and has no default")

    def send(self, call: Send) -> Reply:
        messages: list[dict[str, Any]] = call.body["messages"]
        content = _content(self._next(call.body), messages, self._provider)
        prompt = estimate_tokens("".join(str(m.get("content") or "") for m in messages))
        usage = {"prompt_tokens": prompt, "completion_tokens": estimate_tokens(content)}
        model = call.body["model"]
        if not call.body.get("stream"):
            answer = {"model": model, "choices": [{"message": {"content": content}, "finish_reason": "stop"}]}
            return parse_reply(self._provider, json.dumps({**answer, "usage": usage}))
        reader = StreamReader(self._provider)
        for piece in _chunks(content):
            chunk = {"model": model, "choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            if reader.feed(f"data: {json.dumps(chunk)}"):
                call.on_content(reader.chars)
        reader.feed(f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'stop'}]})}")
        reader.feed(f"data: {json.dumps({'choices': [], 'usage': usage})}")
        reader.feed("data: [DONE]")
        return reader.reply()

    async def asend(self, call: Send) -> Reply:
        await asyncio.sleep(0)
        return self.send(call)


class ScriptedLLM(ChatCore):
    """A `ChatClient` that answers from `script`, one item per request, then `default`.

    Items: a str (the content), a dict or pydantic model (sent as JSON content), a
    `Failure`, or a callable given the request's messages that returns any of these (so a
    `default=` callable can answer every prompt, and fail while an outage is scripted).
    Tokens are counted as `len(text) // 4 + 1`; the model costs nothing unless `prices=`
    (or the default table, for a real model name) says otherwise. Backoff waits are
    recorded in `slept` rather than slept, unless `sleep=` is given; `calls` holds the
    request bodies received.
    """

    def __init__(
        self,
        script: Sequence[ScriptItem] = (),
        *,
        default: ScriptItem | None = None,
        provider: str = "scripted",
        model: str = "scripted",
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_repairs: int = 1,
        prices: Mapping[str, Price] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.slept: list[float] = []
        table = dict(prices or {})
        if PriceTable(table).price(model) is None:
            table[model] = Price(0.0, 0.0)
        self._scripted = ScriptedTransport(script, default, provider)
        super().__init__(
            [Endpoint(f"scripted://{provider}", model, provider=provider)],
            self._scripted,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_repairs=max_repairs,
            prices=PriceTable(table),
            sleep=sleep if sleep is not None else self.slept.append,
        )

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The request bodies received, in order (retries and repair turns included)."""
        return self._scripted.calls

    def push(self, *items: ScriptItem) -> None:
        """Append to the script (a demo scripting an outage after start-up)."""
        self._scripted.push(*items)
