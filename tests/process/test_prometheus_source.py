"""The Prometheus metric source against a real Prometheus scraping a real exporter on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.helpers import T0, free_port
from tests.polling import Poller, forget
from triggers import metric, prometheus


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield from forget(__name__)


class Stack:
    def __init__(self, url: str, gauge: Gauge) -> None:
        self.url = url
        self.gauge = gauge

    def query(self, promql: str) -> list[Any]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        return list(body["data"]["result"])

    def wait_value(self, promql: str, value: float, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and float(result[0]["value"][1]) == value:
                return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus never saw {promql} = {value}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is required "
            "(Debian package `prometheus`; scripts/test-services.sh installs it)"
        )
    registry = CollectorRegistry()
    gauge = Gauge("nightowl_demo_queue_lag_seconds", "A gauge the test sets.", ["shard"], registry=registry)
    exporter_port = free_port()
    server, _thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    port = free_port()
    log = (workdir / "log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    s = Stack(f"http://127.0.0.1:{port}", gauge)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if s.query('up{job="exporter"} == 1'):
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("Prometheus did not start: " + (workdir / "log").read_text()[-2000:])
            time.sleep(0.2)
        yield s
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        server.shutdown()
        server.server_close()


def test_fires_when_the_scraped_value_crosses_the_threshold(stack: Stack) -> None:
    stack.gauge.labels(shard="a").set(1)
    stack.wait_value('nightowl_demo_queue_lag_seconds{shard="a"}', 1)
    spec = metric(
        prometheus('nightowl_demo_queue_lag_seconds{shard="a"}', url=stack.url),
        agent="on-alert",
        name="lag",
        above=5,
    )
    poller = Poller(spec, T0)
    assert poller.poll().firings == []
    stack.gauge.labels(shard="a").set(12)
    stack.wait_value('nightowl_demo_queue_lag_seconds{shard="a"}', 12)
    fired = poller.poll(30).firings
    assert [(f.event.state, f.event.value) for f in fired] == [("firing", 12.0)]  # type: ignore[union-attr]


def test_an_empty_result_is_false_unless_empty_fail(stack: Stack) -> None:
    query = 'nightowl_demo_queue_lag_seconds{shard="nope"}'
    relaxed = Poller(metric(prometheus(query, url=stack.url), agent="on-alert", name="e1", above=1), T0)
    relaxed.poll()
    assert relaxed.state is not None and relaxed.state["alert_state"] == "ok"
    assert relaxed.state["last_value"] is None and not relaxed.state.get("failures")
    strict = Poller(
        metric(prometheus(query, url=stack.url), agent="on-alert", name="e2", above=1, empty="fail"), T0
    )
    strict.poll()
    assert strict.state is not None and "no data" in strict.state["last_error"]


def test_several_series_need_a_reducer(stack: Stack) -> None:
    stack.gauge.labels(shard="b").set(3)
    stack.gauge.labels(shard="c").set(30)
    stack.wait_value('nightowl_demo_queue_lag_seconds{shard="c"}', 30)
    query = 'nightowl_demo_queue_lag_seconds{shard=~"b|c"}'
    ambiguous = Poller(metric(prometheus(query, url=stack.url), agent="on-alert", name="m1", above=1), T0)
    ambiguous.poll()
    assert ambiguous.state is not None and "returned 2 series" in ambiguous.state["last_error"]
    reduced = Poller(
        metric(prometheus(query, url=stack.url, reduce="max"), agent="on-alert", name="m2", above=1), T0
    )
    reduced.poll()
    assert reduced.state is not None and reduced.state["last_value"] == 30.0


def test_a_bad_query_and_a_dead_server_are_source_failures(stack: Stack) -> None:
    bad = Poller(metric(prometheus("sum(", url=stack.url), agent="on-alert", name="bad", above=1), T0)
    bad.poll()
    assert bad.state is not None and "rejected the query" in bad.state["last_error"]
    dead = Poller(
        metric(
            prometheus("up", url=f"http://127.0.0.1:{free_port()}", timeout=1),
            agent="on-alert",
            name="dead",
            above=1,
        ),
        T0,
    )
    for _ in range(3):
        dead.poll(30)
    assert dead.state is not None and dead.state["source_failing"] is True


def test_infinity_from_prometheus_fires_and_nan_is_no_data(stack: Stack) -> None:
    """An error ratio when traffic stops: x/0 is +Inf (above any threshold), 0/0 is NaN."""
    inf = Poller(
        metric(prometheus("vector(1) / 0", url=stack.url), agent="on-alert", name="ratio", above=0.05), T0
    )
    fired = inf.poll().firings
    assert [(f.idempotency_key, f.event.value) for f in fired] == [  # type: ignore[union-attr]
        ("alert:ratio:1:firing", float("inf"))
    ]
    assert inf.state is not None and inf.state["last_value"] == "+Inf"
    low = Poller(
        metric(prometheus("scalar(vector(-1) / 0)", url=stack.url), agent="on-alert", name="low", below=0), T0
    )
    assert [f.event.value for f in low.poll().firings] == [float("-inf")]  # type: ignore[union-attr]
    nan = Poller(
        metric(prometheus("vector(0) / 0", url=stack.url), agent="on-alert", name="idle", above=0.05), T0
    )
    assert nan.poll().firings == []
    assert nan.state is not None and nan.state["last_value"] is None and not nan.state.get("failures")
    strict = Poller(
        metric(
            prometheus("vector(0) / 0", url=stack.url),
            agent="on-alert",
            name="idle-strict",
            above=0.05,
            empty="fail",
        ),
        T0,
    )
    strict.poll()
    assert strict.state is not None and "no data" in strict.state["last_error"]


class Canned:
    """An HTTP server on loopback answering /api/v1/query with whatever the test sets."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = 200
        self.body = b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned() -> Iterator[Canned]:
    c = Canned()
    yield c
    c.close()


@pytest.mark.parametrize(
    ("status", "body", "needle"),
    [
        (502, b"<html>Bad Gateway</html>", "HTTP 502 without JSON"),
        (200, b"not json at all", "HTTP 200 without JSON"),
        (200, b"[1, 2]", "not an object"),
        (200, b'{"status": "success"}', "without data.resultType"),
        (200, b'{"status": "success", "data": []}', "without data.resultType"),
        (200, b'{"status": "success", "data": {"resultType": "vector", "result": {}}}', "not a list"),
        (
            200,
            b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}',
            'not [time, "value"]',
        ),
        (
            200,
            b'{"status": "success", "data": {"resultType": "vector", '
            b'"result": [{"metric": {}, "value": [1, "lots"]}]}}',
            "'lots', not a number",
        ),
        (
            200,
            b'{"status": "success", "data": {"resultType": "scalar", "result": [1, 5]}}',
            'not [time, "value"]',
        ),
        (
            200,
            b'{"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}',
            "returned a string",
        ),
        (200, b'{"status": "success", "data": {"resultType": "matrix", "result": []}}', "returned a matrix"),
        (
            400,
            b'{"status": "error", "errorType": "bad_data", "error": "parse error"}',
            "rejected the query: bad_data parse error",
        ),
    ],
)
def test_a_malformed_answer_is_a_clear_source_failure(
    canned: Canned, status: int, body: bytes, needle: str
) -> None:
    canned.status, canned.body = status, body
    poller = Poller(metric(prometheus("up", url=canned.url), agent="on-alert", name="odd", above=1), T0)
    for _ in range(3):
        assert poller.poll(30).firings == []
    assert poller.state is not None and poller.state["source_failing"] is True
    error = poller.state["last_error"]
    assert error.startswith("SourceError: ") and needle in error, error
