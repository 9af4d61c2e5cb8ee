"""The exception root shared by every nightowl package.

It lives in `agents` because that package imports nothing of ours: every
other package can derive its subsystem base from it without an import cycle.
"""

from __future__ import annotations


class NightowlError(Exception):
    """Root of every error nightowl raises on purpose."""


class AgentError(NightowlError):
    """Base for errors about agent definitions and agent execution."""


class AgentDefinitionError(AgentError):
    """An `@agent(...)` declaration is invalid; the message names file:line and the fix."""


class NonRetryable(AgentError):
    """Raise from an agent to end the run `failed/non_retryable` without retries."""


class ProviderUnavailable(AgentError):
    """An LLM provider's circuit breaker is open: the run is deferred, not failed.

    The worker puts the run back to `waiting` (`waiting_for=provider_unavailable`) until
    `retry_in` has passed; a deferral counts towards neither `max_attempts` nor
    `max_deliveries`, so an outage of any length never ends a run dead."""

    def __init__(self, provider: str, retry_in: float, detail: str = "") -> None:
        self.provider = provider
        self.retry_in = max(0.0, float(retry_in))
        tail = f": {detail}" if detail else ""
        super().__init__(
            f"provider {provider!r} is unavailable (circuit open){tail}; retry in {self.retry_in:.0f}s"
        )
