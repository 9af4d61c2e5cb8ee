"""`agents.llm.LLM` over real HTTP against tests/fakellm.py: every failure the brief names, sync
and async, plain and streamed; the breaker with an injected clock; the fallback chain; a
call as a durable step (replayed with no request, counted at the server); usage and cost
reported to the run; the key never shown."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from agents import (
    AgentContext,
    BreakerPolicy,
    BreakerState,
    LocalBreaker,
    MemoryJournal,
    NonRetryable,
    OutboxBuffer,
    ProviderUnavailable,
    StepCursor,
    StepDiverged,
)
from agents.llm import (
    LLM,
    ChatClient,
    Completion,
    Endpoint,
    Failure,
    LLMOutputInvalid,
    LLMRequestError,
    LLMTransientError,
    LLMUnavailable,
    ScriptedLLM,
    llm_from_env,
)
from tests.fakellm import (
    FakeLLM,
    answer,
    cut,
    hang,
    malformed,
    not_chat,
    rate_limited,
    server_error,
    status,
)

KEY = "sk-test-0123456789-very-secret"
# gpt-4o's default price: 10 prompt and 5 completion tokens (the fake's default usage).
GPT4O_COST = (10 * 2.50 + 5 * 10.00) / 1_000_000


class Ticket(BaseModel):
    label: str
    priority: int


class Sleeps(list[float]):
    """An injected sleep: records the backoff instead of waiting it out."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingBreaker(LocalBreaker):
    """A real LocalBreaker that also keeps what it was told, in order."""

    def __init__(self, policy: BreakerPolicy | None = None, clock: Clock | None = None) -> None:
        super().__init__(policy or BreakerPolicy(failures=1000), clock or Clock())
        self.told: list[tuple[str, str]] = []

    def check(self, provider: str) -> None:
        self.told.append(("check", provider))
        super().check(provider)

    def succeeded(self, provider: str) -> None:
        self.told.append(("succeeded", provider))
        super().succeeded(provider)

    def failed(self, provider: str) -> bool:
        self.told.append(("failed", provider))
        return super().failed(provider)

    def verdicts(self) -> list[str]:
        return [verb for verb, _ in self.told if verb != "check"]


@dataclass
class Run:
    """An AgentContext as the worker builds one, with what it captured."""

    ctx: AgentContext
    journal: MemoryJournal
    beats: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)


def make_run(
    breaker: LocalBreaker | None = None, journal: MemoryJournal | None = None, attempt: int = 1
) -> Run:
    journal = journal or MemoryJournal()
    beats: list[tuple[str | None, dict[str, Any]]] = []
    ctx = AgentContext(
        run_id="r1",
        idempotency_key="k",
        attempt=attempt,
        logical_time=None,
        trigger=None,
        agent="a",
        fence=attempt,
        deadline=None,
        log=logging.LoggerAdapter(logging.getLogger("test.llm")),
        outbox=OutboxBuffer(frozenset()),
        _steps=StepCursor(journal, attempt=attempt),
        _heartbeat_sink=lambda note, details: beats.append((note, details)),
        _gate=breaker or RecordingBreaker(),
    )
    return Run(ctx, journal, beats)


@dataclass(frozen=True)
class Way:
    """How a test calls: `complete` or `acomplete`, plain or streamed."""

    mode: str
    stream: bool

    def complete(
        self,
        client: ChatClient,
        ctx: AgentContext | None,
        messages: str = "hello",
        *,
        schema: type[BaseModel] | None = None,
        step: str | None = None,
    ) -> Completion:
        if self.mode == "sync":
            return client.complete(ctx, messages, schema=schema, step=step, stream=self.stream)
        return asyncio.run(client.acomplete(ctx, messages, schema=schema, step=step, stream=self.stream))


WAYS = [Way("sync", False), Way("sync", True), Way("async", False), Way("async", True)]


@pytest.fixture(params=WAYS, ids=lambda w: f"{w.mode}-{'stream' if w.stream else 'plain'}")
def way(request: pytest.FixtureRequest) -> Way:
    value: Way = request.param
    return value


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_llm(*servers: FakeLLM, sleeps: Sleeps, model: str = "gpt-4o", **options: Any) -> LLM:
    settings: dict[str, Any] = {
        "connect_timeout": 0.5,
        "read_timeout": 0.5,
        "first_token_timeout": 0.5,
        "sleep": sleeps,
    }
    chain = [
        Endpoint(s.url, model if i == 0 else f"{model}-fallback", api_key=KEY) for i, s in enumerate(servers)
    ]
    return LLM(chain, **(settings | options))


@pytest.fixture
def llm(fake: FakeLLM, sleeps: Sleeps) -> Iterator[LLM]:
    with make_llm(fake, sleeps=sleeps) as client:
        yield client


# -- answers, usage, cost ------------------------------------------------------------


def test_an_answer_is_priced_and_its_usage_reported_to_the_run(way: Way, fake: FakeLLM, llm: LLM) -> None:
    run = make_run()
    done = way.complete(llm, run.ctx, step="greet")
    assert (done.text, done.model, done.provider, done.finish_reason) == (
        "ok",
        "gpt-4o",
        fake.provider,
        "stop",
    )
    assert done.usage.model_dump() == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert done.cost_usd == pytest.approx(GPT4O_COST) and not done.usage_estimated
    assert run.ctx.usage_totals.tokens == 15
    assert run.ctx.usage_totals.cost_usd == pytest.approx(GPT4O_COST)
    [record] = run.journal.written
    assert record.name == "greet" and record.usage["tokens"] == 15
    [call] = fake.calls
    assert call.stream is way.stream and call.messages == [{"role": "user", "content": "hello"}]
    assert call.body.get("stream_options") == ({"include_usage": True} if way.stream else None)


def test_an_answer_without_usage_is_estimated_and_says_so(way: Way, fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(answer("twelve chars", usage=False))
    run = make_run()
    done = way.complete(llm, run.ctx, "hello")
    assert done.usage_estimated
    assert done.usage.model_dump() == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert run.ctx.usage_totals.tokens == 6


def test_outside_a_run_a_call_is_validated_all_the_same(way: Way, fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(answer({"label": "bug", "priority": 2}))
    done = way.complete(llm, None, "classify", schema=Ticket)
    assert done.parsed == Ticket(label="bug", priority=2) and fake.count() == 1


# -- transient failures: retried, and told to the breaker when they are outages -----------

TRANSIENT = [
    pytest.param(server_error(500), True, id="500"),
    pytest.param(server_error(503), True, id="503"),
    pytest.param(status(408), True, id="408"),
    pytest.param(hang(3.0), True, id="read-timeout"),
    pytest.param(cut(1), True, id="cut-connection"),
    pytest.param(cut(1, clean=True), True, id="cut-without-done"),
    pytest.param(rate_limited(None), False, id="429"),
    pytest.param(malformed(), False, id="malformed-json"),
    pytest.param(not_chat(), False, id="no-choices"),
]


@pytest.mark.parametrize(("failure", "outage"), TRANSIENT)
def test_a_transient_failure_is_retried_and_only_an_outage_counts(
    way: Way, fake: FakeLLM, sleeps: Sleeps, llm: LLM, failure: dict[str, Any], outage: bool
) -> None:
    fake.enqueue(failure)
    breaker = RecordingBreaker()
    done = way.complete(llm, make_run(breaker).ctx)
    assert done.text == "ok" and done.requests == 2 and fake.count() == 2
    assert len(sleeps) == 1
    assert breaker.verdicts() == (["failed", "succeeded"] if outage else ["succeeded"])
    assert [verb for verb, _ in breaker.told].count("check") == 2  # asked before each request


def test_a_4xx_is_a_request_error_not_retried_nor_counted(
    way: Way, fake: FakeLLM, sleeps: Sleeps, llm: LLM
) -> None:
    fake.enqueue(status(400, body={"error": {"message": "unknown parameter"}}))
    breaker = RecordingBreaker()
    with pytest.raises(LLMRequestError, match=r"HTTP 400.*unknown parameter") as caught:
        way.complete(llm, make_run(breaker).ctx)
    assert isinstance(caught.value, NonRetryable) and caught.value.status == 400
    assert fake.count() == 1 and sleeps == [] and breaker.verdicts() == []


def test_a_refused_connection_is_retried_then_unavailable(sleeps: Sleeps) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    breaker = RecordingBreaker()
    with (
        LLM(Endpoint(f"http://127.0.0.1:{port}/v1", "m"), max_retries=2, sleep=sleeps) as llm,
        pytest.raises(LLMUnavailable) as caught,
    ):
        llm.complete(make_run(breaker).ctx, "hi")
    assert isinstance(caught.value.last_error, LLMTransientError)
    assert caught.value.last_error.kind == "connect" and not isinstance(caught.value, NonRetryable)
    assert breaker.verdicts() == ["failed"] * 3 and len(sleeps) == 2


def test_backoff_is_exponential_with_full_jitter_and_capped(fake: FakeLLM, sleeps: Sleeps) -> None:
    fake.enqueue(*[server_error(500)] * 6)
    with make_llm(fake, sleeps=sleeps, max_retries=6, backoff_base=0.25, backoff_cap=1.0) as llm:
        assert llm.complete(None, "hi").requests == 7
    ceilings = [min(1.0, 0.25 * 2**i) for i in range(6)]
    assert all(0 <= slept <= ceiling for slept, ceiling in zip(sleeps, ceilings, strict=True))
    assert len(set(sleeps)) > 1  # jittered, not a fixed delay


def test_retry_after_seconds_and_http_dates_are_waited_at_least(
    fake: FakeLLM, sleeps: Sleeps, llm: LLM
) -> None:
    in_3s = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    fake.enqueue(rate_limited(2), server_error(503, retry_after=in_3s), server_error(500, retry_after=9))
    assert llm.complete(None, "hi").requests == 4
    assert 2.0 <= sleeps[0] <= 20.0
    assert 1.5 <= sleeps[1] <= 3.0  # an HTTP date (whole seconds: up to one less than asked)
    assert sleeps[2] <= 2.0  # a 500's Retry-After (9) is not honoured: the backoff alone, 0.5 x 2^2


def test_a_retry_after_past_the_cap_moves_on_at_once(fake: FakeLLM, sleeps: Sleeps) -> None:
    with FakeLLM() as spare, make_llm(fake, spare, sleeps=sleeps, backoff_cap=5.0) as llm:
        fake.set_default(rate_limited(60))
        done = llm.complete(None, "hi")
        assert done.provider == spare.provider and sleeps == []
        assert (fake.count(), spare.count()) == (1, 1)


# -- streaming: heartbeats on content, the first-token deadline ---------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_slow_live_stream_heartbeats_on_content_only(mode: str, fake: FakeLLM, llm: LLM) -> None:
    # Four content chunks 0.2 s apart with keep-alives between: longer in all than the read
    # timeout (0.5 s), never a gap as long.
    fake.enqueue(answer("abcdefgh", chunks=4, delay_s=0.2, ping_every_s=0.05))
    run = make_run()
    done = Way(mode, True).complete(llm, run.ctx)
    assert done.text == "abcdefgh" and done.requests == 1
    assert run.beats == [("llm: streaming", {"chars": n, "model": "gpt-4o"}) for n in (2, 4, 6, 8)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_keep_alives_without_content_miss_the_first_token_deadline(
    mode: str, fake: FakeLLM, sleeps: Sleeps, llm: LLM
) -> None:
    fake.enqueue(answer("late", first_delay_s=5.0, ping_every_s=0.05))
    breaker = RecordingBreaker()
    run = make_run(breaker)
    started = time.monotonic()
    done = Way(mode, True).complete(llm, run.ctx)
    assert time.monotonic() - started < 2.5  # cut at the 0.5 s deadline, not after 5 s
    assert done.text == "ok" and done.requests == 2
    assert breaker.verdicts() == ["failed", "succeeded"]
    assert [d["chars"] for _, d in run.beats] == [1, 2]  # only the second stream's content


def test_a_server_that_ignores_stream_true_is_read_as_plain(fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(not_chat(), answer())  # not_chat answers application/json even to a stream
    assert llm.complete(None, "hi", stream=True).requests == 2


# -- output validation and repair -----------------------------------------------------------


def test_off_schema_content_gets_a_repair_turn(way: Way, fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(answer("Sure! The label is bug."), answer('```json\n{"label": "bug", "priority": 2}\n```'))
    run = make_run()
    done = way.complete(llm, run.ctx, "classify this", schema=Ticket)
    assert done.parsed == Ticket(label="bug", priority=2)
    assert (done.requests, done.repairs, done.usage.total_tokens) == (2, 1, 30)
    assert run.ctx.usage_totals.tokens == 30  # the repair turn was billed too
    first, repair = fake.calls
    assert first.messages[0]["role"] == "system" and '"priority"' in first.messages[0]["content"]
    assert repair.messages[-2] == {"role": "assistant", "content": "Sure! The label is bug."}
    assert repair.messages[-1]["role"] == "user" and "Invalid JSON" in repair.messages[-1]["content"]


def test_still_invalid_after_the_repairs_is_output_invalid(way: Way, fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(answer('{"label": "bug"}'), answer('{"label": "bug", "priority": "high"}'))
    breaker = RecordingBreaker()
    run = make_run(breaker)
    with pytest.raises(
        LLMOutputInvalid, match=r"gpt-4o answered 2 time\(s\) without a valid Ticket"
    ) as caught:
        way.complete(llm, run.ctx, "classify", schema=Ticket)
    assert caught.value.errors == [
        "priority: Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "high" in str(caught.value) and not isinstance(caught.value, NonRetryable)
    assert run.journal.written == [] and run.ctx.usage_totals.tokens == 30  # spent, not recorded
    assert breaker.verdicts() == ["succeeded", "succeeded"]  # the provider was up all along


# -- the fallback chain -----------------------------------------------------------------------


def test_the_chain_falls_back_when_the_primary_is_exhausted(way: Way, fake: FakeLLM, sleeps: Sleeps) -> None:
    fake.set_default(server_error(500))
    with FakeLLM() as spare, make_llm(fake, spare, sleeps=sleeps, max_retries=1) as llm:
        done = way.complete(llm, make_run().ctx)
        assert (done.provider, done.model, done.requests) == (spare.provider, "gpt-4o-fallback", 3)
        assert (fake.count(), spare.count()) == (2, 1)


def test_every_endpoint_failing_is_unavailable_with_the_last_error(fake: FakeLLM, sleeps: Sleeps) -> None:
    fake.set_default(server_error(500))
    with FakeLLM() as spare, make_llm(fake, spare, sleeps=sleeps, max_retries=1) as llm:
        spare.set_default(server_error(502))
        with pytest.raises(LLMUnavailable) as caught:
            llm.complete(None, "hi")
    assert [f.status for f in caught.value.failures] == [500, 502]
    assert caught.value.last_error is caught.value.failures[-1]


# -- the circuit breaker ---------------------------------------------------------------------


def test_failures_open_the_breaker_then_calls_fail_fast_until_a_probe_closes_it(
    fake: FakeLLM, sleeps: Sleeps
) -> None:
    clock = Clock()
    breaker = LocalBreaker(BreakerPolicy(failures=3, window_s=60, open_for_s=30), clock=clock)
    fake.set_default(server_error(500))
    with make_llm(fake, sleeps=sleeps, max_retries=5) as llm:
        # Given three 500s in a row, the breaker opens during the call's own retries.
        with pytest.raises(ProviderUnavailable) as caught:
            llm.complete(make_run(breaker).ctx, "hi")
        assert caught.value.provider == fake.provider and caught.value.retry_in == pytest.approx(30)
        assert fake.count() == 3 and breaker.state(fake.provider) is BreakerState.OPEN
        # While open, a call fails fast with no request at all.
        clock.now += 10
        with pytest.raises(ProviderUnavailable) as again:
            llm.complete(make_run(breaker).ctx, "hi")
        assert again.value.retry_in == pytest.approx(20) and fake.count() == 3
        # After open_for, one probe goes out; its success closes the breaker.
        clock.now += 21
        fake.set_default(answer("back"))
        assert llm.complete(make_run(breaker).ctx, "hi").text == "back"
        assert breaker.state(fake.provider) is BreakerState.CLOSED and fake.count() == 4
    assert breaker.transitions == [(fake.provider, BreakerState.OPEN), (fake.provider, BreakerState.CLOSED)]


def test_the_failure_that_opens_the_breaker_defers_instead_of_failing(fake: FakeLLM, sleeps: Sleeps) -> None:
    # Given a call whose last retry is the failure that opens the breaker
    breaker = LocalBreaker(BreakerPolicy(failures=2, window_s=60, open_for_s=30), clock=Clock())
    fake.set_default(server_error(500))
    # Then the call raises ProviderUnavailable (a deferral), not LLMUnavailable (a failure)
    with make_llm(fake, sleeps=sleeps, max_retries=1) as llm, pytest.raises(ProviderUnavailable) as caught:
        llm.complete(make_run(breaker).ctx, "hi")
    assert fake.count() == 2 and caught.value.retry_in == pytest.approx(30)


def test_a_probe_answered_with_a_429_closes_the_breaker_and_its_retry_goes_out(
    fake: FakeLLM, sleeps: Sleeps
) -> None:
    # Given an open breaker whose open period has passed (half-open)
    clock = Clock()
    breaker = LocalBreaker(BreakerPolicy(failures=1, open_for_s=30), clock=clock)
    fake.set_default(server_error(500))
    with make_llm(fake, sleeps=sleeps, max_retries=0) as llm:
        with pytest.raises(ProviderUnavailable):
            llm.complete(make_run(breaker).ctx, "hi")
        clock.now += 31
        # When the probe gets a 429 (providers coming back often throttle first), then an answer
        fake.enqueue(rate_limited(0.01))
        fake.set_default(answer("back"))
    with make_llm(fake, sleeps=sleeps, max_retries=2) as llm:
        # Then the provider is up: the breaker closes, and the probe's own retry is not refused
        assert llm.complete(make_run(breaker).ctx, "hi").text == "back"
    assert breaker.state(fake.provider) is BreakerState.CLOSED and fake.count() == 3


def test_a_failed_probe_opens_the_breaker_again(fake: FakeLLM, sleeps: Sleeps) -> None:
    clock = Clock()
    breaker = LocalBreaker(BreakerPolicy(failures=1, open_for_s=30), clock=clock)
    fake.set_default(server_error(503))
    with make_llm(fake, sleeps=sleeps) as llm:
        with pytest.raises(ProviderUnavailable):
            llm.complete(make_run(breaker).ctx, "hi")
        clock.now += 31
        with pytest.raises(ProviderUnavailable) as caught:
            llm.complete(make_run(breaker).ctx, "hi")
    assert fake.count() == 2 and caught.value.retry_in == pytest.approx(30)


def test_the_fallback_serves_while_the_primary_is_open(fake: FakeLLM, sleeps: Sleeps) -> None:
    clock = Clock()
    breaker = LocalBreaker(BreakerPolicy(failures=2, open_for_s=30), clock=clock)
    fake.set_default(server_error(500))
    with FakeLLM() as spare, make_llm(fake, spare, sleeps=sleeps) as llm:
        first = llm.complete(make_run(breaker).ctx, "hi")  # the primary opens, the spare answers
        assert first.provider == spare.provider and fake.count() == 2
        second = llm.complete(make_run(breaker).ctx, "hi")
        assert second.provider == spare.provider and fake.count() == 2  # skipped, not asked
        clock.now += 31
        fake.set_default(answer("primary again"))
        assert llm.complete(make_run(breaker).ctx, "hi").provider == fake.provider
        assert spare.count() == 2


def test_all_breakers_open_is_provider_unavailable_with_the_soonest_retry(
    fake: FakeLLM, sleeps: Sleeps
) -> None:
    clock = Clock()
    breaker = LocalBreaker(BreakerPolicy(failures=1, open_for_s=30), clock=clock)
    with FakeLLM() as spare, make_llm(fake, spare, sleeps=sleeps) as llm:
        breaker.failed(fake.provider)
        clock.now += 20
        breaker.failed(spare.provider)
        with pytest.raises(ProviderUnavailable) as caught:
            llm.complete(make_run(breaker).ctx, "hi")
        assert caught.value.provider == fake.provider and caught.value.retry_in == pytest.approx(10)
        assert fake.count() == spare.count() == 0


def test_rate_limits_never_open_the_breaker(fake: FakeLLM, sleeps: Sleeps) -> None:
    breaker = LocalBreaker(BreakerPolicy(failures=2))
    fake.set_default(rate_limited(None))
    with make_llm(fake, sleeps=sleeps) as llm, pytest.raises(LLMUnavailable):
        llm.complete(make_run(breaker).ctx, "hi")
    assert fake.count() == 4 and breaker.state(fake.provider) is BreakerState.CLOSED


# -- durable steps: a retried run replays the call --------------------------------------------


def test_a_recorded_call_is_replayed_without_a_request(way: Way, fake: FakeLLM, llm: LLM) -> None:
    fake.enqueue(answer({"label": "bug", "priority": 1}))
    first = make_run()
    answered = way.complete(llm, first.ctx, "classify", schema=Ticket, step="classify")
    assert fake.count() == 1 and [r.name for r in first.journal.written] == ["classify"]
    # Given the next attempt of the same run, with the first attempt's record:
    second = make_run(journal=MemoryJournal(first.journal.written), attempt=2)
    replayed = way.complete(llm, second.ctx, "classify", schema=Ticket, step="classify")
    assert fake.count() == 1  # no request
    assert replayed == answered and replayed.parsed == Ticket(label="bug", priority=1)
    assert second.ctx.usage_totals.tokens == 0 and second.journal.written == []  # nothing billed


def test_the_default_step_name_is_the_model_and_steps_count_in_order(fake: FakeLLM, llm: LLM) -> None:
    run = make_run()
    llm.complete(run.ctx, "one")
    llm.complete(run.ctx, "two", step="second")
    assert [(r.seq, r.name) for r in run.journal.written] == [(1, "llm:gpt-4o"), (2, "second")]


def test_a_replay_whose_schema_no_longer_fits_is_an_error(fake: FakeLLM, llm: LLM) -> None:
    class Renamed(BaseModel):
        category: str

    fake.enqueue(answer({"label": "bug", "priority": 1}))
    first = make_run()
    llm.complete(first.ctx, "classify", schema=Ticket)
    second = make_run(journal=MemoryJournal(first.journal.written), attempt=2)
    with pytest.raises(StepDiverged, match="no longer validates as Renamed"):
        llm.complete(second.ctx, "classify", schema=Renamed)


# -- the key stays secret ---------------------------------------------------------------------


def test_the_key_is_sent_but_never_shown(
    fake: FakeLLM, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.enqueue(status(401, echo_auth=True), server_error(500), server_error(500))
    with make_llm(fake, sleeps=sleeps, max_retries=1) as llm:
        with pytest.raises(LLMRequestError) as refused:
            llm.complete(make_run().ctx, "hi")
        with pytest.raises(LLMUnavailable) as down:
            llm.complete(make_run().ctx, "hi")
        shown = [
            repr(llm),
            repr(llm.endpoints[0]),
            str(llm.endpoints[0]),
            str(refused.value),
            str(down.value),
        ]
    assert fake.calls[0].authorization == f"Bearer {KEY}"
    assert "Bearer ***" in str(refused.value)  # the echoed key is masked
    assert caplog.records and all(KEY not in text for text in [*shown, caplog.text])


# -- clients passed in, and the environment ---------------------------------------------------


def test_clients_passed_in_are_used_and_left_open(fake: FakeLLM, sleeps: Sleeps) -> None:
    async def twice(llm: LLM) -> list[str]:
        return [(await llm.acomplete(None, "a")).text, (await llm.acomplete(None, "b", stream=True)).text]

    async def main() -> None:
        async with httpx.AsyncClient() as ahttp:
            with httpx.Client() as http:
                llm = LLM(Endpoint(fake.url, "m"), http=http, ahttp=ahttp, sleep=sleeps)
                assert llm.complete(None, "c").text == "ok"
                assert await twice(llm) == ["ok", "ok"]
                llm.close()
                assert not http.is_closed and not ahttp.is_closed

    asyncio.run(main())
    assert fake.count() == 3


def test_from_env_points_at_the_configured_server(fake: FakeLLM) -> None:
    env = {"NIGHTOWL_LLM_BASE_URL": fake.url, "NIGHTOWL_LLM_API_KEY": KEY, "NIGHTOWL_LLM_MODEL": "local-7b"}
    llm = LLM.from_env(model="gpt-4o", fallback=["local-3b"], environ=env, read_timeout=2.0)
    assert llm is not None
    with llm:
        assert [e.model for e in llm.endpoints] == ["local-7b", "local-3b"]
        assert llm.endpoints[0].api_key is not None and llm.endpoints[0].api_key.get_secret_value() == KEY
        assert llm.complete(None, "hi").model == "local-7b"
    assert fake.calls[0].authorization == f"Bearer {KEY}"
    assert LLM.from_env(environ={}) is None
    offline = ScriptedLLM(["offline"])
    assert llm_from_env(offline, environ={"NIGHTOWL_LLM_BASE_URL": " "}) is offline


# -- ScriptedLLM goes through the same logic ----------------------------------------------------

SCRIPTED = [
    pytest.param(Failure.server_error(), True, id="5xx"),
    pytest.param(Failure.timeout(), True, id="timeout"),
    pytest.param(Failure.connect_error(), True, id="connect"),
    pytest.param(Failure.cut(), True, id="cut"),
    pytest.param(Failure.first_token(), True, id="first-token"),
    pytest.param(Failure.rate_limited(retry_after=1.5), False, id="429"),
    pytest.param(Failure.malformed(), False, id="malformed"),
]


@pytest.mark.parametrize(("failure", "outage"), SCRIPTED)
def test_scripted_failures_meet_the_same_retries_and_breaker(
    way: Way, failure: Failure, outage: bool
) -> None:
    scripted = ScriptedLLM([failure, "ok"])
    breaker = RecordingBreaker()
    done = way.complete(scripted, make_run(breaker).ctx)
    assert (done.text, done.requests, len(scripted.calls), len(scripted.slept)) == ("ok", 2, 2, 1)
    assert breaker.verdicts() == (["failed", "succeeded"] if outage else ["succeeded"])
    if failure.retry_after is not None:
        assert scripted.slept[0] >= failure.retry_after


def test_a_scripted_outage_opens_the_breaker_as_a_real_one_does(way: Way) -> None:
    breaker = LocalBreaker(BreakerPolicy(failures=2, open_for_s=30), clock=Clock())
    scripted = ScriptedLLM(default=Failure.server_error(503))
    with pytest.raises(ProviderUnavailable, match="'scripted' is unavailable"):
        way.complete(scripted, make_run(breaker).ctx)
    assert len(scripted.calls) == 2 and breaker.state("scripted") is BreakerState.OPEN


def test_a_scripted_call_is_a_step_replayed_and_streams_heartbeats(way: Way) -> None:
    scripted = ScriptedLLM([{"label": "bug", "priority": 3}], model="gpt-4o-mini")
    first = make_run()
    answered = way.complete(scripted, first.ctx, "classify", schema=Ticket)
    assert answered.parsed == Ticket(label="bug", priority=3) and answered.cost_usd > 0
    assert first.ctx.usage_totals.tokens == answered.usage.total_tokens > 0
    assert bool(first.beats) is way.stream
    second = make_run(journal=MemoryJournal(first.journal.written), attempt=2)
    assert way.complete(scripted, second.ctx, "classify", schema=Ticket) == answered
    assert len(scripted.calls) == 1 and second.ctx.usage_totals.tokens == 0
