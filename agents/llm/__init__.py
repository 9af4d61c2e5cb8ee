"""`agents.llm`: an LLM provider treated as the unreliable upstream it is.

A chat client for OpenAI-compatible HTTP APIs (`LLM`) and a scripted twin for tests and
the offline demo (`ScriptedLLM`), both `ChatClient`s:

    llm = llm_from_env(ScriptedLLM(["a summary"]), model="gpt-4o-mini")
    answer = llm.complete(ctx, "Summarise: ...", step="summarise")
    triage = llm.structured(ctx, prompt, Triage, step="classify")

What a call does for you:

- Inside a run it is one durable step (`ctx.step`), so a retried or redelivered run
  replays the answer it already paid for instead of asking (and paying) again.
- Timeouts (connect, read, first streamed token) and retries with capped, jittered
  exponential backoff on 429, 5xx, timeouts, refused connections and cut streams,
  waiting at least the provider's `Retry-After`; then the next endpoint of the chain.
- The provider's circuit breaker (`ctx.breaker`) is asked before each request and told of
  each outage and success; an open breaker raises `agents.ProviderUnavailable`, which the
  worker turns into a deferral rather than a failure.
- A 200 OK is not a success until it is a chat completion and, with `schema=`, JSON that
  validates against the pydantic model (after at most `max_repairs` repair turns).
- Streamed content chunks are progress heartbeats; keep-alive comments are not.
- Usage goes to `ctx.usage` as it arrives, priced by `prices=` over the default table.

`NIGHTOWL_LLM_BASE_URL`, `NIGHTOWL_LLM_API_KEY` (a secret: never logged) and
`NIGHTOWL_LLM_MODEL` configure `LLM.from_env()` and `llm_from_env()`.
"""

from agents.llm._client import LLM, llm_from_env
from agents.llm._errors import (
    LLMError,
    LLMOutputInvalid,
    LLMRequestError,
    LLMResponseError,
    LLMTransientError,
    LLMUnavailable,
)
from agents.llm._prices import DEFAULT_PRICES, Price
from agents.llm._scripted import Failure, ScriptedLLM, ScriptExhausted
from agents.llm._types import ChatClient, Completion, Endpoint, Message, TokenUsage

__all__ = [
    "DEFAULT_PRICES",
    "LLM",
    "ChatClient",
    "Completion",
    "Endpoint",
    "Failure",
    "LLMError",
    "LLMOutputInvalid",
    "LLMRequestError",
    "LLMResponseError",
    "LLMTransientError",
    "LLMUnavailable",
    "Message",
    "Price",
    "ScriptExhausted",
    "ScriptedLLM",
    "TokenUsage",
    "llm_from_env",
]
