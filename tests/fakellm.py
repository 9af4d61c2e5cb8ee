"""A local chat-completions server whose every answer a test scripts: the unreliable upstream.

`FakeLLM()` serves POST /v1/chat/completions, plain and streamed (server-sent events, with
the final usage chunk when asked), on a free loopback port in a thread. Each request takes
the next behaviour of its queue (a per-model queue first, then the shared one), else the
default: a normal answer with usage, a status (429 with `Retry-After`, 500, 503), a hang
past the client's read timeout, a stream cut mid-way, a slow stream with keep-alive
comments, a malformed body, or content the caller's schema refuses. Every request is
recorded (`calls`, `count(model=)`).

The same server runs as a process (`python -m tests.fakellm --port N`) for tests whose
client lives in a worker process; they script it from outside through a control API:
POST /control/enqueue {"behaviours": [...], "model": null}, POST /control/default
{"behaviour": {...}}, POST /control/reset and GET /control/calls, which `FakeLLMControl`
wraps.

This module shares no code with `agents.llm`: it is the other side of the wire, written
from the format, so a misreading in the client cannot hide behind the same misreading here.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

import httpx

Behaviour = dict[str, Any]

DEFAULT_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


# -- behaviours (plain dicts, so the control API can carry them) ------------------------


def answer(
    content: str | Mapping[str, Any] = "ok",
    *,
    usage: bool | Mapping[str, int] = True,
    model: str | None = None,
    finish_reason: str = "stop",
    chunks: int = 3,
    delay_s: float = 0.0,
    first_delay_s: float = 0.0,
    ping_every_s: float | None = None,
    echo: bool = False,
) -> Behaviour:
    """A normal answer. Streamed, it comes in `chunks` pieces `delay_s` apart, the first
    after `first_delay_s`, with a `: ping` comment every `ping_every_s` while waiting.
    `echo` answers with the last user message instead of `content`; `usage=False` leaves
    the usage out."""
    text = content if isinstance(content, str) else json.dumps(dict(content))
    return {
        "kind": "answer",
        "content": text,
        "usage": dict(DEFAULT_USAGE) if usage is True else (dict(usage) if usage else None),
        "model": model,
        "finish_reason": finish_reason,
        "chunks": chunks,
        "delay_s": delay_s,
        "first_delay_s": first_delay_s,
        "ping_every_s": ping_every_s,
        "echo": echo,
    }


def status(
    code: int, *, retry_after: str | float | None = None, body: Any = None, echo_auth: bool = False
) -> Behaviour:
    """An error status with an OpenAI-style error body (`echo_auth` puts the request's
    Authorization header in it, as a careless proxy might)."""
    return {
        "kind": "status",
        "status": code,
        "retry_after": None if retry_after is None else str(retry_after),
        "body": body,
        "echo_auth": echo_auth,
    }


def rate_limited(retry_after: str | float | None = 1) -> Behaviour:
    return status(429, retry_after=retry_after)


def server_error(code: int = 500, retry_after: str | float | None = None) -> Behaviour:
    return status(code, retry_after=retry_after)


def hang(seconds: float = 5.0) -> Behaviour:
    """Send nothing for `seconds` (past the client's read timeout), then a normal answer."""
    return {"kind": "hang", "seconds": seconds}


def cut(after_chunks: int = 1, *, clean: bool = False) -> Behaviour:
    """Stop mid-answer: a stream after `after_chunks` content chunks, without its final
    chunk or [DONE]; a plain answer halfway through its body. `clean` ends the chunked
    body properly (the stream just stops), otherwise the connection drops."""
    return {"kind": "cut", "after_chunks": after_chunks, "clean": clean}


def malformed(body: str = '{"choices": [{"message": ') -> Behaviour:
    """A 200 whose body (or stream chunk) is not JSON."""
    return {"kind": "malformed", "body": body}


def not_chat() -> Behaviour:
    """A 200 with valid JSON that is not a chat completion (no choices)."""
    return {"kind": "not_chat"}


# -- the server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One request the server received."""

    model: str | None
    stream: bool
    messages: list[Any]
    body: dict[str, Any]
    authorization: str | None
    behaviour: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Script:
    """The queues, the default and the record, shared by the handler threads."""

    def __init__(self, default: Behaviour) -> None:
        self.lock = threading.Lock()
        self.shared: deque[Behaviour] = deque()
        self.by_model: dict[str, deque[Behaviour]] = {}
        self.default = default
        self.calls: list[Call] = []

    def next(self, body: dict[str, Any], authorization: str | None) -> Behaviour:
        model = body.get("model") if isinstance(body.get("model"), str) else None
        with self.lock:
            queue = self.by_model.get(model or "")
            if queue:
                behaviour = queue.popleft()
            elif self.shared:
                behaviour = self.shared.popleft()
            else:
                behaviour = self.default
            messages = body.get("messages")
            self.calls.append(
                Call(
                    model=model,
                    stream=bool(body.get("stream")),
                    messages=messages if isinstance(messages, list) else [],
                    body=body,
                    authorization=authorization,
                    behaviour=str(behaviour.get("kind")),
                    at=time.time(),
                )
            )
            return behaviour


def _sse(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- routing

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/control/calls":
            self._json(200, self.server.fake.calls_json())
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "the request body is not JSON"}})
            return
        try:
            self._route(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first: fine
            self.close_connection = True

    def _route(self, body: Any) -> None:
        path = self.path.rstrip("/")
        if path == "/v1/chat/completions" and isinstance(body, dict):
            behaviour = self.server.fake.script.next(body, self.headers.get("Authorization"))
            self._behave(behaviour, body)
        elif path.startswith("/control/"):
            self.server.fake.control(path.removeprefix("/control/"), body)
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    # -- writing

    def _json(self, code: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, code: int, data: bytes, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection mid-answer, as a crashed upstream does."""
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # -- behaviours

    def _behave(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        kind = behaviour.get("kind")
        stream = bool(body.get("stream"))
        if kind == "status":
            self._status(behaviour)
        elif kind == "hang":
            self.server.fake.stopping.wait(float(behaviour["seconds"]))
            self._answer(answer(), body, stream)
        elif kind == "cut":
            self._cut(behaviour, body, stream)
        elif kind == "malformed":
            self._malformed(str(behaviour["body"]), stream)
        elif kind == "not_chat":
            self._json(200, {"object": "error", "message": "upstream said no"})
        else:
            self._answer(behaviour, body, stream)

    def _status(self, behaviour: Behaviour) -> None:
        message: Any = behaviour.get("body") or f"scripted status {behaviour['status']}"
        if behaviour.get("echo_auth"):
            message = f"bad credentials: {self.headers.get('Authorization')}"
        headers = {"Retry-After": behaviour["retry_after"]} if behaviour.get("retry_after") else {}
        payload = message if isinstance(message, dict) else {"error": {"message": message}}
        self._json(int(behaviour["status"]), payload, headers)

    def _content(self, behaviour: Behaviour, body: dict[str, Any]) -> str:
        if not behaviour.get("echo"):
            return str(behaviour.get("content", "ok"))
        users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    def _answer(self, behaviour: Behaviour, body: dict[str, Any], stream: bool) -> None:
        content = self._content(behaviour, body)
        model = behaviour.get("model") or body.get("model") or "fake"
        usage = behaviour.get("usage")
        if not stream:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": behaviour.get("finish_reason", "stop"),
            }
            payload: dict[str, Any] = {"id": "fake-1", "object": "chat.completion", "model": model}
            payload["choices"] = [choice]
            if usage:
                payload["usage"] = usage
            self._json(200, payload)
            return
        self._stream(behaviour, content, model, body)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _delta(self, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({"id": "fake-1", "object": "chat.completion.chunk", "model": model, "choices": [choice]})

    def _wait(self, seconds: float, ping_every_s: float | None) -> None:
        """Wait, sending keep-alive comments meanwhile when asked."""
        end = time.monotonic() + seconds
        stopping = self.server.fake.stopping
        while (left := end - time.monotonic()) > 0 and not stopping.is_set():
            if ping_every_s is None:
                stopping.wait(left)
                return
            stopping.wait(min(ping_every_s, left))
            if end - time.monotonic() > 0:
                self._chunk(b": ping\n\n")

    def _stream(self, behaviour: Behaviour, content: str, model: str, body: dict[str, Any]) -> None:
        self._start_stream()
        self._chunk(self._delta(model, {"role": "assistant", "content": ""}))  # an empty delta
        pieces = _split(content, int(behaviour.get("chunks") or 1))
        ping = behaviour.get("ping_every_s")
        for i, piece in enumerate(pieces):
            self._wait(float(behaviour.get("first_delay_s" if i == 0 else "delay_s") or 0), ping)
            self._chunk(self._delta(model, {"content": piece}))
        self._chunk(self._delta(model, {}, str(behaviour.get("finish_reason", "stop"))))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if behaviour.get("usage") and wants_usage:
            self._chunk(_sse({"id": "fake-1", "model": model, "choices": [], "usage": behaviour["usage"]}))
        self._chunk(_sse("[DONE]"))
        self._end_chunks()

    def _cut(self, behaviour: Behaviour, body: dict[str, Any], stream: bool) -> None:
        model = str(body.get("model") or "fake")
        if not stream:
            data = json.dumps({"model": model, "choices": [{"message": {"content": "cut"}}]}).encode()
            self._raw(200, data[: len(data) // 2], length=len(data))
            self._drop()
            return
        self._start_stream()
        self._chunk(self._delta(model, {"role": "assistant", "content": ""}))
        for i in range(int(behaviour.get("after_chunks") or 0)):
            self._chunk(self._delta(model, {"content": f"part {i} "}))
        if behaviour.get("clean"):
            self._end_chunks()
        else:
            self._drop()

    def _malformed(self, text: str, stream: bool) -> None:
        if not stream:
            self._raw(200, text.encode())
            return
        self._start_stream()
        self._chunk(_sse(text))
        self._chunk(_sse("[DONE]"))
        self._end_chunks()


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's idle keep-alive connection must not hold up stop()
    fake: FakeLLM


class FakeLLM:
    """The fake provider, in a thread of this process (a context manager)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default: Behaviour | None = None) -> None:
        self.script = _Script(default or answer())
        self.stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients take (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def provider(self) -> str:
        """The breaker key `agents.llm` derives from `url`."""
        return f"{self.host}:{self.port}"

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakellm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- scripting

    def enqueue(self, *behaviours: Behaviour, model: str | None = None) -> None:
        """Answer the next requests (for `model` only, when given) with these, in order."""
        with self.script.lock:
            queue = self.script.shared if model is None else self.script.by_model.setdefault(model, deque())
            queue.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        """What a request gets when its queues are empty."""
        with self.script.lock:
            self.script.default = behaviour

    def reset(self) -> None:
        """Empty the queues and the record; the default becomes a normal answer again."""
        with self.script.lock:
            self.script.shared.clear()
            self.script.by_model.clear()
            self.script.calls.clear()
            self.script.default = answer()

    @property
    def calls(self) -> list[Call]:
        with self.script.lock:
            return list(self.script.calls)

    def count(self, model: str | None = None) -> int:
        """Requests received (for `model`, when given)."""
        return sum(1 for c in self.calls if model is None or c.model == model)

    def by_model(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.model or ""] = out.get(c.model or "", 0) + 1
        return out

    def calls_json(self) -> dict[str, Any]:
        return {
            "total": self.count(),
            "by_model": self.by_model(),
            "calls": [c.as_dict() for c in self.calls],
        }

    def control(self, verb: str, body: Any) -> None:
        """The control API's verbs (see the module docstring)."""
        if verb == "enqueue":
            self.enqueue(*body.get("behaviours", []), model=body.get("model"))
        elif verb == "default":
            self.set_default(body["behaviour"])
        elif verb == "reset":
            self.reset()
        else:
            raise ValueError(f"unknown control verb {verb!r}")


class FakeLLMControl:
    """Scripts a FakeLLM that runs in another process, through its control API."""

    def __init__(self, url: str) -> None:
        root = httpx.URL(url)
        self.url = str(root.copy_with(path="/v1"))
        self._root = str(root.copy_with(path="/"))

    def _post(self, verb: str, payload: dict[str, Any]) -> None:
        httpx.post(f"{self._root}control/{verb}", json=payload, timeout=5).raise_for_status()

    def enqueue(self, *behaviours: Behaviour, model: str | None = None) -> None:
        self._post("enqueue", {"behaviours": list(behaviours), "model": model})

    def set_default(self, behaviour: Behaviour) -> None:
        self._post("default", {"behaviour": behaviour})

    def reset(self) -> None:
        self._post("reset", {})

    def calls(self) -> dict[str, Any]:
        """{"total": n, "by_model": {...}, "calls": [...]}"""
        response = httpx.get(f"{self._root}control/calls", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def count(self, model: str | None = None) -> int:
        data = self.calls()
        return int(data["total"] if model is None else data["by_model"].get(model, 0))


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fakellm --port N`: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakellm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with FakeLLM(host=args.host, port=args.port) as fake:
        print(f"fakellm listening on {fake.url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
