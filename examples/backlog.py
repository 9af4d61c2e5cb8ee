"""The backlog responder (a queue_depth agent): when the inbox backs up, take what is waiting
and have the LLM draft a reply to each message.

Taking the messages is a durable step (`take`): a retry of the run drafts replies to the
messages its first attempt took (they are gone from the queue by then) instead of taking
others. The drafts go to the event stream through the outbox, with the run's success.

A run also wakes when the backlog has cleared (`state="resolved"`, with `on_resolve=True`):
nothing to draft then, and no LLM call.

Budget and spend cap, as an owner would set them on an agent that wakes on someone else's
traffic: each run may use 20k tokens in at most two steps, and the agent $0.50 an hour across
the whole fleet; past that, new runs wait for the next hour (`waiting_for=spend_cap`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agents import AgentContext, Budget, QueueDepth, SpendCap, agent
from agents.llm import Message, ScriptedLLM, llm_from_env
from examples.world import take_inbox

BATCH = 50
SYSTEM = "You answer a support inbox: one short, friendly reply per message."


class Reply(BaseModel):
    message: str
    reply: str


class Drafts(BaseModel):
    replies: list[Reply]


def scripted_drafts(messages: list[dict[str, Any]]) -> Drafts:
    """The offline model's drafts: one per message in the prompt."""
    asked = next(m["content"] for m in messages if m["role"] == "user")  # not a repair turn
    inbox = json.loads(asked.split("\n", 1)[1])
    return Drafts(replies=[Reply(message=m, reply=f"Thanks for {m}: we are on it.") for m in inbox])


llm = llm_from_env(ScriptedLLM(default=scripted_drafts, model="gpt-4o-mini"), model="gpt-4o-mini")


@agent(
    "backlog-responder",
    timeout=timedelta(minutes=5),
    budget=Budget(tokens=20_000, max_steps=2),
    spend_cap=SpendCap(cost_usd=0.50, per=timedelta(hours=1)),
)
def backlog_responder(ctx: AgentContext, event: QueueDepth) -> dict[str, Any]:
    if event.state == "resolved":
        return {"state": "resolved", "depth": event.depth}
    inbox = ctx.step("take", take_inbox, BATCH)
    ctx.heartbeat("took messages", count=len(inbox))
    if not inbox:  # another run got there first
        return {"state": "firing", "depth": event.depth, "drafted": 0}
    prompt = [Message.system(SYSTEM), Message.user("Messages:\n" + json.dumps(inbox))]
    drafts = llm.structured(ctx, prompt, Drafts, step="draft")
    for d in drafts.replies:
        ctx.outbox.put("events", f"reply:{d.message}", {"type": "reply_drafted", **d.model_dump()})
    return {"state": "firing", "depth": event.depth, "drafted": len(drafts.replies)}
