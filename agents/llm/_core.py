"""`ChatCore`: the chat API both clients share, and the two drivers that run a call.

Inside a run (`ctx` given) a whole call, retries, fallbacks and repair turns included, is
one `ctx.step`: its result is the Completion as JSON, so a later attempt of the run
replays the answer without a request and without a charge. The call itself is the
generator of `_call.py`; `_drive` runs it blocking, `_adrive` on the event loop, and
these two loops are the only code that differs between `complete` and `acomplete`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from agents._context import AgentContext
from agents.llm._call import CallPolicy, Flow, Request, Sleep, Transport
from agents.llm._errors import LLMError
from agents.llm._prices import PriceTable
from agents.llm._types import Completion, Endpoint, M, Messages, wire_messages

T = TypeVar("T")


class ChatCore:
    """A chat client over a `Transport`: `LLM` and `ScriptedLLM` are this with theirs."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        transport: Transport,
        *,
        max_retries: int,
        backoff_base: float,
        backoff_cap: float,
        max_repairs: int,
        prices: PriceTable,
        sleep: Callable[[float], object],
    ) -> None:
        self._policy = CallPolicy(
            endpoints,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_repairs=max_repairs,
            prices=prices,
        )
        self.endpoints = self._policy.endpoints
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoints={list(self.endpoints)!r})"

    # -- the public calls ------------------------------------------------------------

    def complete(
        self,
        ctx: AgentContext | None,
        messages: Messages,
        *,
        schema: type[BaseModel] | None = None,
        step: str | None = None,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """One chat call; inside a run (`ctx` given) a durable step named `step` (default
        `llm:<model>`) that a later attempt replays instead of calling again."""
        request = Request(wire_messages(messages), schema, stream, temperature, max_tokens)
        if ctx is None:
            return self._drive(self._policy.flow(request, None))
        record = ctx.step(step or self._step_name(), self._recorded, request, ctx)
        return Completion.from_record(record, schema)

    async def acomplete(
        self,
        ctx: AgentContext | None,
        messages: Messages,
        *,
        schema: type[BaseModel] | None = None,
        step: str | None = None,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """`complete` for async agents."""
        request = Request(wire_messages(messages), schema, stream, temperature, max_tokens)
        if ctx is None:
            return await self._adrive(self._policy.flow(request, None))
        record = await ctx.step(step or self._step_name(), self._arecorded, request, ctx)
        return Completion.from_record(record, schema)

    def structured(
        self,
        ctx: AgentContext | None,
        messages: Messages,
        schema: type[M],
        *,
        step: str | None = None,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> M:
        """The answer as a validated `schema` instance."""
        completion = self.complete(
            ctx,
            messages,
            schema=schema,
            step=step,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        return _parsed(completion, schema)

    async def astructured(
        self,
        ctx: AgentContext | None,
        messages: Messages,
        schema: type[M],
        *,
        step: str | None = None,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> M:
        """`structured` for async agents."""
        completion = await self.acomplete(
            ctx,
            messages,
            schema=schema,
            step=step,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        return _parsed(completion, schema)

    def _step_name(self) -> str:
        return f"llm:{self.endpoints[0].model}"

    def _recorded(self, request: Request, ctx: AgentContext) -> dict[str, Any]:
        return self._drive(self._policy.flow(request, ctx)).to_record()

    async def _arecorded(self, request: Request, ctx: AgentContext) -> dict[str, Any]:
        return (await self._adrive(self._policy.flow(request, ctx))).to_record()

    # -- the drivers: the only code that differs between sync and async -------------

    def _drive(self, flow: Flow[T]) -> T:
        outcome: Any = None
        error: Exception | None = None
        while True:
            try:
                action = flow.send(outcome) if error is None else flow.throw(error)
            except StopIteration as done:
                return cast(T, done.value)
            outcome, error = None, None
            try:
                if isinstance(action, Sleep):
                    self._sleep(action.seconds)
                else:
                    outcome = self._transport.send(action)
            except Exception as e:
                error = e

    async def _adrive(self, flow: Flow[T]) -> T:
        outcome: Any = None
        error: Exception | None = None
        while True:
            try:
                action = flow.send(outcome) if error is None else flow.throw(error)
            except StopIteration as done:
                return cast(T, done.value)
            outcome, error = None, None
            try:
                if isinstance(action, Sleep):
                    await self._asleep(action.seconds)
                else:
                    outcome = await self._transport.asend(action)
            except Exception as e:
                error = e

    async def _asleep(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            await asyncio.sleep(seconds)
            return
        waited = self._sleep(seconds)
        if inspect.isawaitable(waited):
            await cast(Awaitable[object], waited)

    # -- the call ---------------------------------------------------------------------


def _parsed(completion: Completion, schema: type[M]) -> M:
    if not isinstance(completion.parsed, schema):
        raise LLMError(f"the completion carries no parsed {schema.__name__}")
    return completion.parsed
