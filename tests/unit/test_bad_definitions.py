"""Bad input on the trigger/settings side: every kind of invalid trigger definition gets one
clear error naming file:line, the field and the fix; SQL identifier injection in db_change
names is refused at load; the definition and settings parsers are fuzzed (hypothesis)."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triggers import (
    RegistryLoadError,
    TriggerDefinitionError,
    cron,
    db_change,
    load,
    metric,
    prometheus,
    queue_depth,
    redis_list,
    sql,
)
from triggers.abc import forget_module

HEADER = """\
from datetime import timedelta
from agents import agent
from triggers import cron, db_change, metric, prometheus, queue_depth, redis_list, sql
@agent("a1")
def a1(ctx, event):
    return None
"""  # six lines: the declaration under test is line 7


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    forget_module(__name__)


def problem_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> tuple[str, str]:
    name = f"bad_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RegistryLoadError) as info:
        load(name)
    (problem,) = info.value.problems
    return problem, path.name


# (declaration on line 7, the field the message must name, a phrase of the problem)
CASES = [
    # cron
    ('cron("* * * * * * *", agent=a1, name="x")', "expr", "7"),
    ('cron("H * * * *", agent=a1, name="x")', "expr", "H"),
    ('cron("0 0 31 4 *", agent=a1, name="x")', "expr", "never"),
    ('cron(5, agent=a1, name="x")', "expr", ""),
    ('cron("* * * * *", agent=a1, name="x", tz=5)', "tz", ""),
    ('cron("* * * * *", agent=a1, name="x", catchup="some")', "catchup", "'latest'"),
    ('cron("* * * * *", agent=a1, name="x", catchup_window=-1)', "catchup_window", "zero or positive"),
    ('cron("* * * * *", agent=a1, name="x", start_deadline=0)', "start_deadline", "positive"),
    ('cron("* * * * *", agent=a1, name="x", start_deadline=float("inf"))', "start_deadline", "finite"),
    ('cron("* * * * *", agent=a1, name="x", jitter=10**30)', "jitter", "out of range"),
    ('cron("* * * * *", agent=a1, name="x" * 70)', "name", "not a valid name"),
    ('cron("* * * * *", agent=42, name="x")', "agent", "got 42"),
    # db_change
    ('db_change("orders", agent=a1, name="x", cursor="updated_at", key=[])', "key", "no key"),
    ('db_change("orders", agent=a1, name="x", cursor="updated_at", key=[1])', "key", "identifier"),
    (
        'db_change("orders", agent=a1, name="x", cursor="updated_at", key="id", where="a = :a", '
        'where_params=[("a", 1)])',
        "where_params",
        "not a mapping",
    ),
    (
        'db_change("orders", agent=a1, name="x", cursor="id", key="id", lookback=-1)',
        "lookback",
        "zero or positive",
    ),
    ('db_change("orders", agent=a1, name="x", cursor="id", key="id", batch="yes")', "batch", "True or False"),
    (
        'db_change("orders", agent=a1, name="x", cursor="id", key="id", batch_size=True)',
        "batch_size",
        "1..100000",
    ),
    ('db_change("orders", agent=a1, name="x", cursor="id", key="id", every=float("nan"))', "every", "finite"),
    (
        'db_change("orders", agent=a1, name="x", cursor="id", key="id", overlap="per_row")',
        "overlap",
        "'per_key'",
    ),
    # metric and its sources
    ('metric(lambda: 1, agent=a1, name="x", above=float("inf"))', "above", "finite"),
    ('metric(lambda: 1, agent=a1, name="x", below=1, clear_below=2)', "above", "clear_below goes"),
    ('metric(lambda: 1, agent=a1, name="x", above=1, every=10**30)', "every", "out of range"),
    ('metric(lambda: 1, agent=a1, name="x", above=1, cooldown="5m")', "cooldown", "timedelta"),
    ('metric(42, agent=a1, name="x", above=1)', "source", "prometheus"),
    ('metric(prometheus("", url="http://p:9090"), agent=a1, name="x", above=1)', "query", "PromQL"),
    ('metric(prometheus("up", url="p:9090"), agent=a1, name="x", above=1)', "url", "URL"),
    (
        'metric(prometheus("up", url="http://p", reduce="median"), agent=a1, name="x", above=1)',
        "reduce",
        "'max'",
    ),
    (
        'metric(prometheus("up", url="http://p", timeout=0), agent=a1, name="x", above=1)',
        "timeout",
        "positive",
    ),
    ('metric(sql("SELECT 1; DROP TABLE runs"), agent=a1, name="x", above=1)', "query", "one SELECT"),
    ('metric(sql("SELECT :a", params=["a"]), agent=a1, name="x", above=1)', "params", "mapping"),
    ('metric(sql("SELECT 1", db_url="jobs.db"), agent=a1, name="x", above=1)', "db_url", "URL"),
    # queue_depth and redis_list
    ('queue_depth("", agent=a1, name="x", above=10)', "queue", "Celery queue"),
    ('queue_depth(7, agent=a1, name="x", above=10)', "queue", "got 7"),
    ('queue_depth("q", agent=a1, name="x", above=10, clear_below=20)', "above", "must be <="),
    ('queue_depth("q", agent=a1, name="x", above=None)', "above", "exactly one"),
    ('queue_depth("q", agent=a1, name="x", above=10, broker_url="localhost")', "broker_url", "URL"),
    ('queue_depth("q", agent=a1, name="x", above=10, key_prefix=1)', "key_prefix", "string"),
    ('queue_depth("q", agent=a1, name="x", above=10, on_resolve=1)', "on_resolve", "True or False"),
    ('queue_depth(redis_list(""), agent=a1, name="x", above=10)', "key", "non-empty"),
    ('queue_depth(redis_list("k", redis_url=5), agent=a1, name="x", above=10)', "redis_url", "URL"),
]


@pytest.mark.parametrize(("body", "field", "needle"), CASES, ids=[c[0][:50] for c in CASES])
def test_each_invalid_definition_names_file_line_field_and_fix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: str,
    field: str,
    needle: str,
) -> None:
    problem, file = problem_of(tmp_path, monkeypatch, body + "\n")
    assert problem.startswith(f"{file}:7:"), problem
    assert f"field {field!r}" in problem and needle in problem and "Fix:" in problem, problem


INJECTIONS = [
    "orders; DROP TABLE runs",
    "orders--",
    '"orders"',
    'orders" OR 1=1 --',
    "public.orders",
    "orders\n",
    "orders ",
    "ordérs",
    "1orders",
    "orders/**/",
    "`orders`",
    "[orders]",
    "o" * 64,
    "",
    "orders)",
    "orders'",
    "\x00orders",
]


@pytest.mark.parametrize("field", ["table", "schema", "cursor", "key"])
@pytest.mark.parametrize("name", INJECTIONS, ids=repr)
def test_sql_identifier_injection_is_refused_at_load(field: str, name: str) -> None:
    args: dict[str, Any] = {"table": "orders", "cursor": "updated_at", "key": "id"}
    args[field] = [name] if field == "key" else name
    table = args.pop("table")
    with pytest.raises(TriggerDefinitionError) as info:
        db_change(table, agent="a1", name="inj", **args)
    message = str(info.value)
    assert "test_bad_definitions.py:" in message and f"field {field!r}" in message, message
    assert "plain SQL identifier" in message and "Fix:" in message


# -- fuzzing -----------------------------------------------------------------------------

ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=8),
    st.timedeltas(),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(
        [
            "* * * * *",
            "0 9 * * 1-5",
            "*/5 * * * * *",
            "@daily",
            "orders",
            "id",
            "updated_at",
            "http://p:9090",
            "redis://h:6379/0",
            "postgresql://u@h/d",
            "skip",
            "per_key",
            "latest",
            "all",
            "fail",
            "false",
            "max",
            "now",
        ]
    ),
)

CONSTRUCTORS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "cron": (cron, {"expr": "* * * * *", "agent": "a1", "name": "f"}),
    "db_change": (
        db_change,
        {"table": "orders", "agent": "a1", "name": "f", "cursor": "updated_at", "key": "id"},
    ),
    "metric": (metric, {"source": lambda: 1, "agent": "a1", "name": "f", "above": 1}),
    "queue_depth": (queue_depth, {"queue": "q", "agent": "a1", "name": "f", "above": 1}),
    "prometheus": (prometheus, {"query": "up", "url": "http://p"}),
    "sql": (sql, {"query": "SELECT 1"}),
    "redis_list": (redis_list, {"key": "k"}),
}
FIELDS = {
    "cron": [
        "expr",
        "name",
        "agent",
        "tz",
        "catchup",
        "catchup_window",
        "overlap",
        "jitter",
        "start_deadline",
    ],
    "db_change": [
        "table",
        "name",
        "cursor",
        "key",
        "db_url",
        "where",
        "where_params",
        "every",
        "batch_size",
        "lookback",
        "batch",
        "overlap",
        "schema",
        "start",
    ],
    "metric": [
        "above",
        "below",
        "clear_below",
        "clear_above",
        "for_",
        "every",
        "cooldown",
        "on_resolve",
        "empty",
        "overlap",
        "timeout",
        "source",
    ],
    "queue_depth": [
        "queue",
        "above",
        "clear_below",
        "broker_url",
        "key_prefix",
        "for_",
        "every",
        "cooldown",
        "on_resolve",
        "overlap",
        "timeout",
    ],
    "prometheus": ["query", "url", "reduce", "timeout"],
    "sql": ["query", "db_url", "params"],
    "redis_list": ["key", "redis_url"],
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(CONSTRUCTORS)), data=st.data())
def test_fuzzed_definitions_either_build_or_raise_a_definition_error(kind: str, data: Any) -> None:
    build, base = CONSTRUCTORS[kind]
    fields = data.draw(st.lists(st.sampled_from(FIELDS[kind]), min_size=1, max_size=3, unique=True))
    args = dict(base) | {f: data.draw(ANY, label=f) for f in fields}
    try:
        build(**args)
    except TriggerDefinitionError as exc:
        message = str(exc)
        assert "test_bad_definitions.py:" in message or "unknown option" in message, message
        assert "field " in message or "unknown option" in message, message


SETTINGS_VARS = [
    "DATABASE_URL",
    "REDIS_URL",
    "BROKER_URL",
    "TRIGGERS",
    "REDIS_PREFIX",
    "HEARTBEAT_INTERVAL",
    "WATCHDOG_INTERVAL",
    "SWEEP_INTERVAL",
    "TICK_INTERVAL",
    "LEADER_TTL",
    "CLAIM_TTL",
    "PENDING_GRACE",
    "VISIBILITY_TIMEOUT",
    "RETENTION",
    "ALERT_REPEAT",
    "SHUTDOWN_GRACE",
    "ALERT_URLS",
    "ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_SECRET",
    "FLOWER_BASIC_AUTH",
    "LOG_FORMAT",
    "LOG_LEVEL",
]
ENV_TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40),
    st.sampled_from(
        [
            "",
            "[",
            "[]",
            '["a", ',
            '{"a": 1}',
            "[1, 2]",
            "nan",
            "inf",
            "-1",
            "0",
            "1e400",
            "P1D",
            "json",
            "DEBUG",
            "a,b,,c",
            "redis://:p@h:1/0",
            "5",
        ]
    ),
)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("NIGHTOWL_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)
        os.environ.update(saved)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(SETTINGS_VARS), ENV_TEXT, max_size=5))
def test_fuzzed_settings_either_load_or_raise_a_validation_error(values: dict[str, str]) -> None:
    from scheduler.core.service_errors import settings_error
    from scheduler.core.settings import Settings

    with environment({f"NIGHTOWL_{k}": v for k, v in values.items()}):
        try:
            loaded = Settings(_env_file=None)
        except pydantic.ValidationError as exc:
            line = settings_error(exc)  # what the CLI prints: one line, naming the variable
            assert line.startswith("invalid setting NIGHTOWL_") and "\n" not in line, line
            return
    assert loaded.heartbeat_interval > timedelta(0) and isinstance(loaded.retention, timedelta)
    assert all(isinstance(t, str) and t for t in loaded.triggers)
    loaded.describe()  # the start-up banner never crashes on what loaded
