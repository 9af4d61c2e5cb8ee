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
