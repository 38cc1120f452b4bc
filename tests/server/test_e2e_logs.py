"""The real binary's logs: ``--log_format=json`` and ``--enable_access_log``.

stdout (the "Running gRPC ModelServer at ..." lines TF Serving prints) and stderr (the log)
are kept apart here: the JSON-lines promise is about stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.model_drops import write_python_version
from tests.support.server_process import command, free_port

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120.0
#: absl's own lines: "I0000 00:00:1795705282.937386    2334 port.cc:153] ..." and its one warning
TENSORFLOW_NATIVE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl")


class LoggedServer:
    """``pyserving-model-server`` with stdout read by a thread and stderr sent to a file."""

    def __init__(self, tmp_path: Path, args: list[str]) -> None:
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.stderr_path = tmp_path / "stderr.log"
        env = dict(os.environ, PYSERVING_HOST="127.0.0.1", PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                command("pyserving-model-server") + [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                                                     *args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, start_new_session=True,
            )
        self.stdout: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            if "Exporting HTTP/REST API" in line:
                self.ready.set()
        self.ready.set()  # exited: wake the waiter

    def stderr_lines(self) -> list[str]:
        return self.stderr_path.read_text(encoding="utf-8").splitlines()

    def wait_ready(self) -> None:
        assert self.ready.wait(START_TIMEOUT_S) and self.proc.poll() is None, (
            f"server did not start; stdout:\n{''.join(self.stdout)}\nstderr:\n{self.stderr_path.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        return self.proc.returncode


def run_server(tmp_path: Path, flags: list[str], calls: int) -> tuple[int, list[str]]:
    """Serve a python model ``m`` (version 1), make ``calls`` REST calls of four kinds in
    turn, stop; returns (exit status, stderr lines)."""
    write_python_version(tmp_path / "models" / "m" / "1")
    server = LoggedServer(tmp_path, [f"--model_base_path={tmp_path / 'models' / 'm'}", "--model_name=m", *flags])
    try:
        server.wait_ready()
        base = f"http://127.0.0.1:{server.rest_port}"
        kinds: list[tuple[str, str, Any, int]] = [
            ("post", "/v1/models/m:predict", {"inputs": {"x": [1.0, 2.0]}}, 200),
            ("get", "/v1/models/m", None, 200),
            ("post", "/v1/models/nope:predict", {"inputs": {"x": [1.0]}}, 404),
            ("post", "/v1/models/m/versions/1:predict", {"instances": [3.0]}, 200),
        ]
        for i in range(calls):
            method, path, body, status = kinds[i % len(kinds)]
            answer = requests.request(method, base + path, json=body, timeout=30)
            assert answer.status_code == status, answer.text
        assert requests.get(base + "/v1/health/ready", timeout=10).status_code == 200  # not a model request
    finally:
        code = server.stop()
    return code, server.stderr_lines()


def test_json_lines_with_model_version_event_and_an_access_line_per_request(tmp_path: Path) -> None:
    code, lines = run_server(tmp_path, ["--log_format=json", "--enable_access_log", "--enable_profiler=false"], 6)
    assert code == 0
    objects = []
    for line in lines:
        try:
            objects.append(json.loads(line))
        except ValueError:
            # TensorFlow's C++ runtime writes to the stderr file descriptor itself while it is
            # imported (before absl logging is initialised no level hides it): startup only.
            listening = [o for o in objects if str(o["message"]).startswith("REST API listening")]
            assert TENSORFLOW_NATIVE.match(line) and not listening, (
                f"stderr line is not JSON: {line!r}\nall stderr:\n" + "\n".join(lines))
    assert all({"timestamp", "level", "logger", "event", "message"} <= set(o) for o in objects)
    # the parser's own warning (an ignored flag), logged before --log_format was known, is JSON too
    assert objects[0]["logger"] == "pyserving.server.flags" and "--enable_profiler" in objects[0]["message"]
    loaded = [o for o in objects if o.get("event") == "version_available"]
    assert [(o["model"], o["version"], o["logger"]) for o in loaded] == [("m", 1, "pyserving.manager.lifecycle_log")]
    assert any(o.get("event") == "version_unloaded" and o.get("version") == 1 for o in objects)
    access = [o for o in objects if o["logger"] == "pyserving.access"]
    assert [(o["entrypoint"], o["api"], o["model"], o["version"], o["status"]) for o in access] == [
        ("REST", "predict", "m", 1, "OK"), ("REST", "status", "m", None, "OK"),
        ("REST", "predict", "nope", None, "NOT_FOUND"), ("REST", "predict", "m", 1, "OK"),
        ("REST", "predict", "m", 1, "OK"), ("REST", "status", "m", None, "OK"),
    ]
    assert all(o["event"] == "request" and isinstance(o["latency_ms"], float) and o["latency_ms"] >= 0
               for o in access)


def test_default_is_readable_text_without_access_lines(tmp_path: Path) -> None:
    code, lines = run_server(tmp_path, [], 4)
    assert code == 0
    assert any(line.endswith("] {name: m version: 1} LOADING") for line in lines), lines
    assert not any(line.startswith("{") for line in lines)
    assert not any("pyserving.access" in line for line in lines)
