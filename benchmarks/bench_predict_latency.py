"""Latency of one Predict at one client: in-process, over gRPC and over REST.

Starts the real ``pyserving-model-server`` on free loopback ports with the bundled demo
model (or the MLP benchmark model with ``--model mlp``), then sends sequential requests
from this process: the official ``tensorflow-serving-api`` stub for gRPC, and a keep-alive
``http.client`` connection with TCP_NODELAY for REST. The in-process rows call the same
model through ``SavedModelServable.run`` and through the server's ``DataPlane``.

    python benchmarks/bench_predict_latency.py [--requests 2000] [--rounds 3] [--model tiny|mlp]

Prints p50 / p99 in milliseconds and requests/s per path, medians over the rounds. The
load generator shares the machine's cores with the server: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pyserving" / "data" / "half_plus_two"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _measure(call: Callable[[], object], n: int) -> tuple[float, float, float]:
    for _ in range(min(200, n)):
        call()
    times = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3, n / total


def _model_dir(kind: str, scratch: Path) -> tuple[Path, str, list]:
    if kind == "tiny":
        return DEMO, "half_plus_two", [[1.0]]
    sys.path.insert(0, str(REPO))
    from tests.support.saved_models import write_mlp_model

    base = scratch / "mlp"
    write_mlp_model(base / "1")
    return base, "mlp", [[0.5] * 784]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["tiny", "mlp"], default="tiny")
    args = parser.parse_args()

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pyserving.loaders.saved_model import SavedModelServable
    from pyserving.servable.ids import ServableRequest
    from pyserving.server.data_plane import DataPlane, ModelSpec

    scratch = Path(tempfile.mkdtemp(prefix="pyserving-bench-"))
    base, name, instance = _model_dir(args.model, scratch)
    version_dir = sorted(p for p in base.iterdir() if p.name.isdigit())[-1]
    x = np.array(instance, dtype=np.float32)

    servable = SavedModelServable.load(str(version_dir))

    class _OneModelCore:
        def __init__(self) -> None:
            from pyserving.servable.handle import ServableHandle
            from pyserving.servable.ids import ServableId

            self._make = lambda: ServableHandle(ServableId(name, int(version_dir.name)), servable, lambda: None)

        def get_handle(self, request: ServableRequest):
            return self._make()

        def version_labels(self, _name: str):
            return {}

        def version_states(self, _name: str):
            return []

    plane = DataPlane(_OneModelCore())
    spec = ModelSpec(name)
    decode = lambda _sig: {"x": x}  # noqa: E731

    grpc_port, rest_port = _free_port(), _free_port()
    env = dict(os.environ, PYSERVING_HOST="127.0.0.1", TF_CPP_MIN_LOG_LEVEL="2", PYSERVING_LOG_LEVEL="WARNING")
    server_bin = shutil.which("pyserving-model-server", path=str(Path(sys.executable).parent))
    command = [server_bin] if server_bin else [sys.executable, "-m", "pyserving.server.main"]
    proc = subprocess.Popen(
        command + [f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_name={name}",
                   f"--model_base_path={base}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "Exporting HTTP/REST API" in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        conn = http.client.HTTPConnection("127.0.0.1", rest_port)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps({"instances": instance})
        headers = {"Content-Type": "application/json"}

        def rest_call() -> bytes:
            conn.request("POST", f"/v1/models/{name}:predict", body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(data)
            return data

        paths: dict[str, Callable[[], object]] = {
            "in-process SavedModelServable.run": lambda: servable.run("serving_default", {"x": x}),
            "in-process DataPlane.predict": lambda: plane.predict(spec, decode),
            "gRPC Predict (official stub)": lambda: stub.Predict(request, timeout=10),
            "REST :predict (keep-alive)": rest_call,
        }
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for label, call in paths.items():
                results[label].append(_measure(call, args.requests))
        print(f"model={args.model} requests={args.requests} rounds={args.rounds} (medians)")
        print(f"{'path':<36} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for label, rows in results.items():
            p50 = statistics.median(r[0] for r in rows)
            p99 = statistics.median(r[1] for r in rows)
            rate = statistics.median(r[2] for r in rows)
            print(f"{label:<36} {p50:8.3f} {p99:8.3f} {rate:8.0f}")
    finally:
        proc.terminate()
        proc.wait(30)
        servable.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
