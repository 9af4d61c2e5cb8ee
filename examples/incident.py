"""The incident investigator (a metric agent): when a metric leaves its bounds, work out why,
in four durable steps with a progress heartbeat before each:

1. `metrics`     read the metric's recent history (a tool call),
2. `hypothesise` ask the LLM what the shape of it suggests,
3. `logs`        search the logs of the window (a tool call),
4. `conclude`    ask the LLM for a `Finding` (validated) from all of it.

An investigation is slow, billed and non-deterministic, and its process can die half-way (a
deploy, an OOM kill, a flaky tool). Each completed step is recorded, so the next attempt of the
run replays steps it already has, without calling the tool or the LLM again, and carries on
from the first step it lacks. In the demo the log store times out on each incident's first
search: watch the retry replay steps 1-2 and finish.

The agent's own decisions (which steps to take, the outbox writes) stay outside the steps: from
the same recorded inputs they come out the same on every attempt.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel

from agents import AgentContext, Budget, MetricAlert, agent
from agents.llm import Message, ScriptedLLM, llm_from_env
from examples.world import metric_history, search_logs

SYSTEM = "You are an on-call engineer investigating an alert. Be specific and brief."


class Finding(BaseModel):
    cause: str
    severity: Literal["low", "high", "critical"]
    next_action: str


def scripted_answer(messages: list[dict[str, Any]]) -> str | Finding:
    """The offline model: a hypothesis from the readings, or a `Finding` (the call with
    `schema=` asks for one) rated by how far the peak went past the threshold."""
    asked = next(m["content"] for m in messages if m["role"] == "user")  # not a repair turn
    facts = json.loads(asked.split("\n", 1)[1])
    if not asked.startswith("Conclude"):
        readings = facts["readings"] or [facts["value"] or 0.0]
        return f"{facts['metric']} went from {min(readings)} to {max(readings)}: a periodic load spike."
    ratio = (facts["value"] or 0.0) / facts["threshold"] if facts["threshold"] else 1.0
    severity: Literal["low", "high", "critical"] = "low"
    if ratio >= 1.1:
        severity = "critical" if ratio >= 1.4 else "high"
    return Finding(
        cause=f"{facts['hypothesis']} Logs: {len(facts['logs'])} matching lines.",
        severity=severity,
        next_action="scale out the batch-export workers" if facts["logs"] else "watch it",
    )


llm = llm_from_env(ScriptedLLM(default=scripted_answer, model="gpt-4o-mini"), model="gpt-4o-mini")


@agent(
    "incident-investigator",
    version="investigator-2",
    timeout=timedelta(minutes=10),
    progress_timeout=timedelta(minutes=2),
    max_attempts=3,
    retry_backoff=timedelta(seconds=5),  # the first retry within 5 s (full jitter)
    budget=Budget(tokens=50_000, cost_usd=0.25, max_steps=4),
)
def incident_investigator(ctx: AgentContext, event: MetricAlert) -> dict[str, Any]:
    if event.state == "resolved":  # with on_resolve=True: nothing left to investigate
        return {"metric": event.name, "state": "resolved"}
    resumed = [s.name for s in ctx.recorded_steps()]
    if resumed:
        ctx.log.info("attempt %d resumes: steps %s replay from the record", ctx.attempt, resumed)
    value = None if event.value is None else round(event.value, 2)
    facts: dict[str, Any] = {"metric": event.name, "value": value, "threshold": event.threshold}

    ctx.heartbeat("reading the metric", step=1, of=4)
    facts["readings"] = ctx.step("metrics", metric_history, event.name)
    ctx.heartbeat("forming a hypothesis", step=2, of=4)
    prompt = [Message.system(SYSTEM), Message.user("Hypothesise from:\n" + json.dumps(facts))]
    facts["hypothesis"] = llm.complete(ctx, prompt, step="hypothesise").text
    ctx.heartbeat("searching the logs", step=3, of=4)
    facts["logs"] = ctx.step("logs", search_logs, event.name, event.since)
    ctx.heartbeat("concluding", step=4, of=4)
    prompt = [Message.system(SYSTEM), Message.user("Conclude from:\n" + json.dumps(facts))]
    finding = llm.structured(ctx, prompt, Finding, step="conclude")

    key = f"incident:{event.name}:{event.since:%Y%m%dT%H%M%S}"
    ctx.outbox.put("audit", key, {"metric": event.name, "value": value, **finding.model_dump()})
    ctx.outbox.put("events", key, {"type": "incident_finding", **finding.model_dump()})
    return {"metric": event.name, "value": value, **finding.model_dump(), "resumed_after": resumed}
