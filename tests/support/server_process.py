"""Running the real ``pyserving-model-server`` (or ``pyserving``) binary in tests.

Ports are free loopback ports picked at start, the server binds 127.0.0.1 only
(``PYSERVING_HOST``), readiness is a bounded wait on the server's own "listening" lines,
and ``stop()`` always ends the process (SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(name: str) -> list[str]:
    """The installed console script ``name``, or its module when not installed."""
    script = shutil.which(name, path=str(BIN_DIR))
    if script:
        return [script]
    module = {"pyserving-model-server": "pyserving.server.main", "pyserving": "pyserving.cli"}[name]
    return [sys.executable, "-m", module]


class ServerProcess:
    """A server subprocess whose output is collected; use as a context manager."""

    def __init__(self, args: Sequence[str], program: str = "pyserving-model-server", env: dict[str, str] | None = None):
        environment = dict(os.environ)
        environment.update({"PYSERVING_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
        environment.update(env or {})
        self.args = list(args)
        self.proc = subprocess.Popen(
            command(program) + self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def wait_for_output(self, text: str, timeout_s: float = 90.0) -> bool:
        """True once ``text`` appeared in the output; False on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                if any(text in line for line in self._lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._changed.wait(min(remaining, 0.5))

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Output of a server that lost its port to another process (then it is started again).
_BIND_FAILURES = ("Could not bind gRPC port", "Could not bind the REST port")


def start_model_server(
    extra_args: Sequence[str], timeout_s: float = 90.0, rest: bool = True, bind_attempts: int = 3
) -> tuple[ServerProcess, int, int]:
    """Start ``pyserving-model-server`` on free ports; returns (process, grpc_port, rest_port).

    Raises AssertionError with the server's output when it does not come up. A free port
    can be taken by another process between :func:`free_port` and the server's bind; when
    the server reports exactly that, it is started again on new ports (up to
    ``bind_attempts`` times).
    """
    ready = "Exporting HTTP/REST API" if rest else "Running gRPC ModelServer"
    for attempt in range(1, bind_attempts + 1):
        grpc_port = free_port()
        rest_port = free_port() if rest else 0
        server = ServerProcess([f"--port={grpc_port}", f"--rest_api_port={rest_port}", *extra_args])
        if server.wait_for_output(ready, timeout_s):
            return server, grpc_port, rest_port
        server.stop()
        if attempt < bind_attempts and any(text in server.output for text in _BIND_FAILURES):
            continue
        raise AssertionError(f"server did not start; output:\n{server.output}")
    raise AssertionError("unreachable")  # pragma: no cover
