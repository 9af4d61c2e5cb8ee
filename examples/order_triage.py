"""Order triage (a db_change agent): classify each new order, and record the decision in five
stores at once through the outbox.

The LLM's answer must validate against `Triage` (a pydantic model): an answer that does not is
sent back once with the validation errors (a repair turn), and is a failure after that, never a
silent success. The call is a durable step (`classify`), so a redelivered run reuses the
decision it already paid for instead of asking again (and perhaps getting another answer).

The decision goes through `ctx.outbox`, never straight to the stores: the SQL table, the cache,
the event stream, the audit log and the vector memory get it all together with the run's
success, or not at all, each exactly once (`nightowl outbox status`).

Offline by default (a `ScriptedLLM` that decides from the order's total); in the demo its
provider goes down for a while now and then, so the circuit breaker has something to do.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents import AgentContext, Budget, RowChange, agent
from agents.llm import Message, ScriptedLLM, llm_from_env
from examples.world import with_outage

PRIORITIES = ("low", "normal", "urgent")
SYSTEM = "You triage a web shop's new orders: how soon must a human look at this one, and why?"


class Triage(BaseModel):
    """The decision the LLM must give for each order."""

    priority: Literal["low", "normal", "urgent"]
    fraud_review: bool
    reason: str = Field(max_length=200)


def scripted_triage(messages: list[dict[str, Any]]) -> Triage:
    """The offline model's decision, from the order in the prompt."""
    asked = next(m["content"] for m in messages if m["role"] == "user")  # not a repair turn
    order = json.loads(asked.removeprefix("Order: "))
    total = float(order["total"])
    priority = "urgent" if total >= 250 else "low" if total < 50 else "normal"
    return Triage(priority=priority, fraud_review=total >= 350, reason=f"an order of {total:.2f}")


llm = llm_from_env(
    ScriptedLLM(default=with_outage(scripted_triage), provider="scripted-triage", model="gpt-4o-mini"),
    model="gpt-4o-mini",
)


@agent(
    "order-triage",
    timeout=timedelta(minutes=2),
    heartbeat_timeout=timedelta(seconds=30),
    budget=Budget(tokens=4_000, max_steps=1),
)
def order_triage(ctx: AgentContext, event: RowChange) -> dict[str, Any]:
    order = event.row
    assert isinstance(order, dict)  # one row per run (the trigger does not batch)
    prompt = [Message.system(SYSTEM), Message.user(f"Order: {json.dumps(order)}")]
    decision = llm.structured(ctx, prompt, Triage, step="classify")
    key = f"order:{event.key}"
    fact = {"order": event.key, "customer": order["customer"], **decision.model_dump()}
    ctx.outbox.put("decisions", key, fact)
    ctx.outbox.put("cache", key, fact)
    ctx.outbox.put("events", key, {"type": "order_triaged", **fact})
    ctx.outbox.put("audit", key, {**fact, "run": ctx.run_id, "attempt": ctx.attempt})
    features = [
        float(order["total"]) / 500,
        PRIORITIES.index(decision.priority) / 2,
        float(decision.fraud_review),
    ]
    ctx.outbox.put("memory", key, {"vector": features, **fact})
    return {"order": event.key, "priority": decision.priority, "fraud_review": decision.fraud_review}
