"""`nightowl agents run NAME --event JSON`: one attempt in-process, what it captured, the exit
code. No service: the command runs the agent under AgentEnvironment."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agents import event_to_json
from agents._spec import forget_module as forget_agents
from agents.testing import cron_tick
from tests.helpers import Cli
from triggers.abc import forget_module as forget_triggers

MODULE = "tests.fixtures.env_agents"
CAPTURED_KEYS = {
    "agent",
    "status",
    "event",
    "result",
    "error",
    "heartbeats",
    "outbox",
    "usage",
    "run_usage",
    "steps",
    "replayed",
    "logs",
    "duration_s",
}


@pytest.fixture(autouse=True)
def _fresh_module(fresh_sinks: None) -> Iterator[None]:
    """Each command imports the fixture module afresh, into an empty sink registry, so its
    sink is registered for the command and gone after the test."""
    sys.modules.pop(MODULE, None)
    yield
    sys.modules.pop(MODULE, None)
    forget_agents(MODULE)
    forget_triggers(MODULE)


def _run(cli: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
    out = cli("agents", "run", *args, "--triggers", MODULE, "--json")
    return out.returncode, json.loads(out.stdout) if out.stdout else {}, out.stderr


def test_without_an_event_the_agent_gets_its_triggers_kind(cli: Cli) -> None:
    code, shown, stderr = _run(cli, "digest")
    assert code == 0, stderr
    assert set(shown) == CAPTURED_KEYS and shown["status"] == "succeeded"
    event = shown["event"]
    assert event["kind"] == "cron" and event["trigger"] == "digest-9am"
    assert shown["result"] == {
        "kind": "cron",
        "slot": event["scheduled_for"].replace("Z", "+00:00"),
        "summary": "three rows",
    }
    slot_day = event["scheduled_for"][:10]
    assert shown["outbox"] == [
        {"sink": "cache", "key": f"digest:{slot_day}", "value": {"text": "three rows"}}
    ]
    assert shown["heartbeats"] == [{"note": "fetched", "details": {"rows": 3}}]
    assert [s["name"] for s in shown["steps"]] == ["summarise"] and shown["replayed"] == 0
    assert shown["usage"] == {"tokens": 120, "cost_usd": 0.01, "tool_calls": 0} == shown["run_usage"]
    assert shown["logs"] == [f"INFO digest for {slot_day}"]


def test_a_bare_json_value_is_a_manual_fire_payload(cli: Cli) -> None:
    code, shown, _ = _run(cli, "echo", "--event", '{"order": 7}')
    assert code == 0
    assert shown["result"] == {"kind": "manual", "payload": {"order": 7}, "trigger": "cli"}
    assert shown["event"]["fired_by"]  # who ran it, as `nightowl fire` records
    _, listed, _ = _run(cli, "echo", "--event", "[1, 2]")
    assert listed["result"]["payload"] == [1, 2]


def test_a_kind_builds_that_event_with_the_test_defaults_under_the_given_fields(cli: Cli) -> None:
    code, shown, _ = _run(cli, "echo", "--event", '{"kind": "queue_depth", "depth": 5000}')
    assert code == 0
    event = shown["event"]
    assert (event["kind"], event["queue"], event["depth"], event["state"]) == (
        "queue_depth",
        "emails",
        5000,
        "firing",
    )
    _, alias, _ = _run(cli, "echo", "--event", '{"kind": "metric_alert", "value": "+Inf"}')
    assert alias["event"]["kind"] == "metric" and alias["event"]["value"] == "+Inf"


def test_the_stored_form_of_an_event_is_read_back_as_it_is(cli: Cli) -> None:
    stored = event_to_json(cron_tick("digest-9am"))
    code, shown, _ = _run(cli, "digest", "--event", json.dumps(stored))
    assert code == 0 and shown["event"] == stored
    assert shown["outbox"][0]["key"] == "digest:2025-01-06"  # the slot's logical time, not now


def test_a_failing_agent_exits_1_with_its_error_and_logs(cli: Cli) -> None:
    code, shown, _ = _run(cli, "broken")
    assert code == 1 and shown["status"] == "failed"
    assert (
        shown["error"]["type"] == "RuntimeError"
        and shown["error"]["message"] == "the agent failed on purpose"
    )
    assert "env_agents.py" in shown["error"]["traceback"]
    assert shown["logs"] == ["WARNING about to fail"]


def test_a_budget_exceeded_run_exits_1(cli: Cli) -> None:
    code, shown, _ = _run(cli, "spender")
    assert code == 1 and shown["status"] == "budget_exceeded/tokens"


def test_the_outbox_knows_the_sinks_the_modules_register(cli: Cli) -> None:
    code, shown, _ = _run(cli, "unsinkable")
    assert code == 1 and shown["error"]["type"] == "UnknownSinkError"
    assert "registered sinks: cache" in shown["error"]["message"]


def test_an_unknown_agent_exits_1_naming_the_agents(cli: Cli) -> None:
    out = cli("agents", "run", "nope", "--triggers", MODULE)
    assert out.returncode == 1 and out.stdout == ""
    assert "no agent named 'nope'; agents: broken, digest, echo, spender, unsinkable" in out.stderr


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("{not json", "not JSON"),
        ('{"kind": "hourly"}', "unknown event kind 'hourly'"),
        ('{"kind": "cron", "every": 5}', "every"),
        ('{"kind": "queue_depth", "state": "panic"}', "state"),
    ],
)
def test_a_bad_event_is_a_usage_error(cli: Cli, event: str, message: str) -> None:
    out = cli("agents", "run", "echo", "--event", event, "--triggers", MODULE)
    assert out.returncode == 2 and message in out.stderr


def test_no_trigger_modules_is_a_usage_error(cli: Cli) -> None:
    out = cli("agents", "run", "echo")
    assert out.returncode == 2 and "NIGHTOWL_TRIGGERS" in out.stderr


def test_the_text_output_shows_what_was_captured(cli: Cli) -> None:
    out = cli("agents", "run", "digest", "--triggers", MODULE)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("digest  succeeded  ")
    assert any(line.startswith('  cache  "digest:') for line in lines)
    assert "  1  summarise  " in out.stdout and "INFO digest for" in out.stdout
    failed = cli("agents", "run", "broken", "--triggers", MODULE)
    assert failed.returncode == 1
    assert "error   RuntimeError: the agent failed on purpose" in failed.stdout
