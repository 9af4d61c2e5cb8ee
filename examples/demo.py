"""The demo trigger module `make demo` loads: cron triggers firing every few seconds."""

from __future__ import annotations

from datetime import timedelta

from agents import AgentContext, CronTick, agent
from triggers import cron


@agent("summarise", timeout=timedelta(minutes=1), heartbeat_timeout=timedelta(seconds=15))
def summarise(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """Stands in for an LLM call: reports what it would summarise for its slot."""
    ctx.heartbeat("collected items", count=3)
    ctx.usage(tokens=120, tool_calls=1)
    return {"slot": event.scheduled_for.isoformat(), "items": 3, "attempt": ctx.attempt}


@agent("tidy-up")
def tidy_up(ctx: AgentContext, event: CronTick) -> dict[str, object]:
    """A second agent on its own schedule."""
    return {"tidied": True, "trigger": event.trigger}


cron("*/5 * * * * *", agent=summarise, name="every-5s")
cron("*/10 * * * * *", agent=tidy_up, name="every-10s", overlap="allow")
