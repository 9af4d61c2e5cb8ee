"""The morning digest (a cron agent): fetch the newest orders, have the LLM summarise them.

Two durable steps. `fetch` reads the rows and `summarise` asks the LLM; each result is
recorded when it completes, so a retried run summarises the rows its first attempt read (not
the table as it is by then) and never pays twice for a summary it already has.

Offline by default: the LLM is a `ScriptedLLM` whose answer is computed from the prompt. Set
NIGHTOWL_LLM_BASE_URL (and NIGHTOWL_LLM_API_KEY) to ask a real OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from agents import AgentContext, Budget, CronTick, agent
from agents.llm import Message, ScriptedLLM, llm_from_env
from examples.world import newest_orders

ROWS = 10
SYSTEM = "You write a three-line morning digest of an online shop's orders for its owner."


def scripted_summary(messages: list[dict[str, Any]]) -> str:
    """The offline model's summary, computed from the orders in the prompt."""
    asked = next(m["content"] for m in messages if m["role"] == "user")
    orders = json.loads(asked.split("\n", 1)[1])
    total = sum(o["total"] for o in orders)
    largest = max(orders, key=lambda o: o["total"])
    count = f"{len(orders)} new order{'s' if len(orders) > 1 else ''}"
    return f"{count} worth {total:.2f} in all. Largest: {largest['customer']} ({largest['total']:.2f})."


llm = llm_from_env(ScriptedLLM(default=scripted_summary, model="gpt-4o-mini"), model="gpt-4o-mini")


@agent(
    "morning-digest",
    timeout=timedelta(minutes=5),
    heartbeat_timeout=timedelta(seconds=30),
    budget=Budget(tokens=20_000, cost_usd=0.05, max_steps=2),
)
def morning_digest(ctx: AgentContext, event: CronTick) -> dict[str, Any]:
    rows = ctx.step("fetch", newest_orders, ROWS)
    ctx.heartbeat("fetched the orders", rows=len(rows))
    slot = f"{event.scheduled_for:%Y-%m-%dT%H:%M:%S}"
    if not rows:
        return {"slot": slot, "orders": 0, "summary": "No orders yet."}
    prompt = [Message.system(SYSTEM), Message.user("Summarise these orders:\n" + json.dumps(rows))]
    summary = llm.complete(ctx, prompt, step="summarise")
    ctx.heartbeat("summarised", tokens=summary.usage.total_tokens)
    ctx.outbox.put("cache", f"digest:{slot}", {"summary": summary.text, "orders": len(rows)})
    return {"slot": slot, "orders": len(rows), "summary": summary.text}
