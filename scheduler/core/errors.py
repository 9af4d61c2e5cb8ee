"""Exceptions of the scheduler package; all derive from `agents.NightowlError`."""

from __future__ import annotations

from agents import NightowlError


class SchedulerError(NightowlError):
    """Base for errors of the running system (storage, broker, services, CLI)."""


class ConfigError(SchedulerError):
    """Settings are missing or inconsistent; the message names the setting and the fix."""


class StorageError(SchedulerError):
    """Base for database problems."""


class RunNotFoundError(StorageError):
    """No run has the given id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}; list runs with `nightowl runs list`")


class StateConflictError(StorageError):
    """A compare-and-set on trigger state lost: another leader wrote first."""


class EmbeddedRedisError(SchedulerError):
    """The embedded Redis for `nightowl dev` could not be started."""
