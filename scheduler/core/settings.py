"""Settings: the one place nightowl reads its environment (prefix `NIGHTOWL_`).

`./.nightowl/env`, written by `nightowl dev`, is read as a dotenv file so
any command run in that directory sees the same database and Redis; real
environment variables win over it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agents import BreakerPolicy
from scheduler.core import scrub
from scheduler.core.errors import ConfigError
from triggers.urls import SourceDefaults, mask_url

DEV_DIR = Path(".nightowl")
DEV_ENV_FILE = DEV_DIR / "env"


def _seconds(value: Any) -> Any:
    """A duration from the environment: seconds (`NIGHTOWL_LEADER_TTL=3`, `0.5`), or ISO 8601
    (`PT2M`), which pydantic parses itself."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except (ValueError, OverflowError):
            return value  # not a number: pydantic's own parsing, and its error, apply
    return value


# Durations are seconds in the environment (`_s` would be redundant in env names) and
# `timedelta` in code, so seconds and milliseconds are never mixed up in between.
Seconds = Annotated[timedelta, BeforeValidator(_seconds)]


class Settings(BaseSettings):
    """Every knob, typed. Durations are `timedelta`, given in seconds (`Seconds`)."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTOWL_",
        env_file=str(DEV_ENV_FILE),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    broker_url: SecretStr | None = None
    triggers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_prefix: str = "nightowl:"

    heartbeat_interval: Seconds = Field(timedelta(seconds=5), gt=timedelta(0))
    watchdog_interval: Seconds = Field(timedelta(seconds=2), gt=timedelta(0))
    sweep_interval: Seconds = Field(timedelta(seconds=2), gt=timedelta(0))
    tick_interval: Seconds = Field(timedelta(seconds=0.5), gt=timedelta(0))
    leader_ttl: Seconds = Field(timedelta(seconds=10), gt=timedelta(0))
    claim_ttl: Seconds = Field(timedelta(seconds=30), gt=timedelta(0))
    pending_grace: Seconds = Field(timedelta(seconds=5), ge=timedelta(0))
    visibility_timeout: Seconds = Field(timedelta(seconds=7200), gt=timedelta(0))
    # A `queued` run whose message is gone from the broker (a worker died holding it, a
    # delivery failed before its attempt, Redis lost data) is published again once it has
    # been missing this long; the sweeper looks twice per period. Independent of
    # visibility_timeout.
    requeue_lost_after: Seconds = Field(timedelta(seconds=15), gt=timedelta(0))
    # A run `queued` this long with no message in the broker raises `run_stuck`.
    stuck_after: Seconds = Field(timedelta(seconds=120), gt=timedelta(0))
    # The largest outbox value `ctx.outbox.put` accepts, JSON-encoded.
    outbox_max_value_bytes: int = Field(256 * 1024, gt=0)
    # The largest result one `ctx.step` may record, JSON-encoded (a replay hands it back).
    step_max_bytes: int = Field(256 * 1024, gt=0)
    retention: timedelta = timedelta(days=30)
    # The reminder interval of a still-firing alert.
    alert_repeat: Seconds = Field(timedelta(seconds=3600), gt=timedelta(0))
    # On SIGTERM a worker stops taking work and gives running agents this long to finish;
    # the rest go back to the queue (Celery's soft shutdown).
    shutdown_grace: Seconds = Field(timedelta(seconds=30), ge=timedelta(0))
    # Services wait this long for the database and Redis at start.
    startup_timeout: Seconds = Field(timedelta(seconds=30), ge=timedelta(0))
    # The fleet's circuit breaker per LLM provider: this many transient failures within
    # breaker_window open it for breaker_open_for, then one probe call may close it.
    breaker_failures: int = Field(5, ge=1)
    breaker_window: Seconds = Field(timedelta(seconds=60), gt=timedelta(0))
    breaker_open_for: Seconds = Field(timedelta(seconds=30), gt=timedelta(0))

    # Secrets: apprise URLs carry tokens, a Slack-style hook URL carries its token in the path.
    alert_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    alert_webhook_url: SecretStr | None = None
    alert_webhook_secret: SecretStr | None = None
    flower_basic_auth: SecretStr | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("triggers", mode="before")
    @classmethod
    def _split_triggers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("alert_urls", mode="before")
    @classmethod
    def _split_alert_urls(cls, value: Any) -> Any:
        # apprise URLs may contain commas, so: a JSON array, or whitespace-separated.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                parsed = json.loads(text)
                if not isinstance(parsed, list):
                    raise ValueError("NIGHTOWL_ALERT_URLS: a JSON value must be an array")
                return [str(u) for u in parsed]
            return text.split()
        return value

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        # Every process and command loads its Settings before it logs or stores anything,
        # so from here on the one scrubber knows each secret-bearing value.
        scrub.register_settings(self)
        return self

    # -- resolved values -------------------------------------------------

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError(
                "NIGHTOWL_DATABASE_URL is not set. Fix: export it (e.g. "
                "postgresql://user@host/db) or run `nightowl dev` for the embedded default"
            )
        return self.database_url.get_secret_value()

    def require_redis_url(self) -> str:
        if self.redis_url is None:
            raise ConfigError(
                "NIGHTOWL_REDIS_URL is not set. Fix: export it (e.g. redis://127.0.0.1:6379/0) "
                "or run `nightowl dev` for the embedded default"
            )
        return self.redis_url.get_secret_value()

    def require_broker_url(self) -> str:
        """The broker defaults to the Redis URL, as DESIGN.md says."""
        if self.broker_url is not None:
            return self.broker_url.get_secret_value()
        return self.require_redis_url()

    def breaker_policy(self) -> BreakerPolicy:
        """The policy every worker's breaker and the watchdog's reading of it share."""
        return BreakerPolicy(
            failures=self.breaker_failures,
            window_s=self.breaker_window.total_seconds(),
            open_for_s=self.breaker_open_for.total_seconds(),
        )

    def source_defaults(self) -> SourceDefaults:
        """What a polling trigger watches when it names no database or broker of its own."""
        broker = self.broker_url or self.redis_url
        return SourceDefaults(
            database_url=self.database_url.get_secret_value() if self.database_url else None,
            broker_url=broker.get_secret_value() if broker else None,
            broker_prefix=self.redis_prefix,
        )

    def describe(self) -> dict[str, str]:
        """URLs masked, for start-up banners and `status`."""
        out: dict[str, str] = {}
        for key in ("database_url", "redis_url", "broker_url"):
            value: SecretStr | None = getattr(self, key)
            if key == "broker_url" and value is None and self.redis_url is not None:
                out[key] = mask_url(self.redis_url.get_secret_value()) + " (from redis_url)"
            else:
                out[key] = mask_url(value.get_secret_value()) if value else "(unset)"
        return out
