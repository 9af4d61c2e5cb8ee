"""RedisBreaker against real Redis with an injected clock: LocalBreaker's semantics, shared
by every worker (two RedisBreaker instances on one prefix stand for two workers)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from agents import BreakerPolicy, BreakerState, LocalBreaker, ProviderGate, ProviderUnavailable
from scheduler.core import keys
from scheduler.core.breaker import OUTAGE, BreakerInfo, Episode, RedisBreaker
from scheduler.core.steplog import StepFailures
from tests.helpers import REDIS_URL, RedisServer

P = "api.openai.com"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = BreakerPolicy(failures=3, window_s=10, open_for_s=30, probe_timeout_s=120)


class Clock:
    """Unix seconds that a test moves by hand."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def at(self, t: float) -> Clock:
        self.t = T0 + t
        return self


_clients: list[redis.Redis] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def breaker(prefix: str, clock: Clock, policy: BreakerPolicy = POLICY) -> RedisBreaker:
    """One worker's breaker (its own Redis client) on the test's prefix."""
    _clients.append(redis.Redis.from_url(REDIS_URL))
    return RedisBreaker(_clients[-1], prefix, policy, clock)


def refused(gate: ProviderGate, provider: str = P) -> ProviderUnavailable | None:
    try:
        gate.check(provider)
    except ProviderUnavailable as exc:
        return exc
    return None


def open_it(b: RedisBreaker, clock: Clock, at: float = 0) -> None:
    clock.at(at)
    for _ in range(POLICY.failures):
        b.failed(P)
    assert b.state(P) is BreakerState.OPEN


def test_it_opens_after_n_failures_within_the_window_not_n_spread_wider(prefix: str) -> None:
    clock = Clock()
    b = breaker(prefix, clock)
    # Three failures 5 s apart: the first has left the 10 s window when the third comes
    assert [b.failed(P) for _ in map(clock.at, (0, 5, 10))] == [False, False, False]
    assert b.state(P) is BreakerState.CLOSED and b.states()[P].failures == 2
    # A success in between clears the count, as LocalBreaker's does
    clock.at(11)
    b.failed(P)
    b.succeeded(P)
    assert b.states()[P].failures == 0
    # Three within the window open it
    assert [b.failed(P) for _ in map(clock.at, (12, 13, 14))] == [False, False, True]
    assert b.state(P) is BreakerState.OPEN


def test_while_open_every_worker_fails_fast_with_the_time_left(prefix: str) -> None:
    clock = Clock()
    a, b = breaker(prefix, clock), breaker(prefix, clock)
    open_it(a, clock, at=0)
    clock.at(12)
    exc = refused(b)
    assert exc is not None and exc.provider == P and exc.retry_in == pytest.approx(18)
    assert b.failed(P) is True  # a call that was in flight when it opened changes nothing
    info = b.states()[P]
    assert (info.state, info.opened_at, info.failures) == (BreakerState.OPEN, a.states()[P].opened_at, 0)
    assert info.retry_in == pytest.approx(18)
    assert refused(b, "other.example") is None  # per provider


def test_half_open_lets_exactly_one_probe_through_across_workers(prefix: str) -> None:
    clock = Clock()
    a, b = breaker(prefix, clock), breaker(prefix, clock)
    open_it(a, clock, at=0)
    clock.at(30)
    assert a.state(P) is BreakerState.HALF_OPEN
    assert refused(b) is None  # b is the probe
    others = [refused(a), refused(b), refused(a.gate("digest"))]
    assert all(e is not None and "probe" in str(e) and e.retry_in == 30 for e in others)


def test_the_probes_success_closes_it_for_everyone(prefix: str) -> None:
    clock = Clock()
    a, b = breaker(prefix, clock), breaker(prefix, clock)
    open_it(a, clock, at=0)
    clock.at(31)
    assert refused(b) is None
    b.succeeded(P)
    assert a.state(P) is BreakerState.CLOSED and refused(a) is None and refused(b) is None
    assert a.states()[P] == BreakerInfo(BreakerState.CLOSED, None, 0, None)
    # and it takes the full count of failures to open again
    assert [a.failed(P) for _ in range(3)] == [False, False, True]


def test_the_probes_failure_opens_it_again_in_the_same_episode(prefix: str) -> None:
    clock = Clock()
    a, b = breaker(prefix, clock), breaker(prefix, clock)
    open_it(a, clock, at=0)
    first = a.states()[P].opened_at
    clock.at(30)
    assert refused(b) is None
    assert b.failed(P) is True
    clock.at(40)
    exc = refused(a)
    assert exc is not None and exc.retry_in == pytest.approx(20)  # open for 30 s from t=30
    assert a.states()[P].opened_at == first  # the episode began at t=0 and goes on
    clock.at(60)
    assert refused(a) is None  # the next probe (the failed one released the slot)
    assert [e.closed_ms for e in a.episodes()] == [None]


def test_a_probe_that_never_reports_frees_the_slot_after_its_timeout(prefix: str) -> None:
    clock = Clock()
    policy = BreakerPolicy(failures=1, window_s=10, open_for_s=30, probe_timeout_s=0.2)
    a, b = breaker(prefix, clock, policy), breaker(prefix, clock, policy)
    clock.at(0)
    a.failed(P)
    clock.at(30)
    assert refused(a) is None  # a's probe, then a's worker dies
    assert refused(b) is not None
    time.sleep(0.3)  # the slot's PX is Redis's own clock
    assert refused(b) is None


def test_each_opening_is_an_episode_record_closed_by_the_success(prefix: str) -> None:
    clock = Clock()
    b = breaker(prefix, clock)
    open_it(b, clock, at=0)
    assert b.episodes() == [Episode(P, int(T0 * 1000))]
    clock.at(35)
    b.check(P)
    b.succeeded(P)
    open_it(b, clock, at=100)
    assert b.episodes() == [
        Episode(P, int(T0 * 1000), int((T0 + 35) * 1000)),
        Episode(P, int((T0 + 100) * 1000)),
    ]
    first = b.episodes()[0]
    assert first.opened_at.isoformat() == "2026-01-01T00:00:00+00:00"
    assert first.closed_at is not None and (first.closed_at - first.opened_at).total_seconds() == 35
    # A record whose breaker state was lost (evicted, deleted) is not reported as open
    b.client.delete(keys.breaker_state(prefix, P))
    assert b.episodes() == [first]


def test_a_gate_records_the_providers_its_agent_calls(prefix: str) -> None:
    clock = Clock()
    b = breaker(prefix, clock)
    digest: ProviderGate = b.gate("digest")
    digest.check(P)
    digest.check("localhost:8000")
    b.gate("triage").check(P)
    b.check("bare.example")  # not through an agent's gate
    assert b.providers_of("digest") == ["api.openai.com", "localhost:8000"]
    assert b.providers_of("triage") == [P]
    assert b.providers_of("nobody") == []
    assert b.providers() == ["api.openai.com", "bare.example", "localhost:8000"]
    # and the bound gate is the same breaker
    for _ in range(3):
        digest.failed(P)
    assert b.state(P) is BreakerState.OPEN and digest.state(P) is BreakerState.OPEN
    assert refused(b.gate("triage")) is not None


def test_it_follows_local_breaker_step_for_step(prefix: str) -> None:
    """One script of calls against both breakers: the same answers at every step."""
    clock = Clock()
    shared = breaker(prefix, clock)
    local = LocalBreaker(POLICY, clock)
    script = [(0, "fail"), (1, "fail"), (2, "check"), (3, "ok"), (4, "fail"), (5, "fail"), (6, "fail")]
    script += [(7, "check"), (8, "fail"), (35, "check"), (36, "check"), (37, "fail"), (38, "check")]
    script += [(67, "check"), (68, "ok"), (69, "check"), (70, "fail"), (85, "fail"), (90, "fail")]
    script += [(91, "state"), (100, "fail"), (101, "check"), (102, "state")]

    def step(gate: ProviderGate, op: str) -> object:
        if op == "fail":
            return gate.failed(P)
        if op == "ok":
            gate.succeeded(P)
            return None
        if op == "state":
            return gate.state(P)
        exc = refused(gate)
        return None if exc is None else round(exc.retry_in, 6)

    for t, op in script:
        clock.at(t)
        assert step(shared, op) == step(local, op), (t, op)


def test_with_redis_down_calls_go_ahead_and_the_outage_is_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer()
    server.start()
    clock = Clock()
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    outage = StepFailures(logging.getLogger("nightowl.breaker"), settle=0.0)
    policy = BreakerPolicy(failures=1)
    b = RedisBreaker(client, "nightowl:", policy, clock, outage=outage, outage_backoff_s=0.05)
    try:
        b.failed(P)
        assert refused(b) is not None
        caplog.set_level(logging.INFO, logger="nightowl.breaker")
        caplog.clear()
        # When Redis goes away, the open breaker no longer stops anyone
        server.stop()
        for _ in range(5):
            assert refused(b) is None and refused(b.gate("digest")) is None
            assert b.failed(P) is False
            b.succeeded(P)
            assert b.state(P) is BreakerState.CLOSED
            time.sleep(0.06)  # past the back-off: each round asks Redis again
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "circuit breaker" in lines[0].getMessage() and "ConnectionError" in lines[0].getMessage()
        assert all(r.exc_info is None for r in caplog.records)
        # And when it is back (empty: it kept nothing), the breaker works again, said once
        server.start()
        time.sleep(0.06)
        b.failed(P)
        b.failed(P)
        assert refused(b) is not None
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][1].startswith(
            OUTAGE + " recovered"
        )
    finally:
        server.stop()
        client.close()


def test_a_redis_that_hangs_delays_one_call_not_every_call() -> None:
    """A Redis behind a partition answers nothing (the TCP handshake is the kernel's): one
    call waits out the socket timeout, then the breaker stops asking for a while."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted, never answered
        port = silent.getsockname()[1]
        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3)
        b = RedisBreaker(client, "nightowl:", POLICY)
        try:
            started = time.monotonic()
            b.check(P)  # the slow one
            assert time.monotonic() - started >= 0.3
            started = time.monotonic()
            for _ in range(50):
                b.check(P)
                assert b.failed(P) is False and b.state(P) is BreakerState.CLOSED
            assert time.monotonic() - started < 0.3
        finally:
            client.close()
