"""`python -m scheduler.healthcheck --port P`: is this process's loop still making progress?

A container healthcheck that only opens a port stays green while the loop behind it hangs
on a query or a lock, the quiet failure nightowl exists to catch. This reads the process's
own /metrics and checks `nightowl_loop_last_success_timestamp_seconds` for every step: each
must have completed within `--max-age` seconds. Exit 0 healthy, 1 unhealthy (one line
saying why), 2 usage. A standby scheduler or watchdog is healthy: its step (trying the
lease) completes.
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

METRIC = "nightowl_loop_last_success_timestamp_seconds"


def check(url: str, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) for the /metrics page at `url`."""
    try:
        response = httpx.get(url, timeout=3.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return False, f"cannot read {url}: {exc}"
    steps: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == METRIC:
            steps.update({s.labels.get("step", ""): s.value for s in family.samples})
    if not steps:
        return False, (
            f"{url} has no {METRIC}: the loop has not completed a step yet, or "
            "this is not a scheduler, watchdog or relay"
        )
    now = time.time() if now is None else now
    stale = {step: now - at for step, at in steps.items() if now - at > max_age}
    if stale:
        worst = ", ".join(f"{step!r} {age:.0f}s ago" for step, age in sorted(stale.items()))
        return False, f"loop stuck: last completed {worst} (limit {max_age:g}s)"
    return True, "ok: " + ", ".join(f"{step} {now - at:.1f}s ago" for step, at in sorted(steps.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.healthcheck", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="the process's --metrics-port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--max-age", type=float, default=60.0, help="seconds a step may go without completing (default 60)"
    )
    args = parser.parse_args(argv)
    healthy, reason = check(f"http://{args.host}:{args.port}/metrics", args.max_age)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
