"""`queue_depth(...)`: wake an agent when a queue backs up, and (optionally) when it drains.

Why not just LLEN: kombu's Redis transport keeps one list per priority
(`<queue>` for priority 0, `<queue>\\x06\\x16<n>` for the others) and moves a
message to the `unacked` hash while a worker holds it, so LLEN of the bare
name misses both prioritised and in-flight work. The depth here sums every
priority list; `unacked` (messages reserved by workers for this queue) and
`oldest_age_s` (from the published-at header nightowl stamps on its own
messages) are reported beside it where they can be read.

Sources: a Celery queue on a Redis broker or a RabbitMQ broker (passive
declare: the message count), any Redis list (`redis_list(key)`), or any
callable returning a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Never

from pydantic import SecretStr

from agents import AgentSpec, Event, QueueDepth
from agents.location import caller_location
from agents.options import as_timedelta
from triggers._alerting import AlertTrigger, Bounds, Policy, bounds_from
from triggers._common import check_common, collects, fail, field_check, reject_unknown, source_check
from triggers._metric import alert_policy_from, callable_label
from triggers.abc import Overlap, TriggerSpec, declare
from triggers.sources import (
    Reading,
    SourceDefaults,
    SourceError,
    celery_redis_reading,
    check_number,
    poll_interval,
    rabbitmq_reading,
    redis_for,
    secret_url,
    shown_url,
)


class RedisList:
    """Any Redis list: `queue_depth(redis_list("jobs:pending"), ...)`."""

    def __init__(self, key: str, redis_url: SecretStr | None) -> None:
        self.key = key
        self.redis_url = redis_url

    def name(self) -> str:
        return self.key


def redis_list(key: str, *, redis_url: str | SecretStr | None = None) -> RedisList:
    """Watch the length of any Redis list (default Redis: nightowl's broker)."""
    call = f"redis_list({key!r:.60})"
    if not isinstance(key, str) or not key:
        source_check(
            call,
            "key",
            "name the Redis list, e.g. 'jobs:pending'",
            lambda: _raise(f"got {key!r:.60}, not a non-empty string"),
        )
    return RedisList(
        key,
        source_check(call, "redis_url", "pass a redis:// URL", lambda: secret_url(redis_url, "redis_url")),
    )


def _raise(message: str) -> None:
    raise ValueError(message)


class QueueDepthTrigger(AlertTrigger):
    kind = "queue_depth"

    def __init__(
        self,
        queue: str | RedisList | Callable[[], Any],
        *,
        broker_url: SecretStr | None,
        key_prefix: str | None,
        bounds: Bounds,
        policy: Policy,
        every: timedelta,
        timeout: timedelta,
    ) -> None:
        super().__init__(bounds, policy, every, timeout)
        self.queue = queue
        self.broker_url = broker_url
        self.key_prefix = key_prefix
        self.guarded = not isinstance(queue, str | RedisList)

    @property
    def queue_name(self) -> str:
        if isinstance(self.queue, str):
            return self.queue
        if isinstance(self.queue, RedisList):
            return self.queue.key
        return callable_label(self.queue)

    def source_fingerprint(self) -> str:
        kind = (
            "celery"
            if isinstance(self.queue, str)
            else "list"
            if isinstance(self.queue, RedisList)
            else "callable"
        )
        return f"{kind}:{self.key_prefix or ''}{self.queue_name}"

    def secrets(self) -> tuple[SecretStr | None, ...]:
        extra = self.queue.redis_url if isinstance(self.queue, RedisList) else None
        return (self.broker_url, extra)

    def describe(self) -> dict[str, Any]:
        if isinstance(self.queue, RedisList):
            source = {
                "source": "redis_list",
                "key": self.queue.key,
                "redis_url": shown_url(self.queue.redis_url, "(nightowl's broker)"),
            }
        elif isinstance(self.queue, str):
            source = {
                "source": "celery",
                "queue": self.queue,
                "key_prefix": self.prefix(),
                "broker_url": shown_url(self.broker_url, "(nightowl's broker)"),
            }
        else:
            source = {"source": "callable", "callable": self.queue_name}
        return {**source, **self.describe_policy()}

    def prefix(self) -> str:
        """The key prefix of the watched queues: as given; else "" on a broker named with
        broker_url=, and nightowl's own prefix (NIGHTOWL_REDIS_PREFIX) on nightowl's broker,
        which is where its own queues live."""
        if self.key_prefix is not None:
            return self.key_prefix
        return "" if self.broker_url is not None else self.defaults.broker_prefix

    def _broker(self, defaults: SourceDefaults) -> str:
        if self.broker_url is not None:
            return self.broker_url.get_secret_value()
        if defaults.broker_url:
            return defaults.broker_url
        raise SourceError("no broker: pass broker_url= to queue_depth or set NIGHTOWL_BROKER_URL")

    def read(self, now: datetime) -> Reading:
        if isinstance(self.queue, RedisList):
            url = (
                self.queue.redis_url.get_secret_value()
                if self.queue.redis_url
                else self._broker(self.defaults)
            )
            depth = int(redis_for(url).llen(self.queue.key))
            return Reading(float(depth), {"depth": depth, "unacked": None, "oldest_age_s": None})
        if not isinstance(self.queue, str):
            value = check_number(self.queue(), self.queue_name)
            if value is None or not math.isfinite(value):
                raise SourceError(f"{self.queue_name} returned {value}, not a depth (a finite number)")
            return Reading(value, {"depth": int(value), "unacked": None, "oldest_age_s": None})
        url = self._broker(self.defaults)
        scheme = url.split("://", 1)[0]
        if scheme in ("redis", "rediss", "valkey"):
            return celery_redis_reading(
                redis_for(url.replace("valkey://", "redis://", 1)), self.queue, self.prefix(), now
            )
        if scheme in ("amqp", "amqps", "pyamqp"):
            return rabbitmq_reading(url, self.queue)
        raise SourceError(
            f"broker scheme {scheme!r} is not supported; use Redis or RabbitMQ, or pass a callable"
        )

    @staticmethod
    def depth_of(state: dict[str, Any] | None) -> int | None:
        """The depth the last successful poll read, from this kind's state (for /metrics)."""
        reading = (state or {}).get("last_reading")
        depth = reading.get("depth") if isinstance(reading, dict) else None
        return int(depth) if isinstance(depth, int | float) else None

    def event(self, name: str, state: str, since: datetime, reading: Reading) -> Event:
        extra = reading.extra
        return QueueDepth(
            queue=self.queue_name,
            depth=int(extra.get("depth", reading.value or 0)),
            unacked=extra.get("unacked"),
            oldest_age_s=extra.get("oldest_age_s"),
            threshold=self.bounds.threshold,
            state=state,
            since=since,
        )


_OPTIONS = (
    "broker_url",
    "key_prefix",
    "above",
    "clear_below",
    "for_",
    "every",
    "cooldown",
    "on_resolve",
    "overlap",
    "timeout",
)


@collects
def queue_depth(
    queue: str | RedisList | Callable[[], Any],
    *,
    agent: AgentSpec | str,
    name: str,
    above: float,
    clear_below: float | None = None,
    broker_url: str | SecretStr | None = None,
    key_prefix: str | None = None,
    for_: timedelta | float = 0,
    every: timedelta | float = timedelta(seconds=10),
    cooldown: timedelta | float = timedelta(minutes=5),
    on_resolve: bool = False,
    overlap: Overlap = "skip",
    timeout: timedelta | float = timedelta(seconds=10),
    **unknown: Never,  # mypy rejects an unknown option; at run time it gets "did you mean"
) -> TriggerSpec:
    """Run `agent` when `queue` holds more than `above` messages for `for_`."""
    location = caller_location()
    call = f"queue_depth({getattr(queue, 'key', queue)!r}, name={name!r})"
    reject_unknown(location, call, unknown, ("queue", "agent", "name", *_OPTIONS))
    trigger_name, agent_ref, policy = check_common(location, call, name, agent, overlap)
    if not (isinstance(queue, str | RedisList) or callable(queue)) or queue == "":
        raise fail(
            location,
            call,
            "queue",
            f"got {queue!r}",
            "name a Celery queue, or pass redis_list('key') or a function returning a depth",
        )
    bounds = field_check(
        location,
        call,
        "above",
        "pass above= (and clear_below <= above)",
        lambda: bounds_from(above, None, clear_below, None),
    )
    alert_policy = alert_policy_from(location, call, for_, cooldown, on_resolve)
    interval = field_check(location, call, "every", "pass a positive timedelta", lambda: poll_interval(every))
    limit = field_check(
        location,
        call,
        "timeout",
        "pass a positive timedelta",
        lambda: as_timedelta(timeout, "timeout", allow_zero=False),
    )
    url = field_check(
        location,
        call,
        "broker_url",
        "pass a redis:// or amqp:// URL",
        lambda: secret_url(broker_url, "broker_url"),
    )
    if key_prefix is not None and not isinstance(key_prefix, str):
        raise fail(location, call, "key_prefix", f"got {key_prefix!r}", "pass a string such as 'myapp:'")
    trigger = QueueDepthTrigger(
        queue,
        broker_url=url,
        key_prefix=key_prefix,
        bounds=bounds,
        policy=alert_policy,
        every=interval,
        timeout=limit,
    )
    return declare(TriggerSpec(trigger_name, agent_ref, policy, location, trigger))
