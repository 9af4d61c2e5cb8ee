"""`LLM`: the chat client for OpenAI-compatible HTTP servers (OpenAI, vLLM, Ollama, the
llama.cpp server, LiteLLM proxies), on httpx.

Timeouts, all in seconds: `connect_timeout` to open a connection; `read_timeout` for any
gap between two reads of the answer (for a stream: between two lines, keep-alive
comments included); `first_token_timeout` from sending a streamed request to its first
content chunk, checked on every line that arrives, so a server that answers with
keep-alive comments and never any content is cut at it (one silent from the start is cut
by `read_timeout`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from agents.llm._call import Send
from agents.llm._core import ChatCore
from agents.llm._errors import LLMError, LLMRequestError, LLMResponseError, LLMTransientError
from agents.llm._prices import Price, PriceTable
from agents.llm._types import ChatClient, Endpoint
from agents.llm._wire import Reply, StreamReader, parse_reply, status_failure

DEFAULT_MODEL = "gpt-4o-mini"


def _scrub(text: str, endpoint: Endpoint) -> str:
    """A server's text with the endpoint's key taken out, should it echo it back."""
    if endpoint.api_key is not None and endpoint.api_key.get_secret_value():
        return text.replace(endpoint.api_key.get_secret_value(), "***")
    return text


def _headers(endpoint: Endpoint, stream: bool) -> dict[str, str]:
    headers = {"Accept": "text/event-stream" if stream else "application/json"}
    if endpoint.api_key is not None:
        headers["Authorization"] = f"Bearer {endpoint.api_key.get_secret_value()}"
    return headers


def _transport_failure(endpoint: Endpoint, error: httpx.HTTPError) -> LLMError:
    """What an httpx error means for the call. Every one is transient; all but a full
    connection pool (ours, not the provider's) count as an outage."""
    detail = _scrub(f"{type(error).__name__}: {error}", endpoint)
    provider = endpoint.provider
    if isinstance(error, httpx.PoolTimeout):
        return LLMTransientError(provider, "timeout", detail, outage=False)
    if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError):
        return LLMTransientError(provider, "connect", detail)
    if isinstance(error, httpx.TimeoutException):
        return LLMTransientError(provider, "timeout", detail)
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        return LLMTransientError(provider, "cut", detail)
    if isinstance(error, httpx.DecodingError):
        return LLMResponseError(provider, detail)
    if isinstance(error, httpx.UnsupportedProtocol):
        return LLMRequestError(provider, 0, detail)
    return LLMTransientError(provider, "connect", detail)


def _failed_status(endpoint: Endpoint, response: httpx.Response) -> LLMError | None:
    if response.is_success:
        return None
    return status_failure(
        endpoint.provider,
        response.status_code,
        response.headers.get("Retry-After"),
        _scrub(response.text, endpoint),
    )


def _is_plain(response: httpx.Response) -> bool:
    """A server that ignored `stream: true` and answered with one JSON document."""
    return str(response.headers.get("content-type", "")).startswith("application/json")


class _FirstToken:
    """The first-token deadline of one streamed request, and the lines that count."""

    def __init__(self, call: Send, limit_s: float, clock: Callable[[], float]) -> None:
        self.reader = StreamReader(call.endpoint.provider)
        self._call = call
        self._limit_s = limit_s
        self._clock = clock
        self._deadline = clock() + limit_s

    def line(self, line: str) -> None:
        if self.reader.feed(line):
            self._call.on_content(self.reader.chars)
        elif not self.reader.started and self._clock() > self._deadline:
            raise LLMTransientError(
                self._call.endpoint.provider,
                "first_token",
                f"no content within the first-token deadline of {self._limit_s}s",
            )


class HTTPTransport:
    """Requests over httpx. A client passed in is used and left open; one made here is
    closed by `close()`. Without an async client passed in, each async call opens its own,
    since an httpx.AsyncClient belongs to the event loop it first ran on."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout,
        first_token_timeout: float,
        http: httpx.Client | None,
        ahttp: httpx.AsyncClient | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._first_token_s = first_token_timeout
        self._http = http
        self._owns_http = http is None
        self._ahttp = ahttp
        self._clock = clock
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client()
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._owns_http and self._http is not None:
                self._http.close()
                self._http = None

    def send(self, call: Send) -> Reply:
        endpoint, stream = call.endpoint, bool(call.body.get("stream"))
        headers, client = _headers(endpoint, stream), self._client()
        try:
            if not stream:
                response = client.post(
                    endpoint.chat_url, json=call.body, headers=headers, timeout=self._timeout
                )
                return self._plain(endpoint, response)
            deadline = _FirstToken(call, self._first_token_s, self._clock)
            with client.stream(
                "POST", endpoint.chat_url, json=call.body, headers=headers, timeout=self._timeout
            ) as response:
                if not response.is_success or _is_plain(response):
                    response.read()
                    return self._plain(endpoint, response)
                for line in response.iter_lines():
                    deadline.line(line)
                return deadline.reader.reply()
        except httpx.HTTPError as e:
            raise _transport_failure(endpoint, e) from e

    async def asend(self, call: Send) -> Reply:
        if self._ahttp is not None:
            return await self._asend(self._ahttp, call)
        async with httpx.AsyncClient() as client:
            return await self._asend(client, call)

    async def _asend(self, client: httpx.AsyncClient, call: Send) -> Reply:
        endpoint, stream = call.endpoint, bool(call.body.get("stream"))
        headers = _headers(endpoint, stream)
        try:
            if not stream:
                response = await client.post(
                    endpoint.chat_url, json=call.body, headers=headers, timeout=self._timeout
                )
                return self._plain(endpoint, response)
            deadline = _FirstToken(call, self._first_token_s, self._clock)
            async with client.stream(
                "POST", endpoint.chat_url, json=call.body, headers=headers, timeout=self._timeout
            ) as response:
                if not response.is_success or _is_plain(response):
                    await response.aread()
                    return self._plain(endpoint, response)
                async for line in response.aiter_lines():
                    deadline.line(line)
                return deadline.reader.reply()
        except httpx.HTTPError as e:
            raise _transport_failure(endpoint, e) from e

    def _plain(self, endpoint: Endpoint, response: httpx.Response) -> Reply:
        failure = _failed_status(endpoint, response)
        if failure is not None:
            raise failure
        return parse_reply(endpoint.provider, response.text)


def _chain(endpoints: Endpoint | Sequence[Endpoint]) -> list[Endpoint]:
    chain = [endpoints] if isinstance(endpoints, Endpoint) else list(endpoints)
    for endpoint in chain:
        if httpx.URL(endpoint.base_url).scheme not in {"http", "https"}:
            raise ValueError(f"LLM needs http(s) endpoints, got {endpoint!r}")
    return chain


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"LLM {name} must be a positive number of seconds, got {value!r}")


class LLM(ChatCore):
    """A chat client for OpenAI-compatible HTTP APIs; `endpoints` is the fallback chain,
    the first one the primary. See `agents.llm` for what a call does."""

    def __init__(
        self,
        endpoints: Endpoint | Sequence[Endpoint],
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        first_token_timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_repairs: int = 1,
        prices: Mapping[str, Price] | None = None,
        http: httpx.Client | None = None,
        ahttp: httpx.AsyncClient | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        _positive(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            first_token_timeout=first_token_timeout,
        )
        self._http_transport = HTTPTransport(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            first_token_timeout=first_token_timeout,
            http=http,
            ahttp=ahttp,
        )
        super().__init__(
            _chain(endpoints),
            self._http_transport,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_repairs=max_repairs,
            prices=PriceTable(prices),
            sleep=sleep,
        )

    @classmethod
    def from_env(
        cls,
        model: str = DEFAULT_MODEL,
        fallback: Sequence[str | Endpoint] = (),
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> LLM | None:
        """The client `NIGHTOWL_LLM_BASE_URL` (with `NIGHTOWL_LLM_API_KEY`, and
        `NIGHTOWL_LLM_MODEL` overriding `model`) points at; None when it is unset.

        A fallback given as a model name is that model on the same server and key (so it
        shares the primary's breaker); give an `Endpoint` to fall back to another provider.
        """
        env = os.environ if environ is None else environ
        base_url = env.get("NIGHTOWL_LLM_BASE_URL", "").strip()
        if not base_url:
            return None
        primary = Endpoint(
            base_url,
            env.get("NIGHTOWL_LLM_MODEL", "").strip() or model,
            env.get("NIGHTOWL_LLM_API_KEY") or None,
        )
        chain = [primary, *(f if isinstance(f, Endpoint) else primary.with_model(f) for f in fallback)]
        return cls(chain, **options)

    def close(self) -> None:
        """Close the HTTP client this LLM made (one passed in stays open)."""
        self._http_transport.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def llm_from_env(
    default: ChatClient,
    model: str = DEFAULT_MODEL,
    fallback: Sequence[str | Endpoint] = (),
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> ChatClient:
    """`LLM.from_env(...)` when `NIGHTOWL_LLM_BASE_URL` is set, else `default` (the examples
    pass a `ScriptedLLM`, so they run offline)."""
    llm = LLM.from_env(model, fallback, environ=environ, **options)
    return default if llm is None else llm
