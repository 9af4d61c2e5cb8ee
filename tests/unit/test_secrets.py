"""Secrets: every secret-bearing setting is a SecretStr, and the one scrubber
(`scheduler.core.scrub`) keeps them out of log lines, tracebacks, alert rows and channel names."""

from __future__ import annotations

import io
import logging
import textwrap
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from scheduler.alerts import WebhookChannel, channels_from
from scheduler.core import scrub
from scheduler.core.logs import JsonFormatter, TextFormatter, install_scrubbing
from scheduler.core.settings import Settings


def token() -> str:
    return f"tok{uuid.uuid4().hex}"


def test_every_secret_bearing_setting_is_a_secretstr_and_registered() -> None:
    pw, hook, apprise, key = token(), token(), token(), token()
    settings = Settings(
        _env_file=None,
        database_url=f"postgresql://owl:{pw}@db.internal/nightowl",
        redis_url=f"redis://:{pw}x@cache:6379/0",
        alert_webhook_url=f"https://hooks.slack.com/services/T0/B0/{hook}",
        alert_urls=f"slack://{apprise}/B1/C1/#oncall  mailtos://me:{key}@smtp.example.com",
    )
    assert isinstance(settings.alert_webhook_url, SecretStr)
    assert all(isinstance(u, SecretStr) for u in settings.alert_urls)
    assert len(settings.alert_urls) == 2
    for secret in (pw, hook, apprise, key):
        assert secret not in repr(settings) and secret not in str(settings.describe())
    text = (
        f"connect postgresql://owl:{pw}@db.internal/nightowl failed; password {pw}; "
        f"POST https://hooks.slack.com/services/T0/B0/{hook} -> 500; path /services/T0/B0/{hook}; "
        f"apprise slack://{apprise}/B1/C1/#oncall; mailtos://me:{key}@smtp.example.com"
    )
    scrubbed = scrub.scrub_text(text)
    for secret in (pw, hook, apprise, key):
        assert secret not in scrubbed, scrubbed
    assert "https://hooks.slack.com/***" in scrubbed
    assert "postgresql://owl:***@db.internal/nightowl" in scrubbed


def test_an_unregistered_url_password_is_still_masked() -> None:
    assert scrub.scrub_text("amqp://guest:s3cr3tpass@rabbit:5672//") == "amqp://guest:***@rabbit:5672//"


def test_the_webhook_channel_is_named_by_scheme_and_host_only() -> None:
    secret_path = token()
    channel = WebhookChannel(f"https://hooks.slack.com/services/{secret_path}", None)
    assert channel.name == "webhook:https://hooks.slack.com"
    (built,) = channels_from([], SecretStr(f"https://example.com:8443/h/{secret_path}"), None)
    assert built.name == "webhook:https://example.com:8443"


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()])
def test_log_lines_and_tracebacks_are_scrubbed_whoever_logs(formatter: logging.Formatter) -> None:
    install_scrubbing()
    pw = token()
    scrub.register(pw)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for name in ("nightowl.test", "celery.worker", "httpx"):  # ours and libraries'
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        try:
            try:
                raise RuntimeError(f"could not connect to redis://:{pw}@cache:6379/0")
            except RuntimeError:
                logger.exception("step failed for %s", f"postgresql://u:{pw}@db/x")
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    out = stream.getvalue()
    assert out.count("RuntimeError: could not connect") == 3 and "step failed for" in out
    assert pw not in out, out


def test_urls_in_trigger_modules_and_sinks_are_registered_when_the_registry_loads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sinks: None,
) -> None:
    from scheduler.cli._common import registry_for

    db_pw, prom_pw, list_pw, sink_pw, cache_pw, hook = (token() for _ in range(6))
    name = f"secret_mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(f"""
        from agents import agent
        from scheduler.outbox import RedisCacheSink, SqlUpsertSink, WebhookSink, register_sink
        from triggers import db_change, metric, prometheus, queue_depth, redis_list

        @agent("a1")
        def a1(ctx, event):
            return None

        db_change("orders", agent=a1, name="orders", cursor="id", key="id",
                  db_url="postgresql://u:{db_pw}@db/app")
        metric(prometheus("up", url="http://u:{prom_pw}@prom:9090"), agent=a1, name="m", above=1)
        queue_depth(redis_list("jobs", redis_url="redis://:{list_pw}@other:6379/0"), agent=a1,
                    name="q", above=1)
        register_sink("prefs-{name[-8:]}", SqlUpsertSink("prefs", db_url="postgresql://u:{sink_pw}@crm/x"))
        register_sink("cache-{name[-8:]}", RedisCacheSink(prefix="p:", redis_url="redis://:{cache_pw}@c:1/0"))
        register_sink("hook-{name[-8:]}", WebhookSink(url="https://crm.example.com/in/{hook}"))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry_for(Settings(_env_file=None, triggers=[name]))
    text = scrub.scrub_text(
        f"{db_pw} {prom_pw} {list_pw} {sink_pw} {cache_pw} POST https://crm.example.com/in/{hook} failed"
    )
    for secret in (db_pw, prom_pw, list_pw, sink_pw, cache_pw, hook):
        assert secret not in text, text
    assert "https://crm.example.com/***" in text


def test_a_short_password_is_masked_in_its_url_without_masking_words() -> None:
    Settings(_env_file=None, database_url="postgresql://nightowl:owl@db/nightowl")
    line = scrub.scrub_text("nightowl.scheduler: owl at postgresql://nightowl:owl@db/nightowl")
    assert line == "nightowl.scheduler: owl at postgresql://nightowl:***@db/nightowl"
