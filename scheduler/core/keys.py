"""Every Redis key nightowl writes or reads, in one place.

`prefix` is NIGHTOWL_REDIS_PREFIX (Celery's `global_keyprefix` too, so two
deployments can share a Redis). Kombu's own keys are listed here because the
lost-message check and `status` read them; their names are kombu's Redis
transport's, pinned by `tests/contract/test_publish.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

# kombu's Redis transport: a queue's ready messages live in one list per priority step
# (`<queue>` for step 0, `<queue>\x06\x16<step>` otherwise); delivered-unacked messages
# in the `unacked` hash, indexed by delivery time in `unacked_index`.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def leader(prefix: str, role: str) -> str:
    """The leader lease of `scheduler` or `watchdog`."""
    return f"{prefix}leader:{role}"


def run_lease(prefix: str, run_id: str) -> str:
    """The lease a worker holds on a run while it executes it."""
    return f"{prefix}run:{run_id}"


def heartbeats_live(prefix: str) -> str:
    """ZSET run:attempt -> deadline of the next heartbeat (the watchdog's index)."""
    return f"{prefix}hb:live"


def heartbeats_progress(prefix: str) -> str:
    """HASH run:attempt -> the last heartbeat's note and details."""
    return f"{prefix}hb:progress"


def queue_list(prefix: str, queue: str) -> str:
    """The list kombu keeps a queue's priority-0 messages in (where nightowl publishes)."""
    return f"{prefix}{queue}"


def queue_lists(prefix: str, queue: str, steps: Iterable[int] = PRIORITY_STEPS) -> list[str]:
    """Every list kombu may keep a queue's ready messages in."""
    return [
        queue_list(prefix, queue) if step == 0 else f"{prefix}{queue}{PRIORITY_SEP}{step}" for step in steps
    ]


def unacked(prefix: str) -> str:
    return f"{prefix}{UNACKED}"


def unacked_index(prefix: str) -> str:
    return f"{prefix}{UNACKED_INDEX}"


# The fleet's circuit breakers (scheduler.core.breaker), one set of keys per provider.
def breaker_providers(prefix: str) -> str:
    """SET of every provider a breaker has been asked about (`status`, metrics)."""
    return f"{prefix}breaker:providers"


def breaker_state(prefix: str, provider: str) -> str:
    """HASH `opened_at` (last (re)opening) and `since` (the episode's first opening, ms):
    absent while the breaker is closed."""
    return f"{prefix}breaker:{provider}:state"


def breaker_failures(prefix: str, provider: str) -> str:
    """ZSET of transient failures (member: a random id, score: when) within the window."""
    return f"{prefix}breaker:{provider}:failures"


def breaker_probe(prefix: str, provider: str) -> str:
    """The half-open probe's slot (SET NX PX probe_timeout): who holds it calls the provider."""
    return f"{prefix}breaker:{provider}:probe"


def breaker_episodes(prefix: str, provider: str) -> str:
    """HASH opened-at ms -> closed-at ms ("" while open): one record per opening (the
    watchdog's provider_unavailable alerts)."""
    return f"{prefix}breaker:{provider}:episodes"


def agent_providers(prefix: str, agent: str) -> str:
    """SET of the providers an agent's calls have gone to (`agents list`)."""
    return f"{prefix}agent:{agent}:providers"


def spend(prefix: str, agent: str, window_start: int) -> str:
    """HASH `tokens`, `cost_usd`: an agent's spend in the SpendCap window starting at
    `window_start` (Unix seconds)."""
    return f"{prefix}spend:{agent}:{window_start}"


def workers(prefix: str) -> str:
    """HASH hostname -> JSON {seen_ms, pid, queues}: each worker's presence, rewritten every
    few seconds by the worker itself (scheduler/core/presence.py), so `status` lists the
    live workers without a broadcast ping that always waits out its timeout."""
    return f"{prefix}workers"
