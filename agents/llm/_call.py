"""What one chat call does, written once for both clients and both calling conventions.

`LLM` (HTTP) and `ScriptedLLM` differ only in their transport, and `complete` and
`acomplete` only in how they wait. So a call is a generator that yields what it needs
done (`Send` a request, `Sleep` a backoff) and is sent the answer, or thrown the failure;
the drivers in `_core.py` run it. Retries, the breaker, the fallback chain, the repair
turns and usage exist here once:

1. For each endpoint of the chain, first to last: ask the breaker (`ctx.breaker.check`);
   an open one skips the endpoint.
2. Send the request; retry a transient failure (tenacity: exponential backoff with full
   jitter, capped at `backoff_cap`, at least the provider's `Retry-After`). An outage
   (5xx, timeout, refused connection, cut stream) is reported to the breaker, a success
   too; a 429, a 4xx and a malformed answer are not. Each retry asks the breaker again, so
   a breaker that opens midway moves the call to the next endpoint at once.
3. Report the answer's usage (`ctx.usage`) as it arrives: a repair turn is billed too.
4. With `schema=`, validate; send up to `max_repairs` repair turns; then
   `LLMOutputInvalid` (not the next endpoint: the provider is up, the answer is wrong).
5. Chain exhausted: `ProviderUnavailable` (the soonest `retry_in`) when a breaker was
   open, so the worker defers the run instead of failing it; else `LLMUnavailable`.

Retry-After: a wait is at least the provider's `Retry-After` (on a 429 or a 503). One
longer than `backoff_cap` is not waited out: the endpoint is given up at once for the
next in the chain (or the run's own retry, minutes later), since holding a worker for
longer than the cap is what the cap forbids.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import tenacity
from pydantic import BaseModel
from tenacity.stop import stop_base

from agents._context import AgentContext
from agents._errors import ProviderUnavailable
from agents.breaker import BreakerState, OpenGate, ProviderGate
from agents.llm._errors import LLMOutputInvalid, LLMRequestError, LLMTransientError, LLMUnavailable
from agents.llm._output import check, instruction, repair_turn
from agents.llm._prices import PriceTable
from agents.llm._types import Completion, Endpoint, TokenUsage
from agents.llm._wire import Reply, chat_body, estimate_tokens

T = TypeVar("T")
log = logging.getLogger("agents.llm")

# Told the number of content characters received so far, on each chunk that carried content.
ContentHook = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one request to an endpoint; the answer is a `Reply`, or the failure is raised."""

    endpoint: Endpoint
    body: dict[str, Any]
    on_content: ContentHook


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Flow = Generator[Send | Sleep, Any, T]


class Transport(Protocol):
    """Carries a request to a provider and turns what comes back into a `Reply` or one of
    the errors of `agents.llm._errors`, exactly as the other transports do."""

    def send(self, call: Send) -> Reply: ...

    async def asend(self, call: Send) -> Reply: ...


def _ignore(chars: int) -> None:
    """The content hook of a call made outside a run."""


@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, independent of the endpoint that will answer."""

    messages: list[dict[str, Any]]
    schema: type[BaseModel] | None
    stream: bool
    temperature: float | None
    max_tokens: int | None

    def prompt(self) -> list[dict[str, Any]]:
        """The messages with the schema instruction merged into the leading system message
        (several chat templates refuse a system message anywhere but first)."""
        if self.schema is None:
            return list(self.messages)
        note = instruction(self.schema)
        first = self.messages[0]
        if first.get("role") == "system" and isinstance(first.get("content"), str):
            merged = {**first, "content": f"{first['content']}\n\n{note['content']}"}
            return [merged, *self.messages[1:]]
        return [note, *self.messages]

    def body(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return chat_body(
            model, messages, stream=self.stream, temperature=self.temperature, max_tokens=self.max_tokens
        )


@dataclass
class _Tally:
    """What one call has spent so far, over retries, repair turns and endpoints."""

    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    estimated: bool = False
    requests: int = 0
    repairs: int = 0


def _check_options(max_retries: int, backoff_base: float, backoff_cap: float, max_repairs: int) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if isinstance(max_repairs, bool) or not isinstance(max_repairs, int) or max_repairs < 0:
        raise ValueError(f"max_repairs must be an integer >= 0, got {max_repairs!r}")
    if not (math.isfinite(backoff_base) and math.isfinite(backoff_cap) and 0 < backoff_base <= backoff_cap):
        raise ValueError(
            f"backoff needs 0 < backoff_base <= backoff_cap, got {backoff_base!r} and {backoff_cap!r}"
        )


class CallPolicy:
    """The chain and the options a call follows (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
        max_repairs: int,
        prices: PriceTable,
    ) -> None:
        if not endpoints:
            raise ValueError("a chat client needs at least one Endpoint")
        _check_options(max_retries, backoff_base, backoff_cap, max_repairs)
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.max_retries = max_retries
        self.backoff_cap = backoff_cap
        self.max_repairs = max_repairs
        self.prices = prices
        self._jitter = tenacity.wait_random_exponential(multiplier=backoff_base, max=backoff_cap)

    def flow(self, request: Request, ctx: AgentContext | None) -> Flow[Completion]:
        """The fallback chain (steps 1 and 5)."""
        gate: ProviderGate = ctx.breaker if ctx is not None else OpenGate()
        logger = _logger(ctx)
        tally = _Tally()
        skipped: list[ProviderUnavailable] = []
        failed: list[LLMTransientError] = []
        for endpoint in self.endpoints:
            try:
                return (yield from self._on_endpoint(endpoint, request, gate, ctx, tally))
            except ProviderUnavailable as e:
                logger.info("llm %s skipped: %s", _name(endpoint), e)
                skipped.append(e)
            except LLMTransientError as e:
                logger.warning("llm %s gave up after its retries: %s", _name(endpoint), e)
                failed.append(e)
        if skipped:
            raise min(skipped, key=lambda e: e.retry_in) from (failed[-1] if failed else None)
        raise LLMUnavailable(failed)

    def _on_endpoint(
        self,
        endpoint: Endpoint,
        request: Request,
        gate: ProviderGate,
        ctx: AgentContext | None,
        tally: _Tally,
    ) -> Flow[Completion]:
        """One endpoint: the request, then the repair turns (step 4)."""
        messages = request.prompt()
        turn = 0
        while True:
            reply = yield from self._retried(
                endpoint, request.body(endpoint.model, messages), gate, ctx, tally
            )
            self._account(endpoint, messages, reply, ctx, tally)
            if request.schema is None:
                return self._completion(endpoint, reply, tally, None)
            parsed, errors = check(reply.content, request.schema)
            if parsed is not None:
                return self._completion(endpoint, reply, tally, parsed)
            model = reply.model or endpoint.model
            if turn == self.max_repairs:
                raise LLMOutputInvalid(model, request.schema.__name__, errors, reply.content, turn + 1)
            turn += 1
            tally.repairs += 1
            _logger(ctx).info(
                "llm %s: the answer is not a valid %s (%s); repair turn %d of %d",
                _name(endpoint),
                request.schema.__name__,
                "; ".join(errors),
                turn,
                self.max_repairs,
            )
            messages = [*messages, *repair_turn(reply.content, errors, request.schema)]

    def _retried(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        gate: ProviderGate,
        ctx: AgentContext | None,
        tally: _Tally,
    ) -> Flow[Reply]:
        """One request with its retries (step 2): tenacity decides, the driver sleeps.

        tenacity's own loop sleeps inside itself; driving `Retrying.iter` by hand, as that
        loop does, lets the sleep be yielded to whichever driver runs the call."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(LLMTransientError),
            stop=tenacity.stop_after_attempt(self.max_retries + 1) | _RetryAfterPastCap(self.backoff_cap),
            wait=self._wait,
            reraise=True,
        )
        retrying.begin()
        state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
        while True:
            do = retrying.iter(state)
            if isinstance(do, tenacity.DoAttempt):
                try:
                    reply = yield from self._attempt(endpoint, body, gate, ctx, tally)
                except Exception as e:
                    state.set_exception((type(e), e, e.__traceback__))
                else:
                    state.set_result(reply)
            elif isinstance(do, tenacity.DoSleep):
                self._log_retry(endpoint, state, float(do), ctx)
                state.prepare_for_next_attempt()
                yield Sleep(float(do))
            else:
                return cast(Reply, do)

    def _attempt(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        gate: ProviderGate,
        ctx: AgentContext | None,
        tally: _Tally,
    ) -> Flow[Reply]:
        """One request, between the breaker's check and its verdict."""
        gate.check(endpoint.provider)  # ProviderUnavailable when open: not retried here
        tally.requests += 1
        try:
            reply: Reply = yield Send(endpoint, body, _heartbeats(ctx, endpoint))
        except LLMTransientError as e:
            if not e.outage:  # a 429 or a malformed answer: the provider is up
                _answered(gate, endpoint.provider)
            elif gate.failed(endpoint.provider):
                _opened_by(gate, endpoint.provider, e)  # this failure opened the breaker
            raise
        except LLMRequestError:
            _answered(gate, endpoint.provider)  # a 4xx is the request's fault, not an outage
            raise
        gate.succeeded(endpoint.provider)
        return reply

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Full jitter, capped; at least the provider's Retry-After."""
        jittered = float(self._jitter(state))
        after = _retry_after(state)
        return jittered if after is None else max(jittered, after)

    def _log_retry(
        self, endpoint: Endpoint, state: tenacity.RetryCallState, wait: float, ctx: AgentContext | None
    ) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        _logger(ctx).info(
            "llm %s: %s; retry %d of %d in %.2fs",
            _name(endpoint),
            error,
            state.attempt_number,
            self.max_retries,
            wait,
        )

    def _account(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, Any]],
        reply: Reply,
        ctx: AgentContext | None,
        tally: _Tally,
    ) -> None:
        """Step 3: the answer's usage, or an estimate, to the tally and to `ctx.usage`."""
        usage = reply.usage
        if usage is None:
            prompt = estimate_tokens("".join(str(m.get("content") or "") for m in messages))
            completion = estimate_tokens(reply.content)
            usage = TokenUsage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            )
            tally.estimated = True
        cost = self.prices.cost(reply.model or endpoint.model, usage.prompt_tokens, usage.completion_tokens)
        tally.usage = tally.usage.plus(usage)
        tally.cost_usd += cost
        if ctx is not None:
            ctx.usage(tokens=usage.total_tokens, cost_usd=cost)

    def _completion(
        self, endpoint: Endpoint, reply: Reply, tally: _Tally, parsed: BaseModel | None
    ) -> Completion:
        return Completion(
            text=reply.content,
            model=reply.model or endpoint.model,
            provider=endpoint.provider,
            usage=tally.usage,
            usage_estimated=tally.estimated,
            cost_usd=tally.cost_usd,
            finish_reason=reply.finish_reason,
            requests=tally.requests,
            repairs=tally.repairs,
            parsed=parsed,
        )


class _RetryAfterPastCap(stop_base):
    """Stop when the provider asks for a longer wait than `backoff_cap` allows."""

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        after = _retry_after(retry_state)
        return after is not None and after > self.cap_s


def _retry_after(state: tenacity.RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome is not None else None
    return error.retry_after if isinstance(error, LLMTransientError) else None


def _name(endpoint: Endpoint) -> str:
    return f"{endpoint.provider}/{endpoint.model}"


def _logger(ctx: AgentContext | None) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    return ctx.log if ctx is not None else log


def _heartbeats(ctx: AgentContext | None, endpoint: Endpoint) -> ContentHook:
    """Streamed content is progress: each chunk that carries some is a heartbeat."""
    if ctx is None:
        return _ignore

    def beat(chars: int) -> None:
        ctx.heartbeat("llm: streaming", chars=chars, model=endpoint.model)

    return beat


def _answered(gate: ProviderGate, provider: str) -> None:
    """The provider answered, though not with a usable completion (429, 4xx, malformed).

    While closed that says nothing of an outage (a 429 between two 500s must not reset the
    count). While half-open this call was the probe: the provider is up, so the breaker
    closes, instead of the probe's slot being held until it times out and the probe's own
    retry being refused by it."""
    if gate.state(provider) is not BreakerState.CLOSED:
        gate.succeeded(provider)


def _opened_by(gate: ProviderGate, provider: str, error: LLMTransientError) -> None:
    """The failure that opened (or reopened) a provider's breaker is an outage, not this
    run's failure: raise the breaker's `ProviderUnavailable`, so the worker defers the run
    (a run allowed one attempt must not die of the outage the fleet just detected)."""
    try:
        gate.check(provider)
    except ProviderUnavailable as unavailable:
        raise unavailable from error
