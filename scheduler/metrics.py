"""Prometheus metrics (`nightowl_*`), served by each long-running process on `--metrics-port`.

Names follow Prometheus conventions: base units (`_seconds`), `_total` for
counters. Every process registers the same set; each fills the ones its role
owns (the scheduler fires triggers, the watchdog counts stalls, the relay
reports the outbox).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

FIRINGS = Counter("nightowl_trigger_firings_total", "Runs created by triggers.",
                  ["trigger", "kind"])
DUPLICATE_FIRINGS = Counter("nightowl_trigger_duplicate_firings_total",
                            "Firings dropped because their idempotency key already had a run.",
                            ["trigger"])
TRIGGER_STATE = Gauge("nightowl_trigger_state",
                      "1 for the state each trigger is in (ok, pending, firing, source_failing).",
                      ["trigger", "state"])
QUEUE_DEPTH = Gauge("nightowl_queue_depth", "Messages waiting in a watched queue (queue_depth).",
                    ["trigger", "queue"])
RUNS_FINISHED = Counter("nightowl_runs_finished_total", "Runs that reached a terminal state.",
                        ["agent", "status", "reason"])
RUN_DURATION = Histogram("nightowl_run_duration_seconds", "Wall time of an attempt.", ["agent"],
                         buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600))
DELIVERIES_DROPPED = Counter("nightowl_deliveries_dropped_total",
                             "Deliveries that did not start their run (duplicate, lease held...).",
                             ["reason"])
STALLED = Counter("nightowl_runs_stalled_total", "Attempts the watchdog ended as stalled.",
                  ["agent", "reason"])
DEAD = Counter("nightowl_runs_dead_total", "Runs the watchdog marked dead.", ["agent"])
HEARTBEAT_AGE = Gauge("nightowl_heartbeat_age_seconds",
                      "Age of the oldest liveness heartbeat among running attempts.")
OUTBOX_ROWS = Gauge("nightowl_outbox_rows", "Outbox rows by sink and status.", ["sink", "status"])
OUTBOX_LAG = Gauge("nightowl_outbox_lag_seconds", "Age of the oldest pending outbox row.")
OUTBOX_DELIVERED = Counter("nightowl_outbox_delivered_total", "Outbox entries delivered.", ["sink"])
OUTBOX_FAILED = Counter("nightowl_outbox_failed_total", "Failed outbox deliveries.", ["sink"])
ALERTS_SENT = Counter("nightowl_alerts_sent_total", "Alert sends by channel and outcome.",
                      ["channel", "outcome"])
LEADER = Gauge("nightowl_leader", "1 while this process leads its role.", ["role"])


def serve(port: int | None, address: str = "127.0.0.1") -> None:
    """Expose /metrics on `port` (no-op without one). Loopback unless told otherwise:
    metrics carry trigger and agent names, so exposing them is a decision."""
    if port:
        start_http_server(port, addr=address)
