"""What can go wrong with an LLM call, sorted by what the caller should do about it.

A retry helps with a 429, a 5xx, a timeout or a garbled 200; it never helps with a 4xx
(the request is wrong). Only some of the retried failures are evidence of an outage, and
only those count towards the provider's circuit breaker: a 429 is the provider protecting
itself, and a malformed answer or an off-schema one says nothing about whether it is up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from agents._errors import AgentError, NonRetryable

FailureKind = Literal["server_error", "timeout", "connect", "rate_limited", "cut", "first_token", "malformed"]

# How much of a body or a model answer an error message quotes.
QUOTE_CHARS = 300


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class LLMError(AgentError):
    """Base of every error `agents.llm` raises."""


class LLMRequestError(LLMError, NonRetryable):
    """The provider refused the request (a 4xx other than 408 and 429): the request, the
    model name or the key is wrong, and sending it again would be refused again."""

    def __init__(self, provider: str, status: int, detail: str) -> None:
        self.provider = provider
        self.status = status
        super().__init__(f"{provider} refused the request with HTTP {status}: {quote(detail)}")


class LLMTransientError(LLMError):
    """One call failed in a way a later call may not: retried with backoff.

    `outage` says whether it is evidence that the provider is down (5xx, timeouts, refused
    connections, a cut stream), which the circuit breaker counts; `retry_after` is the
    provider's own `Retry-After`, in seconds, when it sent one.
    """

    def __init__(
        self,
        provider: str,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        outage: bool = True,
    ) -> None:
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.outage = outage
        super().__init__(f"{provider}: {kind}: {quote(detail)}")


class LLMResponseError(LLMTransientError):
    """A 2xx whose body is not a chat completion (not JSON, no `choices`, a garbled stream).

    Retried, since a proxy that garbles one answer often passes the next, but not counted
    by the breaker: the provider did answer. It is never returned as a success."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(provider, "malformed", detail, outage=False)


class LLMUnavailable(LLMError):
    """Every endpoint of the fallback chain failed after its retries (none was skipped for an
    open breaker). An ordinary, retryable error: the run's own retry policy takes over."""

    def __init__(self, failures: Sequence[LLMTransientError]) -> None:
        self.failures = list(failures)
        self.last_error = self.failures[-1] if self.failures else None
        tried = "; ".join(str(f) for f in self.failures) or "no endpoint was tried"
        super().__init__(f"no LLM endpoint answered after retries: {tried}")


class LLMOutputInvalid(LLMError):
    """The model answered, but not with what `schema=` asks for, even after the repair
    turns. Retryable by default: a new attempt samples again."""

    def __init__(self, model: str, schema: str, errors: Sequence[str], content: str, turns: int) -> None:
        self.model = model
        self.schema = schema
        self.errors = list(errors)
        self.content = content
        super().__init__(
            f"{model} answered {turns} time(s) without a valid {schema}: {'; '.join(self.errors)}; "
            f"last answer: {quote(content)!r}"
        )
