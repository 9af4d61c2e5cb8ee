"""Every trigger module in the docs imports and validates, and every python block of
docs/agents.md runs with its asserts holding, so docs never drift from the API."""

from __future__ import annotations

import re
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents._spec import forget_module
from triggers import load

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def trigger_modules() -> list[tuple[str, str]]:
    out = []
    for doc in sorted(DOCS.glob("*.md")):
        for i, block in enumerate(BLOCK.findall(doc.read_text())):
            if "from triggers import" in block and "@agent" in block:
                out.append((f"{doc.name}#{i}", block))
    return out


pytestmark = pytest.mark.usefixtures("fresh_sinks")


@pytest.mark.parametrize(("where", "code"), trigger_modules())
def test_doc_trigger_module_validates(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"docmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load(name)
    assert registry.triggers, where


def test_docs_have_trigger_modules() -> None:
    assert len(trigger_modules()) >= 1


def _is_trigger_module(block: str) -> bool:
    return "from triggers import" in block and "@agent" in block


def agents_blocks() -> list[tuple[str, str]]:
    """docs/agents.md's python blocks that are not trigger modules (those load above)."""
    blocks = BLOCK.findall((DOCS / "agents.md").read_text())
    return [(f"agents.md#{i}", b) for i, b in enumerate(blocks) if not _is_trigger_module(b)]


@pytest.fixture
def block_module() -> Iterator[types.ModuleType]:
    """A fresh module to run a block in, as if it were imported (pydantic resolves a model's
    annotations through sys.modules); its agents are forgotten afterwards."""
    module = types.ModuleType(f"docblock_{uuid.uuid4().hex[:8]}")
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]
    forget_module(module.__name__)


def test_every_python_block_of_agents_md_is_checked() -> None:
    blocks = BLOCK.findall((DOCS / "agents.md").read_text())
    loaded = [w for w, _ in trigger_modules() if w.startswith("agents.md#")]
    assert len(loaded) + len(agents_blocks()) == len(blocks) >= 8
    assert sum("AgentEnvironment" in b for _, b in agents_blocks()) >= 4


@pytest.mark.parametrize(("where", "code"), agents_blocks())
def test_agents_md_block_runs_and_its_asserts_hold(
    where: str, code: str, block_module: types.ModuleType
) -> None:
    exec(compile(code, f"docs/{where}", "exec"), block_module.__dict__)


def test_the_webhook_verifier_in_the_docs_accepts_our_signature_and_rejects_replays() -> None:
    """docs/alerts.md's reference verifier, run against a body WebhookChannel really signed."""
    import time

    from scheduler.alerts import sign

    text = (DOCS / "alerts.md").read_text()
    (code,) = [b for b in BLOCK.findall(text) if "def verify(" in b]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/alerts.md", "exec"), namespace)
    verify = namespace["verify"]
    body = b'{"kind": "run_stalled", "run_id": "r1"}'
    now = int(time.time())
    good = sign("s3cret", now, body)
    assert verify("s3cret", str(now), body, good)  # type: ignore[operator]
    assert not verify("s3cret", str(now + 1), body, good)  # type: ignore[operator]  # fresh ts, old sig
    old = now - 600
    assert not verify("s3cret", str(old), body, sign("s3cret", old, body))  # type: ignore[operator]
    assert not verify("wrong", str(now), body, good)  # type: ignore[operator]
    assert not verify("s3cret", str(now), body + b" ", good)  # type: ignore[operator]


def test_the_docs_verifier_accepts_a_real_alert_and_rejects_it_five_minutes_later() -> None:
    """A real alert POSTed by WebhookChannel verifies with the docs' code; the same request
    replayed a little over 5 minutes later is refused."""
    from types import SimpleNamespace

    from pydantic import SecretStr

    from scheduler.alerts import Alert, AlertKind, WebhookChannel
    from tests.receiver import Receiver

    text = (DOCS / "alerts.md").read_text()
    (code,) = [b for b in BLOCK.findall(text) if "def verify(" in b]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/alerts.md", "exec"), namespace)
    verify = namespace["verify"]
    receiver = Receiver()
    try:
        alert = Alert(
            kind=AlertKind.RUN_STALLED,
            message="run r1 stalled",
            dedupe_key="run_stalled:r1:1",
            run_id="r1",
            attempt=1,
        )
        WebhookChannel(receiver.url, SecretStr("s3cret")).send(alert, alert.payload(episode=1))
        (request,) = receiver.requests
    finally:
        receiver.close()
    ts, sig, body = (
        request["headers"]["X-Nightowl-Timestamp"],
        request["headers"]["X-Nightowl-Signature"],
        request["body"],
    )
    assert verify("s3cret", ts, body, sig)  # type: ignore[operator]
    assert not verify("other", ts, body, sig)  # type: ignore[operator]
    namespace["time"] = SimpleNamespace(time=lambda: int(ts) + 299)
    assert verify("s3cret", ts, body, sig)  # type: ignore[operator]  # within 5 minutes
    namespace["time"] = SimpleNamespace(time=lambda: int(ts) + 301)
    assert not verify("s3cret", ts, body, sig)  # type: ignore[operator]  # a replay, too old


README = DOCS.parent / "README.md"


def test_the_readme_trigger_module_loads_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = [b for b in BLOCK.findall(README.read_text()) if "from triggers import" in b]
    name = f"readme_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load(name)
    assert {"digest-9am", "new-orders", "email-backlog", "error-rate"} <= set(registry.triggers)


def test_every_nightowl_command_in_the_readme_parses() -> None:
    """Each `nightowl ...` line of the README's shell blocks, with --help added: an option
    the CLI does not have (`worker -c 4` once) fails here, not for the reader."""
    import shlex

    from typer.testing import CliRunner

    from scheduler.cli import app

    sh = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    commands = [
        shlex.split(line.split("#", 1)[0])[1:]
        for block in sh
        for line in block.splitlines()
        if line.strip().startswith("nightowl ")
    ]
    assert len(commands) >= 5
    runner = CliRunner()
    for args in commands:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
