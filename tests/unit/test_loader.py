"""The loader's messages for each kind of broken module: file:line, the field, the fix."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT, Cli
from triggers import RegistryLoadError, load

HEADER = """\
from agents import agent
from triggers import cron

@agent("a1")
def a1(ctx, event):
    return None
"""  # six lines: user code below starts at line 7


def write_module(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    name = f"mod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return name, path


def problems(name: str) -> list[str]:
    with pytest.raises(RegistryLoadError) as info:
        load(name)
    return info.value.problems


@pytest.mark.parametrize(
    ("body", "line", "needles"),
    [
        ('cron("61 * * * *", agent=a1, name="x")\n', 7, ["field 'expr'", "out of range", "Fix:"]),
        (
            'cron("* * * * *", agent=a1, name="x", tz="Mars/Base")\n',
            7,
            ["field 'tz'", "unknown time zone", "Fix:"],
        ),
        ('cron("* * * * *", agent=a1, name="Bad Name!")\n', 7, ["field 'name'", "not a valid name", "Fix:"]),
        (
            'cron("* * * * *", agent=a1, name="x", timezone="UTC")\n',
            7,
            ["unknown option 'timezone'", "did you mean 'tz'"],
        ),
        (
            'cron("* * * * *", agent=a1, name="x", overlap="sometimes")\n',
            7,
            ["field 'overlap'", "'skip'", "Fix:"],
        ),
        (
            '\n\n@agent("a2", retries=3)\ndef a2(ctx, event):\n    return 1\n',
            9,
            ["unknown option 'retries'", "Valid options:"],
        ),
        (
            'def plain(ctx, event):\n    return 1\ncron("* * * * *", agent=plain, name="x")\n',
            9,
            ["field 'agent'", "is not an agent", "@agent"],
        ),
        ('cron("* * * * *", agent=a1, name="x", jitter=600)\n', 7, ["field 'jitter'", "start_deadline"]),
    ],
)
def test_definition_errors_name_file_line_field_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, line: int, needles: list[str]
) -> None:
    name, path = write_module(tmp_path, body, monkeypatch)
    (problem,) = problems(name)
    assert problem.startswith(f"{path.name}:{line}:"), problem
    for needle in needles:
        assert needle in problem, problem


def test_unknown_agent_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, path = write_module(tmp_path, 'cron("* * * * *", agent="nope", name="x")\n', monkeypatch)
    (problem,) = problems(name)
    assert problem.startswith(f"{path.name}:7:")
    assert "field 'agent'" in problem and "unknown agent 'nope'" in problem
    assert "known: a1" in problem and "@agent('nope')" in problem


def test_duplicate_trigger_names_point_at_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = 'cron("* * * * *", agent=a1, name="x")\ncron("0 * * * *", agent=a1, name="x")\n'
    name, path = write_module(tmp_path, body, monkeypatch)
    (problem,) = problems(name)
    assert problem.startswith(f"{path.name}:8:")
    assert "duplicate trigger name" in problem and f"{path.name}:7" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        'cron("* * * * *", agent="nope", name="x")\n'
        'cron("* * * * *", agent=a1, name="y")\ncron("* * * * *", agent=a1, name="y")\n'
    )
    name, _ = write_module(tmp_path, body, monkeypatch)
    assert len(problems(name)) == 2


def test_syntax_error_and_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, path = write_module(tmp_path, "def broken(:\n", monkeypatch)
    (problem,) = problems(name)
    assert f"{path.name}:7" in problem and "syntax error" in problem
    (missing,) = problems("no_such_module_here")
    assert "not found" in missing and "Fix:" in missing


def test_valid_module_loads_agents_and_triggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = write_module(tmp_path, 'cron("* * * * *", agent="a1", name="by-name")\n', monkeypatch)
    registry = load(name)
    assert sorted(registry.triggers) == ["by-name"]
    assert registry.agent_for(registry.triggers["by-name"]).name == "a1"
    # Loading again (module already imported) gives the same registry.
    assert sorted(load(name).triggers) == ["by-name"]


def test_validate_cli_exits_1_with_file_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    name, path = write_module(tmp_path, 'cron("61 * * * *", agent=a1, name="x")\n', monkeypatch)
    proc = cli("triggers", "validate", "--triggers", name, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert f"{path.name}:7:" in proc.stderr and "field 'expr'" in proc.stderr
    ok = cli("triggers", "validate", "--triggers", "examples.demo", cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    usage = cli("runs", "list", "--limit", "x", cwd=tmp_path)
    assert usage.returncode == 2


def test_every_bad_trigger_of_a_module_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, path = write_module(
        tmp_path,
        """\
        cron("0 0 * * fry", agent=a1, name="t1")
        cron("*/70 * * * * *", agent=a1, name="t2")
        cron("0 0 1 1 * 2026", agent=a1, name="t3")
        cron("0 9 * * *", agent=a1, name="fine")
        cron("0 25 * * *", agent=a1, name="t4")
        """,
        monkeypatch,
    )
    found = problems(name)
    assert len(found) == 4 == len(set(found)), found
    assert f"{path.name}:7:" in found[0] and "day-of-week: 'fry' is not a day (mon..sun)" in found[0]
    assert f"{path.name}:8:" in found[1] and "seconds: */70 is out of range" in found[1]
    assert "6 fields mean a leading seconds field, not a trailing year" in found[2]
    assert f"{path.name}:11:" in found[3] and "hour: 25 is out of range (0-23)" in found[3]
    # A second load judges it again (it is not left half-imported in sys.modules)
    assert problems(name) == found


def test_a_file_path_gets_the_module_name_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = write_module(tmp_path, 'cron("0 9 * * *", agent=a1, name="fine")\n', monkeypatch)
    for given in (f"{name}.py", f"./{name}.py"):
        (found,) = problems(given)
        assert "is a file path" in found and f"--triggers {name}" in found


def test_an_import_error_names_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, path = write_module(tmp_path, "import nonexistent_pkg_for_test\n", monkeypatch)
    (found,) = problems(name)
    assert f"{path}:7:" in found and "nonexistent_pkg_for_test" in found


def test_validate_warns_about_a_module_that_defines_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    (tmp_path / "nothing_here.py").write_text("X = 1\n")
    out = cli("triggers", "validate", "--triggers", "nothing_here", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "warning: module 'nothing_here' defines no trigger and no agent" in out.stderr


def test_croniter_forms_stay_accepted_and_wild_steps_are_refused() -> None:
    from triggers import CronExpr, CronSyntaxError

    for ok in (
        "0 0 l * *",
        "0 0 15w * *",
        "0 0 1-l * *",
        "0 0 L * *",
        "1-10/2 * * * *",
        "0 0 * jan-mar mon-fri",
        "0 0 * * 5#2",
        "0 0 ? * 7",
        "*/60 * * * * *",
    ):
        CronExpr(ok)
    for bad in ("*/70 * * * * *", "*/61 * * * *", "*/0 * * * *"):
        with pytest.raises(CronSyntaxError, match="out of range"):
            CronExpr(bad)
