"""Prometheus metrics (`nightowl_*`), served by each long-running process on `--metrics-port`.

Names follow Prometheus conventions: base units (`_seconds`), `_total` for
counters. Every process registers the same set; each fills the ones its role
owns (the scheduler fires triggers, the watchdog counts stalls, the relay
reports the outbox).
"""

from __future__ import annotations

import os
import tempfile

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from scheduler.core.vocabulary import Delivery, Reason, RunStatus, WaitingFor

FIRINGS = Counter("nightowl_trigger_firings_total", "Runs created by triggers.", ["trigger", "kind"])
DUPLICATE_FIRINGS = Counter(
    "nightowl_trigger_duplicate_firings_total",
    "Firings dropped because their idempotency key already had a run.",
    ["trigger"],
)
TRIGGER_STATE = Gauge(
    "nightowl_trigger_state",
    "1 for the state each trigger is in (ok, pending, firing, source_failing).",
    ["trigger", "state"],
)
QUEUE_DEPTH = Gauge(
    "nightowl_queue_depth", "Messages waiting in a watched queue (queue_depth).", ["trigger", "queue"]
)
RUNS_FINISHED = Counter(
    "nightowl_runs_finished_total", "Runs that reached a terminal state.", ["agent", "status", "reason"]
)
RUN_DURATION = Histogram(
    "nightowl_run_duration_seconds",
    "Wall time of an attempt.",
    ["agent"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600),
)
DELIVERIES_DROPPED = Counter(
    "nightowl_deliveries_dropped_total",
    "Deliveries that did not start their run (duplicate, lease held...).",
    ["reason"],
)
STALLED = Counter(
    "nightowl_runs_stalled_total", "Attempts the watchdog ended as stalled.", ["agent", "reason"]
)
DEAD = Counter("nightowl_runs_dead_total", "Runs the watchdog marked dead.", ["agent"])
LOST_REPUBLISHED = Counter(
    "nightowl_runs_lost_republished_total", "Queued runs republished because their broker message was gone."
)
STUCK = Gauge("nightowl_runs_stuck", "Runs queued past NIGHTOWL_STUCK_AFTER with no message.")
HEARTBEAT_AGE = Gauge(
    "nightowl_heartbeat_age_seconds", "Age of the oldest liveness heartbeat among running attempts."
)
OUTBOX_ROWS = Gauge("nightowl_outbox_rows", "Outbox rows by sink and status.", ["sink", "status"])
OUTBOX_LAG = Gauge("nightowl_outbox_lag_seconds", "Age of the oldest pending outbox row.")
OUTBOX_DELIVERED = Counter("nightowl_outbox_delivered_total", "Outbox entries delivered.", ["sink"])
OUTBOX_FAILED = Counter("nightowl_outbox_failed_total", "Failed outbox deliveries.", ["sink"])
ALERTS_SENT = Counter(
    "nightowl_alerts_sent_total", "Alert sends by channel and outcome.", ["channel", "outcome"]
)
LEADER = Gauge("nightowl_leader", "1 while this process leads its role.", ["role"], multiprocess_mode="max")
# A process can serve /metrics while its loop is stuck (a hung query, a deadlock): this gauge
# stops advancing then, which `python -m scheduler.healthcheck` and alert rules look at.
LOOP_LAST_SUCCESS = Gauge(
    "nightowl_loop_last_success_timestamp_seconds",
    "Unix time at which each loop step last completed without error.",
    ["step"],
    multiprocess_mode="max",
)
PROVIDER_BREAKER_OPEN = Gauge(
    "nightowl_provider_breaker_open",
    "1 while a provider's fleet-wide circuit breaker is open or half-open, 0 while closed.",
    ["provider"],
    multiprocess_mode="max",
)
AGENT_TOKENS = Counter("nightowl_agent_tokens_total", "Tokens agents reported with ctx.usage.", ["agent"])
AGENT_COST = Counter(
    "nightowl_agent_cost_usd_total", "Cost in USD agents reported with ctx.usage.", ["agent"]
)


def record_usage(agent: str, tokens: int, cost_usd: float) -> None:
    """Count usage an agent reported (the worker calls it as usage is persisted; replayed
    steps cost nothing and are not counted)."""
    if tokens > 0:
        AGENT_TOKENS.labels(agent).inc(tokens)
    if cost_usd > 0:
        AGENT_COST.labels(agent).inc(cost_usd)


def observe_breakers(open_by_provider: dict[str, bool]) -> None:
    """Set the breaker gauge from one reading of the fleet's breakers (the watchdog's check)."""
    for provider, is_open in open_by_provider.items():
        PROVIDER_BREAKER_OPEN.labels(provider).set(1 if is_open else 0)


# Outcomes of a delivery that ran the agent to a verdict, and those that did not start it.
_FINISHED: dict[Delivery, tuple[RunStatus, str]] = {
    Delivery.SUCCEEDED: (RunStatus.SUCCEEDED, ""),
    Delivery.FAILED: (RunStatus.FAILED, Reason.ERROR),
    Delivery.DEAD: (RunStatus.DEAD, Reason.ATTEMPTS_EXHAUSTED),
    Delivery.TIMED_OUT: (RunStatus.TIMED_OUT, ""),
    Delivery.CANCELLED: (RunStatus.CANCELLED, ""),
    Delivery.POISON: (RunStatus.FAILED, Reason.POISON),
    Delivery.BUDGET_EXCEEDED: (RunStatus.BUDGET_EXCEEDED, ""),
    Delivery.RETRY: (RunStatus.WAITING, WaitingFor.RETRY),
    Delivery.DEFERRED: (RunStatus.WAITING, WaitingFor.PROVIDER_UNAVAILABLE),
}


def observe_delivery(agent: str, outcome: Delivery, seconds: float) -> None:
    """Called by the worker task after each delivery."""
    finished = _FINISHED.get(outcome)
    if finished is None:
        DELIVERIES_DROPPED.labels(outcome).inc()
        return
    status, reason = finished
    RUNS_FINISHED.labels(agent, status, reason).inc()
    RUN_DURATION.labels(agent).observe(seconds)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str:
    """A fresh directory for prefork children's metric files (set before prometheus_client
    is imported: the worker command re-executes itself with it)."""
    return tempfile.mkdtemp(prefix="nightowl-metrics-")


def serve_multiprocess(port: int | None, address: str = "127.0.0.1") -> None:
    """/metrics for a prefork worker: the children's values, summed by the collector."""
    if not port:
        return
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    start_http_server(port, addr=address, registry=registry)


def serve(port: int | None, address: str = "127.0.0.1") -> None:
    """Expose /metrics on `port` (no-op without one). Loopback unless told otherwise:
    metrics carry trigger and agent names, so exposing them is a decision."""
    if port:
        start_http_server(port, addr=address)
