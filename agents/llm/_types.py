"""The values a chat call takes and returns: endpoints, messages, completions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agents._context import AgentContext
from agents._steps import StepDiverged

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, init=False, eq=True)
class Endpoint:
    """One model at one OpenAI-compatible server: a link of the fallback chain.

    `provider` names the server for the circuit breaker (default: the URL's host[:port]),
    so two models on one server share a breaker, as they share its outages. The key is a
    `SecretStr` and appears in no repr, log line or error message.
    """

    base_url: str
    model: str
    api_key: SecretStr | None
    provider: str

    def __init__(
        self, base_url: str, model: str, api_key: SecretStr | str | None = None, provider: str | None = None
    ) -> None:
        if not model:
            raise ValueError("Endpoint needs a model name")
        url = httpx.URL(base_url)
        if provider is None:
            if not url.host:
                raise ValueError(f"Endpoint base_url {_masked(url)!r} has no host: pass provider=")
            provider = url.host if url.port is None else f"{url.host}:{url.port}"
        key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        object.__setattr__(self, "base_url", base_url.rstrip("/"))
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "api_key", key)
        object.__setattr__(self, "provider", provider)

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def with_model(self, model: str) -> Endpoint:
        """The same server and key, another model (a fallback on the same provider)."""
        return Endpoint(self.base_url, model, self.api_key, self.provider)

    def __repr__(self) -> str:
        return (
            f"Endpoint(base_url={_masked(httpx.URL(self.base_url))!r}, model={self.model!r}, "
            f"provider={self.provider!r}, api_key={'set' if self.api_key else None})"
        )


_MASK = "***"


def _masked(url: httpx.URL) -> str:
    """The URL without a password, should one have been put in it."""
    return str(url.copy_with(password=_MASK)) if url.password else str(url)


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message; plain dicts in the wire shape work as well."""

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls("assistant", content)


Messages = str | Sequence[Message | Mapping[str, Any]]


def wire_messages(messages: Messages) -> list[dict[str, Any]]:
    """The messages as the wire carries them; a str is one user message."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        item = {"role": m.role, "content": m.content} if isinstance(m, Message) else dict(m)
        if not isinstance(item.get("role"), str):
            raise ValueError(f"message {i} has no role: {item!r}")
        out.append(item)
    if not out:
        raise ValueError("a chat call needs at least one message")
    return out


class TokenUsage(BaseModel):
    """Tokens a call used, as the provider counted them (or as estimated: see Completion)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def plus(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class Completion(BaseModel):
    """What one `complete` call produced.

    `usage` and `cost_usd` sum every request the call made (repair turns included: they
    were billed); `usage_estimated` is True when some answer carried no usage and its
    tokens were estimated at four characters a token. `parsed` is the validated `schema=`
    instance: it is not stored, and a replay rebuilds it from the recorded JSON.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    provider: str
    usage: TokenUsage = TokenUsage()
    usage_estimated: bool = False
    cost_usd: float = 0.0
    finish_reason: str | None = None
    requests: int = 1  # HTTP requests made: retries and repair turns included
    repairs: int = 0
    parsed: BaseModel | None = Field(default=None, exclude=True)

    def to_record(self) -> dict[str, Any]:
        """The JSON a durable step records."""
        record = self.model_dump(mode="json")
        record["parsed"] = None if self.parsed is None else self.parsed.model_dump(mode="json")
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], schema: type[BaseModel] | None) -> Completion:
        """The completion a step recorded, `parsed` rebuilt with `schema`."""
        data = dict(record)
        stored = data.pop("parsed", None)
        completion = cls.model_validate(data)
        if schema is None:
            return completion
        if stored is None:
            raise StepDiverged(
                f"the recorded LLM answer has no parsed {schema.__name__}: it was recorded by a call "
                "without schema=; start a new run instead of retrying this one"
            )
        try:
            parsed = schema.model_validate(stored)
        except ValidationError as e:
            raise StepDiverged(
                f"the recorded LLM answer no longer validates as {schema.__name__} ({e.error_count()} "
                "error(s)): the schema changed since it was recorded; start a new run"
            ) from e
        return completion.model_copy(update={"parsed": parsed})


class ChatClient(Protocol):
    """What agents call: `LLM` (HTTP) and `ScriptedLLM` (tests, the offline demo) both are."""

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
    ) -> Completion: ...

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
    ) -> Completion: ...

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
    ) -> M: ...

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
    ) -> M: ...
