"""The load a scenario drives while faults are injected: firings of all four trigger kinds.

- per-second crons (`sec-allow`, `sec-skip`) fire by themselves;
- db_change: rows inserted into the never-killed database, steadily and in bursts;
- queue_depth: the watched list filled above the threshold and drained, in episodes;
- metric: the test's Prometheus answers an error ratio above the threshold (every other
  episode `+Inf`), then below.

An alert episode is only switched while the scheduler can see its sources (no fault that
blinds it is active, and a leader TTL has passed since the last one ended), so every
episode is one a correct scheduler must notice: it is held at least `phase_s` either way.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tests.faults.harness import Cluster

QUEUE_FILL = 30  # above=20, clear_below=5
METRIC_HIGH = 0.9  # above=0.5, clear_below=0.2


@dataclass
class Episodes:
    """One alert source's episodes: firing while `high`, counted at each breach."""

    name: str
    count: int = 0
    high: bool = False
    since: float = 0.0
    next_gap: float = 0.0


@dataclass
class Driven:
    """What was driven, for the checks: the expected firings."""

    started: float = 0.0
    ended: float = 0.0
    rows: list[int] = field(default_factory=list)
    bursts: list[dict[str, Any]] = field(default_factory=list)
    episodes: dict[str, int] = field(default_factory=dict)
    switches: list[dict[str, Any]] = field(default_factory=list)  # alert sources' flips


class Driver:
    """Runs on a thread from `start()` to `stop()`; every step bounded."""

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        *,
        rows_per_s: float = 4.0,
        phase_s: float = 3.0,
        bursts: tuple[tuple[float, int], ...] = ((9, 30), (19, 30)),
    ) -> None:
        self.cluster = cluster
        self.rng = rng
        self.rows_per_s = rows_per_s
        self.phase_s = phase_s
        self.planned = sorted(bursts)  # (seconds into the drive, rows) inserted at once
        self.driven = Driven()
        self.alerts = {"backlog": Episodes("backlog"), "errors": Episodes("errors")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-driver", daemon=True)
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    # -- sources -----------------------------------------------------------------------

    def insert_rows(self, n: int) -> list[int]:
        """n rows in one statement (one transaction): a burst the poller sees at once.

        One writer at a time, so rows commit in id order: the trigger's sequence cursor has
        no look-back, and a writer committing a lower id after a higher one would be a
        misconfiguration of the test's, not a fault of nightowl's."""
        with self._lock, self.cluster.data.begin() as conn:
            ids = [
                int(r[0])
                for r in conn.execute(
                    sa.text(
                        f"INSERT INTO {self.cluster.rows_table} (payload) "
                        "SELECT 'row ' || g FROM generate_series(1, :n) g RETURNING id"
                    ),
                    {"n": n},
                )
            ]
            self.driven.rows.extend(ids)
        return ids

    def burst(self, n: int) -> list[int]:
        ids = self.insert_rows(n)
        self.driven.bursts.append({"at": time.time(), "rows": n})
        return ids

    def _set_alert(self, ep: Episodes, high: bool) -> None:
        key = f"{self.cluster.prefix}backlog"
        if ep.name == "backlog":
            if high:
                self.cluster.shared.rpush(key, *[f"job-{i}" for i in range(QUEUE_FILL)])
            else:
                self.cluster.shared.delete(key)
        else:
            # every other episode reads +Inf, as an error ratio does when traffic stops
            inf = ep.count % 2 == 1
            self.cluster.metric.value = (math.inf if inf else METRIC_HIGH) if high else 0.0
        if high:
            ep.count += 1
        self.driven.switches.append({"source": ep.name, "high": high, "at": time.time()})
        ep.high = high
        ep.since = time.monotonic()
        ep.next_gap = self.phase_s + self.rng.uniform(0, 1.5)

    # -- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        self.driven.started = time.time()
        for ep in self.alerts.values():
            self._set_alert(ep, False)
            ep.since -= self.rng.uniform(0, self.phase_s)  # the two sources out of step
        self._thread.start()

    def _run(self) -> None:
        owed = 0.0
        last = begun = time.monotonic()
        planned = list(self.planned)
        try:
            while not self._stop.wait(0.05):
                now = time.monotonic()
                while planned and now - begun >= planned[0][0]:
                    self.burst(planned.pop(0)[1])
                owed += (now - last) * self.rows_per_s
                last = now
                if owed >= 1:
                    n = int(owed)
                    owed -= n
                    self.insert_rows(n)
                if self.cluster.faults.scheduler_blind():
                    continue  # hold every episode where it is until the scheduler sees again
                for ep in self.alerts.values():
                    if now - ep.since >= ep.next_gap:
                        self._set_alert(ep, not ep.high)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> Driven:
        """Stop inserting; end every episode in the clear state (a breach held its time)."""
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the driver failed: {self.error!r}") from self.error
        for ep in self.alerts.values():
            if ep.high:
                held = time.monotonic() - ep.since
                if held < self.phase_s:
                    time.sleep(self.phase_s - held)
                self._set_alert(ep, False)
        self.driven.ended = time.time()
        self.driven.episodes = {name: ep.count for name, ep in self.alerts.items()}
        return self.driven
