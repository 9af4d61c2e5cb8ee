"""The four example agents of examples/, each tested as a user would test theirs: with
`agents.testing.AgentEnvironment` only. Their LLM is replaced by a fresh `ScriptedLLM` (the
same scripted answers, counted from zero) and their tools by plain functions, so nothing here
needs a database, a Redis or a worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents import BreakerPolicy, BreakerState, LocalBreaker, OutboxWrite, StepDiverged
from agents.llm import Failure, LLMOutputInvalid, ScriptedLLM
from agents.testing import AgentEnvironment, cron_tick, metric_alert, queue_depth, row_change
from examples import backlog, digest, incident, order_triage

SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SINKS = ["decisions", "cache", "events", "audit", "memory"]  # what examples/demo.py registers
ORDERS = [
    {"id": 3, "customer": "customer-03", "total": 120.0},
    {"id": 2, "customer": "customer-02", "total": 30.5},
]


def _not_called(*args: Any) -> Any:
    raise AssertionError(f"a replayed step's function ran again with {args!r}")


@pytest.fixture
def digest_llm(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    llm = ScriptedLLM(default=digest.scripted_summary, model="gpt-4o-mini")
    monkeypatch.setattr(digest, "llm", llm)
    monkeypatch.setattr(digest, "newest_orders", lambda limit: ORDERS[:limit])
    return llm


@pytest.fixture
def triage_llm(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    llm = ScriptedLLM(default=order_triage.scripted_triage, provider="scripted-triage", model="gpt-4o-mini")
    monkeypatch.setattr(order_triage, "llm", llm)
    return llm


@pytest.fixture
def incident_llm(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    llm = ScriptedLLM(default=incident.scripted_answer, model="gpt-4o-mini")
    monkeypatch.setattr(incident, "llm", llm)
    monkeypatch.setattr(incident, "metric_history", lambda name: [12.0, 18.5, 28.0])
    monkeypatch.setattr(incident, "search_logs", lambda query, since: ["ERROR pool exhausted"])
    return llm


# -- the morning digest (cron) ---------------------------------------------------------------


def test_the_digest_fetches_then_summarises_in_two_recorded_steps(digest_llm: ScriptedLLM) -> None:
    out = AgentEnvironment(sinks=SINKS).run(digest.morning_digest, cron_tick("digest", scheduled_for=SLOT))
    assert out.status == "succeeded", out.error
    summary = "2 new orders worth 150.50 in all. Largest: customer-03 (120.00)."
    assert out.result == {"slot": "2026-03-02T07:00:00", "orders": 2, "summary": summary}
    assert [s.name for s in out.steps] == ["fetch", "summarise"] and out.steps[0].result == ORDERS
    written = {"summary": summary, "orders": 2}
    assert out.outbox == [OutboxWrite("cache", "digest:2026-03-02T07:00:00", written)]
    assert [note for note, _ in out.heartbeats] == ["fetched the orders", "summarised"]
    assert len(digest_llm.calls) == 1
    assert out.usage.tokens == out.steps[1].usage["tokens"] > 0
    assert out.usage.cost_usd > 0  # priced as gpt-4o-mini


def test_a_retried_digest_replays_both_steps_without_reading_or_asking_again(
    digest_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = AgentEnvironment().run(digest.morning_digest, cron_tick("digest", scheduled_for=SLOT))
    monkeypatch.setattr(digest, "newest_orders", _not_called)  # the table has changed since
    retry = AgentEnvironment(attempt=2, steps=first.steps).run(
        digest.morning_digest, cron_tick("digest", scheduled_for=SLOT)
    )
    assert retry.status == "succeeded" and retry.replayed == 2 and retry.steps == []
    assert retry.result == first.result and len(digest_llm.calls) == 1  # the first attempt's call only
    assert retry.usage.tokens == 0 and retry.run_usage.tokens == first.usage.tokens


def test_a_digest_of_no_orders_asks_no_llm(digest_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest, "newest_orders", lambda limit: [])
    out = AgentEnvironment().run(digest.morning_digest, cron_tick(scheduled_for=SLOT))
    assert out.result["orders"] == 0 and out.outbox == [] and digest_llm.calls == []


# -- order triage (db_change) ------------------------------------------------------------------


def _order(total: float) -> Any:
    return row_change("demo_orders", key=7, row={"id": 7, "customer": "customer-07", "total": total})


def test_triage_writes_the_validated_decision_to_every_store_through_the_outbox(
    triage_llm: ScriptedLLM,
) -> None:
    out = AgentEnvironment(sinks=SINKS).run(order_triage.order_triage, _order(360.0))
    assert out.status == "succeeded", out.error
    assert out.result == {"order": 7, "priority": "urgent", "fraud_review": True}
    assert [(w.sink, w.key) for w in out.outbox] == [(sink, "order:7") for sink in SINKS]
    decision = out.outbox[0].value
    assert decision == {
        "order": 7,
        "customer": "customer-07",
        "priority": "urgent",
        "fraud_review": True,
        "reason": "an order of 360.00",
    }
    assert out.outbox[2].value["type"] == "order_triaged"
    assert out.outbox[3].value == {**decision, "run": "test-run", "attempt": 1}
    assert out.outbox[4].value["vector"] == [0.72, 1.0, 1.0]
    (step,) = out.steps
    assert step.name == "classify"
    assert step.result["parsed"] == {k: decision[k] for k in order_triage.Triage.model_fields}
    assert len(triage_llm.calls) == 1


def test_an_off_schema_answer_is_repaired_once_then_fails_without_writing_anything(
    triage_llm: ScriptedLLM,
) -> None:
    triage_llm.push(Failure.off_schema({"priority": "whenever"}))
    repaired = AgentEnvironment().run(order_triage.order_triage, _order(20.0))
    assert repaired.status == "succeeded" and repaired.result["priority"] == "low"
    assert len(triage_llm.calls) == 2  # the answer, and the repair turn quoting its errors
    repair = triage_llm.calls[1]["messages"][-1]["content"]
    assert "priority: Input should be 'low', 'normal' or 'urgent'" in repair

    triage_llm.push(Failure.off_schema(), Failure.off_schema())
    broken = AgentEnvironment().run(order_triage.order_triage, _order(20.0))
    assert broken.status == "failed" and isinstance(broken.error, LLMOutputInvalid)
    assert broken.outbox == [] and broken.steps == []


def test_a_provider_outage_opens_the_breaker_defers_triage_and_a_probe_closes_it(
    triage_llm: ScriptedLLM,
) -> None:
    # Given a provider that answers 503 three times, and a breaker that opens at 3 failures
    now = [0.0]
    breaker = LocalBreaker(BreakerPolicy(failures=3, window_s=60, open_for_s=30), clock=lambda: now[0])
    env = AgentEnvironment(breaker=breaker)
    triage_llm.push(*[Failure.server_error(503)] * 3)

    # When triage runs during the outage: the third failure opens the breaker mid-call
    first = env.run(order_triage.order_triage, _order(100.0))
    assert first.status == "waiting/provider_unavailable" and first.outbox == []
    assert len(triage_llm.calls) == 3 and breaker.state("scripted-triage") is BreakerState.OPEN
    # and while it is open, a run is deferred without a request
    assert env.run(order_triage.order_triage, _order(100.0)).status == "waiting/provider_unavailable"
    assert len(triage_llm.calls) == 3

    # Then after the open period one run probes the provider, which is back: it closes
    now[0] += 30
    assert breaker.state("scripted-triage") is BreakerState.HALF_OPEN
    probe = env.run(order_triage.order_triage, _order(100.0))
    assert probe.status == "succeeded" and len(probe.outbox) == len(SINKS)
    assert breaker.state("scripted-triage") is BreakerState.CLOSED
    assert breaker.transitions == [
        ("scripted-triage", BreakerState.OPEN),
        ("scripted-triage", BreakerState.CLOSED),
    ]


# -- the backlog responder (queue_depth) -------------------------------------------------------


@pytest.fixture
def backlog_llm(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    llm = ScriptedLLM(default=backlog.scripted_drafts, model="gpt-4o-mini")
    monkeypatch.setattr(backlog, "llm", llm)
    monkeypatch.setattr(backlog, "take_inbox", lambda limit: ["mail-1-a", "mail-1-b"])
    return llm


def test_the_backlog_responder_drafts_a_reply_per_message_it_took(backlog_llm: ScriptedLLM) -> None:
    out = AgentEnvironment(sinks=SINKS).run(backlog.backlog_responder, queue_depth("inbox", depth=8))
    assert out.status == "succeeded", out.error
    assert out.result == {"state": "firing", "depth": 8, "drafted": 2}
    assert [s.name for s in out.steps] == ["take", "draft"]
    assert out.steps[0].result == ["mail-1-a", "mail-1-b"]
    assert out.outbox == [
        OutboxWrite(
            "events",
            f"reply:{m}",
            {"type": "reply_drafted", "message": m, "reply": f"Thanks for {m}: we are on it."},
        )
        for m in ("mail-1-a", "mail-1-b")
    ]
    assert len(backlog_llm.calls) == 1


def test_a_resolved_backlog_or_an_empty_inbox_asks_no_llm(
    backlog_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = AgentEnvironment().run(backlog.backlog_responder, queue_depth(state="resolved", depth=2))
    assert resolved.result == {"state": "resolved", "depth": 2} and resolved.steps == []
    monkeypatch.setattr(backlog, "take_inbox", lambda limit: [])
    empty = AgentEnvironment().run(backlog.backlog_responder, queue_depth(depth=8))
    assert empty.result["drafted"] == 0 and [s.name for s in empty.steps] == ["take"]
    assert backlog_llm.calls == []


def test_a_backlog_run_that_spent_its_budget_takes_no_messages(backlog_llm: ScriptedLLM) -> None:
    assert backlog.backlog_responder.spend_cap is not None  # and a fleet-wide cap per hour
    out = AgentEnvironment(usage_before={"tokens": 20_001}).run(backlog.backlog_responder, queue_depth())
    assert out.status == "budget_exceeded/tokens" and out.steps == [] and backlog_llm.calls == []


# -- the incident investigator (metric) ---------------------------------------------------------

ALERT = metric_alert("demo-gauge", value=28.0, threshold=20.0, since=SLOT)


def test_the_investigator_works_through_four_steps_with_a_heartbeat_before_each(
    incident_llm: ScriptedLLM,
) -> None:
    out = AgentEnvironment(sinks=SINKS).run(incident.incident_investigator, ALERT)
    assert out.status == "succeeded", out.error
    assert [s.name for s in out.steps] == ["metrics", "hypothesise", "logs", "conclude"]
    assert [(d["step"], note) for note, d in out.heartbeats] == [
        (1, "reading the metric"),
        (2, "forming a hypothesis"),
        (3, "searching the logs"),
        (4, "concluding"),
    ]
    assert out.result["severity"] == "critical" and out.result["resumed_after"] == []
    cause = "demo-gauge went from 12.0 to 28.0: a periodic load spike. Logs: 1 matching lines."
    assert out.result["cause"] == cause
    assert [(w.sink, w.key) for w in out.outbox] == [
        ("audit", "incident:demo-gauge:20260302T070000"),
        ("events", "incident:demo-gauge:20260302T070000"),
    ]
    assert len(incident_llm.calls) == 2


def test_a_killed_investigation_resumes_from_its_recorded_steps(
    incident_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first attempt that dies after its second step (the log store times out)
    def timing_out(query: str, since: datetime) -> list[str]:
        raise TimeoutError("the log store did not answer within 10 s")

    monkeypatch.setattr(incident, "search_logs", timing_out)
    first = AgentEnvironment().run(incident.incident_investigator, ALERT)
    assert first.status == "failed" and isinstance(first.error, TimeoutError)
    assert [s.name for s in first.steps] == ["metrics", "hypothesise"] and len(incident_llm.calls) == 1

    # When the run's next attempt starts with the steps the first one recorded
    monkeypatch.setattr(incident, "metric_history", _not_called)
    monkeypatch.setattr(incident, "search_logs", lambda query, since: ["ERROR pool exhausted"])
    retry = AgentEnvironment(attempt=2, steps=first.steps, previous_heartbeat=first.last_heartbeat)
    second = retry.run(incident.incident_investigator, ALERT)

    # Then steps 1-2 replay (no tool call, no LLM call, no charge) and only 3-4 run
    assert second.status == "succeeded", second.error
    assert second.replayed == 2 and second.result["resumed_after"] == ["metrics", "hypothesise"]
    assert [(s.seq, s.name, s.attempt) for s in second.steps] == [(3, "logs", 2), (4, "conclude", 2)]
    assert len(incident_llm.calls) == 2  # the first attempt's hypothesis, the retry's conclusion
    assert second.run_usage.tokens == first.usage.tokens + second.usage.tokens
    assert "INFO attempt 2 resumes: steps ['metrics', 'hypothesise'] replay from the record" in second.logs


def test_recorded_steps_in_another_order_fail_the_run_naming_both(incident_llm: ScriptedLLM) -> None:
    out = AgentEnvironment(steps=[("logs", [])]).run(incident.incident_investigator, ALERT)
    assert out.status == "failed" and isinstance(out.error, StepDiverged)
    assert "'metrics'" in str(out.error) and "'logs'" in str(out.error) and incident_llm.calls == []


def test_a_resolved_alert_needs_no_investigation(incident_llm: ScriptedLLM) -> None:
    out = AgentEnvironment().run(incident.incident_investigator, metric_alert("demo-gauge", state="resolved"))
    assert out.result == {"metric": "demo-gauge", "state": "resolved"} and out.steps == []
