"""End to end: graceful shutdown, health and readiness, and the memory budget of the real binaries.

Every server is ``pyserving-model-server`` (or ``pyserving serve``) in a subprocess on free
loopback ports, serving a ``python``-platform model, so no TensorFlow model loads. Requests
are held "in flight" by a gate file: a model call whose first input is negative writes an
``entered-*`` marker and waits (bounded) until the test creates ``gates/open``. Waits are
bounded polls of observable conditions (marker files, output lines, HTTP answers); every
server is stopped in teardown.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np
import pytest
import requests

from tests.support.polling import wait_for as poll_wait_for
from tests.support.server_process import ServerProcess, free_port, start_model_server

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0
#: Bound on anything the server does in the background (version pick-up, unload).
CHANGE_WAIT_S = 60.0
#: Slack allowed on top of the grace period for the unloads and the interpreter's exit.
EXIT_SLACK_S = 30.0

#: y = version * x; a call whose first x is negative waits for the gate file (bounded).
GATED_MODEL = '''
import time
import uuid

import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Gated:
    def __init__(self, version, gates):
        self.version = version
        self.gates = gates
        self.signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, (None,))}, {"y": TensorSpec(DType.FLOAT, (None,))}
            )
        }

    def run(self, signature_name, inputs, output_filter=()):
        x = inputs["x"]
        if x.size and x[0] < 0:
            (self.gates / f"entered-{uuid.uuid4().hex}").touch()
            deadline = time.monotonic() + 120
            while not (self.gates / "open").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the test never opened the gate")
                time.sleep(0.01)
        return {"y": (x * self.version).astype(np.float32)}


def estimate_ram_bytes(version_dir):
    ram = version_dir / "ram"
    return int(ram.read_text()) if ram.exists() else 1


def create_servable(version_dir):
    return Gated(float(version_dir.name), version_dir.parent.parent / "gates")
'''


class Gate:
    """The gate folder shared with the model: count the calls waiting, open it."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "gates"
        self.dir.mkdir()

    def entered(self) -> int:
        return len(list(self.dir.glob("entered-*")))

    def open(self) -> None:
        (self.dir / "open").touch()


def write_version(base: Path, version: int, ram: int | None = None) -> Path:
    """A complete version, written beside the base path and renamed in."""
    staging = base.parent / f".staging-{base.name}-{version}"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(GATED_MODEL)
    if ram is not None:
        (staging / "ram").write_text(str(ram))
    base.mkdir(parents=True, exist_ok=True)
    target = base / str(version)
    staging.rename(target)
    return target


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = CHANGE_WAIT_S) -> Any:
    """Poll ``condition`` until truthy (a server not answering yet counts as "not yet")."""
    return poll_wait_for(condition, what, timeout_s, 0.05, (requests.RequestException, grpc.RpcError))


def rest(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


def rest_predict(port: int, model: str, x: list[float]) -> requests.Response:
    return requests.post(rest(port, f"/v1/models/{model}:predict"), json={"instances": x}, timeout=150)


def ready(port: int) -> requests.Response:
    return requests.get(rest(port, "/v1/health/ready"), timeout=TIMEOUT_S)


def grpc_predict(channel: grpc.Channel, model: str, x: list[float], timeout_s: float = 150) -> np.ndarray:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, float_val=x, tensor_shape={"dim": [{"size": len(x)}]}
    ))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout_s)
    return np.array(response.outputs["y"].float_val)


def health_check(channel: grpc.Channel, service: str = "") -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S).status


class InFlight:
    """Requests sent on background threads; each records its answer or its exception."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def send(self, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                result: Any = call()
            except Exception as exc:  # noqa: BLE001 - inspected by the test
                result = exc
            with self._lock:
                self.results.append(result)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self, timeout_s: float = CHANGE_WAIT_S) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "a request never got an answer"
        with self._lock:
            return list(self.results)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except OSError:
        return True


def write_config(path: Path, models: dict[str, Path]) -> Path:
    """A model config file serving each base path with the ``python`` platform (the flags
    --model_name / --model_base_path always mean TensorFlow)."""
    entries = "".join(
        f"  config {{ name: '{name}' base_path: '{base}' model_platform: 'python' }}\n" for name, base in models.items()
    )
    path.write_text("model_config_list {\n" + entries + "}\n")
    return path


@pytest.fixture()
def gated(tmp_path: Path) -> tuple[Path, Gate]:
    """The config file of model "gated" (version 1: y = x), and its gate."""
    base = tmp_path / "gated"
    write_version(base, 1)
    return write_config(tmp_path / "models.config", {"gated": base}), Gate(tmp_path)


# -- SIGTERM with requests in flight -------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish_then_exits_zero(gated: tuple[Path, Gate]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    config, gate = gated
    grace_s = 60.0
    process, grpc_port, rest_port = start_model_server(
        [f"--model_config_file={config}", f"--shutdown_grace_seconds={grace_s:g}"]
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    in_flight = InFlight()
    try:
        assert ready(rest_port).json() == {"status": "ready"}
        assert requests.get(rest(rest_port, "/v1/health/live"), timeout=TIMEOUT_S).json() == {"status": "live"}
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        for i in range(3):
            in_flight.send(lambda i=i: rest_predict(rest_port, "gated", [-1.0 - i]))
            in_flight.send(lambda i=i: grpc_predict(channel, "gated", [-10.0 - i]))
        wait_for(lambda: gate.entered() == 6, "six requests inside the model")

        process.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # shutdown began: not ready
        after = ready(rest_port) if not refused(rest_port) else None
        assert after is None or after.status_code == 503  # never "ready" again
        wait_for(lambda: refused(rest_port), "the REST port to stop accepting connections")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as fresh:
            with pytest.raises(grpc.RpcError) as info:
                grpc_predict(fresh, "gated", [1.0], timeout_s=TIMEOUT_S)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert process.proc.poll() is None and gate.entered() == 6  # still waiting for the six

        released = time.monotonic()
        gate.open()
        results = in_flight.join()
        rest_answers = [r for r in results if isinstance(r, requests.Response)]
        grpc_answers = [r for r in results if isinstance(r, np.ndarray)]
        assert len(rest_answers) == 3 and len(grpc_answers) == 3, results
        assert sorted(r.json()["predictions"][0] for r in rest_answers) == [-3.0, -2.0, -1.0]
        assert all(r.status_code == 200 for r in rest_answers)
        assert sorted(a[0] for a in grpc_answers) == [-12.0, -11.0, -10.0]

        code = process.wait_exit(grace_s + EXIT_SLACK_S)
        assert code == 0, process.output[-3000:]
        assert time.monotonic() - released < grace_s + EXIT_SLACK_S
        output = process.output
        assert "Received SIGTERM: shutting down gracefully" in output
        assert "{name: gated version: 1} UNLOADING" in output
        assert "{name: gated version: 1} END after " in output and "Shutdown complete" in output
        assert output.index("The server is not ready: shutting down") < output.index("UNLOADING")
    finally:
        gate.open()
        channel.close()
        process.stop()


def test_second_sigterm_exits_at_once_with_143(gated: tuple[Path, Gate]) -> None:
    config, gate = gated
    process, _, rest_port = start_model_server([f"--model_config_file={config}", "--shutdown_grace_seconds=100"])
    in_flight = InFlight()
    try:
        in_flight.send(lambda: rest_predict(rest_port, "gated", [-1.0]))
        wait_for(lambda: gate.entered() == 1, "a request inside the model")
        process.proc.send_signal(signal.SIGTERM)
        assert process.wait_for_output("Received SIGTERM: shutting down gracefully", TIMEOUT_S), process.output
        assert process.proc.poll() is None  # held by the request in flight
        process.proc.send_signal(signal.SIGTERM)
        code = process.wait_exit(TIMEOUT_S)  # far below the 100 s grace period
        assert code == 128 + signal.SIGTERM == 143, process.output[-3000:]
        assert "Received SIGTERM again while shutting down: exiting now with status 143" in process.output
        [answer] = in_flight.join()
        assert isinstance(answer, requests.ConnectionError)
    finally:
        gate.open()
        process.stop()


# -- pyserving serve and SIGINT ------------------------------------------------------------------


def test_pyserving_serve_shuts_down_gracefully_on_sigint(gated: tuple[Path, Gate]) -> None:
    config, gate = gated
    base = config.parent / "gated"  # pyserving serve finds the platform itself
    rest_port = free_port()
    process = ServerProcess(["serve", str(base), f"--port={free_port()}", f"--rest_api_port={rest_port}",
                             "--shutdown_grace_seconds=60"], program="pyserving")
    in_flight = InFlight()
    try:
        assert process.wait_for_output("Press Ctrl-C to stop.", 90), process.output
        assert ready(rest_port).json() == {"status": "ready"}
        in_flight.send(lambda: rest_predict(rest_port, "gated", [-2.0]))
        wait_for(lambda: gate.entered() == 1, "a request inside the model")
        process.proc.send_signal(signal.SIGINT)
        assert process.wait_for_output("Received SIGINT: shutting down gracefully", TIMEOUT_S), process.output
        wait_for(lambda: refused(rest_port), "the REST port to stop accepting connections")
        gate.open()
        [answer] = in_flight.join()
        assert answer.status_code == 200 and answer.json() == {"predictions": [-2.0]}
        assert process.wait_exit(60 + EXIT_SLACK_S) == 0, process.output[-3000:]
        assert "{name: gated version: 1} END after " in process.output
    finally:
        gate.open()
        process.stop()


# -- readiness when a model loses its versions; the memory budget --------------------------------


def _status(rest_port: int, model: str) -> dict[str, dict[str, Any]]:
    response = requests.get(rest(rest_port, f"/v1/models/{model}"), timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    return {s["version"]: s for s in response.json()["model_version_status"]}


def test_readiness_follows_the_models_and_the_memory_budget_refuses_what_does_not_fit(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2

    gate = Gate(tmp_path)
    gate.open()
    a, b = tmp_path / "a", tmp_path / "b"
    write_version(a, 1, ram=600)
    write_version(b, 1, ram=100)
    config = write_config(tmp_path / "models.config", {"a": a, "b": b})
    process, grpc_port, rest_port = start_model_server(
        [f"--model_config_file={config}", "--total_model_memory_limit_bytes=1000", "--file_system_poll_wait_seconds=1"]
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        assert ready(rest_port).status_code == 200
        assert health_check(channel, "tensorflow.serving.PredictionService") == health_pb2.HealthCheckResponse.SERVING

        # Version 2 of a needs 600 B, but only 300 B are free while version 1 serves.
        write_version(a, 2, ram=600)
        version_2 = wait_for(lambda: _status(rest_port, "a").get("2", {}).get("state") == "END"
                             and _status(rest_port, "a")["2"], "version 2 of a to end")
        assert version_2["status"]["error_code"] == "RESOURCE_EXHAUSTED"
        message = ("Insufficient resources to load servable {name: a version: 2}: it needs an estimated 600 B, "
                   "but only 300 B of 1000 B are free")
        assert version_2["status"]["error_message"] == message
        assert f"{{name: a version: 2}} END: load failed: {message}" in process.output
        assert _status(rest_port, "a")["1"]["state"] == "AVAILABLE"
        assert rest_predict(rest_port, "a", [3.0]).json() == {"predictions": [3.0]}  # version 1: y = 1 * x
        assert ready(rest_port).status_code == 200

        # b's only version is removed: b has nothing to serve, so the server is not ready.
        (b / "1").rename(tmp_path / "b-1-removed")
        wait_for(lambda: ready(rest_port).status_code == 503, "ready to turn 503")
        assert ready(rest_port).json() == {"status": "not ready", "reason": "no version of model(s) b is AVAILABLE"}
        for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            assert health_check(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert rest_predict(rest_port, "a", [1.0]).status_code == 200  # a still serves
        assert "The server is not ready: no version of model(s) b is AVAILABLE" in process.output

        (tmp_path / "b-1-removed").rename(b / "1")
        wait_for(lambda: ready(rest_port).status_code == 200, "ready again once b serves")
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING

        process.proc.send_signal(signal.SIGTERM)
        assert process.wait_exit(5 + EXIT_SLACK_S) == 0, process.output[-3000:]
    finally:
        channel.close()
        process.stop()

