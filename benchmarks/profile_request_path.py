"""Where does one request's time go in pyserving, and what would other front ends gain? Measured.

    python benchmarks/profile_request_path.py [--duration 5] [--clients 1,32] [--quick] [--no-py-spy]

Same models, inputs and load generators as ``run.py`` (tiny half_plus_two and the 784-512-512-10
MLP, one instance per request, wrk for REST, ``grpc_load.py`` for gRPC). Four parts:

A. **Stage costs, in-process** (median µs per request, one thread, no transport): decode
   (gRPC: ``PredictRequest.FromString`` + ``tensor_codec.to_numpy``; REST: ``rest_json``
   parse + ``predict_inputs``), data plane (``DataPlane.predict`` minus the model call:
   handle lookup, signature, input checks), model call (``SavedModelServable.run``),
   encode (gRPC: ``PredictResponse`` + ``from_numpy`` + ``SerializeToString``; REST:
   ``encode_predict_response``).
B. **The real server under load** (``pyserving-model-server``, default flags): server CPU
   per request from /proc, split by thread: TensorFlow's own threads (``tf_*``: model
   call), gRPC's native threads (``event_engine``, ``grpc_*``: transport) and the Python
   threads, whose CPU is split in proportion to where the GIL holder was, from a
   ``py-spy record --gil --nonblocking`` profile taken during the same run (Python code
   only runs under the GIL; each sample goes to the innermost frame that names a stage:
   model call, decode, data plane, encode, batching (queue, merge, split; with
   ``--batching``), transport = gRPC / uvicorn / asyncio / thread-pool code). Sampling
   every thread instead is misleading here: py-spy counts threads parked in
   ``Condition.wait`` or inside a GIL-free TensorFlow call as busy (a third of the samples).
   Transport is therefore everything that is not one of the four stages.
C. **Front-end options**, each a prototype served by this script (``serve`` sub-command)
   around the real ``ModelServer`` core and servicer logic: the thread-pool gRPC server
   as shipped vs. a ``grpc.aio`` server running the servicer's Predict inline on the event
   loop or in a thread pool; no-op handlers on both (the transport floor); REST with model
   calls inline on the event loop vs. the thread pool; two ``pyserving-model-server``
   processes sharing one gRPC port with SO_REUSEPORT vs. one.
D. **Micro-measurements**: zero-copy tensor decoding (``np.frombuffer`` on
   ``tensor_content``) vs. copying decoders, and the cost of one inter-process round trip
   (what "several front-end processes feeding one model executor" would add per request).

The report is Markdown on stdout (``--output FILE`` also writes it). Every process this
script starts is stopped at the end. The machine's 2 cores are shared by the server and the
load generator (and other work): compare numbers within one run only.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from run import (  # noqa: E402
    DEFAULT_BATCHING, MODELS, ServerProcess, free_port, model_inputs, run_grpc, run_wrk, start_pyserving, tree_cpu_seconds,
    write_models, WRK_LUA,
)

SERVE_READY = "PROFILE-SERVER-READY"
#: Leaf-first stack classification: the innermost frame matching a rule names the stage.
_STAGE_RULES: list[tuple[str, str, tuple[str, ...]]] = [
    # (stage, file fragment, function names; empty = any function in the file)
    ("batching", "pyserving/servable/batch", ()),
    ("batching", "pyserving/loaders/batching", ()),
    ("model call", "/tensorflow/", ()),
    ("model call", "pyserving/loaders/saved_model", ()),
    ("decode", "pyserving/server/tensor_codec.py", ("to_numpy", "_from_content", "_from_field", "_read_values",
                                                   "_decode_string_list")),
    ("encode", "pyserving/server/tensor_codec.py", ()),
    ("decode", "pyserving/server/rest_json.py", ("parse_json_body", "predict_inputs", "request_signature_name")),
    ("decode", "pyserving/server/_json_parse.py", ()),
    ("decode", "pyserving/server/_json_values.py", ()),
    ("encode", "pyserving/server/rest_json.py", ()),
    ("encode", "pyserving/server/_json_floats.py", ()),
    ("decode", "grpc/_common.py", ("deserialize",)),
    ("encode", "grpc/_common.py", ("serialize",)),
    ("decode", "pyserving/server/grpc_servicers.py", ("decode", "_spec")),
    ("encode", "pyserving/server/grpc_servicers.py", ("Predict", "_fill_spec")),
    ("decode", "pyserving/server/rest_server.py", ("__call__", "_with_signature")),  # _PredictDecoder
    ("data plane", "pyserving/server/data_plane.py", ()),
    ("data plane", "pyserving/servable/", ()),
    ("data plane", "pyserving/manager/", ()),
    ("data plane", "pyserving/server/api_protos.py", ()),
    ("data plane", "pyserving/server/core.py", ()),
]
STAGES = ("transport", "decode", "data plane", "batching", "model call", "encode")


def median_us(call: Callable[[], Any], seconds: float = 0.4) -> float:
    """Median over 5 rounds of the mean time per call, in µs."""
    for _ in range(20):
        call()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 5:
        call()
        n += 1
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            call()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


# -- A. stage costs in-process ------------------------------------------------------------------

def embedded_server(config: Path, grpc_port: int = 0, rest_port: int = 0, rest_threads: int | None = None) -> Any:
    """A ``ModelServer`` built from the binary's own flags; ports 0 = that front end off."""
    from dataclasses import replace

    from pyserving.server.flags import parse_model_server_args
    from pyserving.server.main import models_from_flags, settings_from_flags
    from pyserving.server.model_server import ModelServer

    options = parse_model_server_args([f"--model_config_file={config}", f"--port={grpc_port or 8500}",
                                       f"--rest_api_port={rest_port}"])
    settings = replace(settings_from_flags(options), grpc_port=grpc_port)
    if rest_threads is not None:
        settings = replace(settings, rest_num_threads=rest_threads)
    return ModelServer(settings, models_from_flags(options))


class _Context:
    """The little of a gRPC ServicerContext the servicer uses on its success path."""

    def time_remaining(self) -> None:
        return None

    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


class _TimedServable:
    """Passes ``run`` through to the real servable and adds up the time spent inside it."""

    def __init__(self, real: Any) -> None:
        self.real, self.signatures, self.inside_s = real, real.signatures, 0.0

    def run(self, name: str, inputs: Any, output_filter: Any = ()) -> Any:
        began = time.perf_counter()
        try:
            return self.real.run(name, inputs, output_filter)
        finally:
            self.inside_s += time.perf_counter() - began


def data_plane_overhead_us(core: Any, servable: Any, spec: Any, inputs: dict[str, Any], calls: int = 2000) -> float:
    """Median µs per ``DataPlane.predict`` outside the model call, the real manager lookup included.

    The model call is timed inside each request and subtracted, so the model's own noise
    (large for the MLP on a shared machine) does not swamp the ~20 µs measured.
    """
    from pyserving.servable.handle import ServableHandle
    from pyserving.server.data_plane import DataPlane

    timed = _TimedServable(servable)

    class _Core:
        def get_handle(self, request: Any) -> Any:
            handle = core.get_handle(request)
            return ServableHandle(handle.id, timed, handle.release)

        def version_labels(self, name: str) -> Any:
            return core.version_labels(name)

        def version_states(self, name: str) -> Any:
            return core.version_states(name)

    plane = DataPlane(_Core())
    rounds = []
    for _ in range(5):
        timed.inside_s = 0.0
        began = time.perf_counter()
        for _ in range(calls // 5):
            plane.predict(spec, lambda _sig: inputs)
        rounds.append((time.perf_counter() - began - timed.inside_s) / (calls // 5) * 1e6)
    return statistics.median(rounds)


def stage_costs(config: Path, inputs: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    from tensorflow_serving.apis import predict_pb2

    from grpc_load import build_request
    from pyserving.servable.ids import ServableRequest
    from pyserving.server import rest_json, tensor_codec
    from pyserving.server.data_plane import ModelSpec
    from pyserving.server.grpc_servicers import PredictionServiceServicer

    server = embedded_server(config)
    server.start()
    try:
        servicer, context = PredictionServiceServicer(server.data_plane), _Context()
        out: dict[tuple[str, str], dict[str, float]] = {}
        for model in MODELS:
            x = inputs[model]
            with server.core.get_handle(ServableRequest.latest(model)) as handle:
                servable = handle.servable
            signature = servable.signatures["serving_default"]
            outputs = servable.run("serving_default", {"x": x})
            spec = ModelSpec(model)
            model_us = median_us(lambda: servable.run("serving_default", {"x": x}))
            plane_us = data_plane_overhead_us(server.core, servable, spec, {"x": x})
            payload = build_request(model, {"x": x})

            def grpc_encode() -> bytes:
                response = predict_pb2.PredictResponse()
                response.model_spec.name = model
                response.model_spec.version.value = 1
                response.model_spec.signature_name = "serving_default"
                for name, array in outputs.items():
                    response.outputs[name].CopyFrom(tensor_codec.from_numpy(array))
                return response.SerializeToString()

            out[(model, "gRPC")] = {
                "decode": median_us(lambda: [tensor_codec.to_numpy(t) for t in
                                             predict_pb2.PredictRequest.FromString(payload).inputs.values()]),
                "data plane": plane_us, "model call": model_us, "encode": median_us(grpc_encode),
                "servicer total": median_us(lambda: servicer.Predict(
                    predict_pb2.PredictRequest.FromString(payload), context).SerializeToString()),
            }
            body = json.dumps({"instances": x.tolist()}).encode()
            out[(model, "REST")] = {
                "decode": median_us(lambda: rest_json.predict_inputs(rest_json.parse_json_body(body), signature)),
                "data plane": plane_us, "model call": model_us,
                "encode": median_us(lambda: rest_json.encode_predict_response(outputs, True, signature)),
            }
        return out
    finally:
        server.stop()


# -- B. the real server under load, split by thread and by py-spy ---------------------------------

def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads, grouped: tensorflow, grpc-native, python."""
    ticks = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = "tensorflow" if comm.startswith("tf_") else (
            "grpc-native" if comm.startswith(("event_engine", "grpc", "default-execut", "resolver-exec")) else "python")
        groups[group] += (int(fields[11]) + int(fields[12])) / ticks
    return groups


def classify_stack(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        for stage, fragment, functions in _STAGE_RULES:
            if fragment in where and (not functions or name in functions):
                return stage
    return "transport"


def read_py_spy(path: Path) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[classify_stack(stack)] += int(count)
    return counts


def profile_under_load(server: ServerProcess, transport: str, model: str, clients: int, duration: float,
                       files: dict[str, Path], method: str, scratch: Path, use_py_spy: bool) -> dict[str, Any]:
    spy, raw = None, scratch / f"spy-{model}-{transport}-{clients}.txt"
    if use_py_spy:
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--duration", str(int(duration)),
                                "--rate", "250", "--gil", "--nonblocking", "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    before = thread_cpu(server.pid)
    if transport == "REST":
        summary, _ = run_wrk(server.rest_port, model, files[f"{model}.lua"], clients, duration)
        requests, rps = summary["requests"], summary["requests"] / (summary["duration_us"] / 1e6)
        p50 = summary["p50_us"] / 1e3
    else:
        summary = run_grpc(server.grpc_port, files[f"{model}.pb"], method, clients, duration)
        requests, rps, p50 = summary["requests"], summary["rps"], summary["p50_ms"]
    after = thread_cpu(server.pid)
    cpu = {group: (after[group] - before.get(group, 0.0)) / max(1, requests) * 1e6 for group in after}
    samples: dict[str, int] = {}
    if spy is not None:
        spy.wait(duration + 30)
        if raw.exists():
            samples = read_py_spy(raw)
    python_us = cpu.get("python", 0.0)
    total_samples = sum(samples.values())
    stages = {stage: 0.0 for stage in STAGES}
    if total_samples:
        for stage, count in samples.items():
            stages[stage] += python_us * count / total_samples
    else:
        stages["transport"] += python_us  # no profile: Python time stays unsplit (shown as transport)
    stages["model call"] += cpu.get("tensorflow", 0.0)
    stages["transport"] += cpu.get("grpc-native", 0.0)
    return {"rps": rps, "p50_ms": p50, "cpu_us": sum(cpu.values()), "stages": stages, "samples": total_samples,
            "gil_pct": total_samples / (250 * duration) * 100 if spy is not None else None, "threads": cpu}


# -- C. front-end options: the serve sub-command ---------------------------------------------------

def serve(args: argparse.Namespace) -> None:
    """Run one front-end variant until SIGTERM; prints SERVE_READY once it accepts requests."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.mode == "sync":
        server = embedded_server(Path(args.config), grpc_port=args.grpc_port, rest_port=args.rest_port,
                                 rest_threads=args.rest_threads)
        server.start()
        print(SERVE_READY, flush=True)
        stop.wait()
        server.stop()
        return
    import asyncio

    asyncio.run(_serve_aio(args, stop))


async def _serve_aio(args: argparse.Namespace, stop: Any) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tensorflow_serving.apis import predict_pb2

    from pyserving.servable.errors import ServingError
    from pyserving.server.grpc_servicers import PredictionServiceServicer

    server = None
    loop = asyncio.get_running_loop()
    if args.mode.startswith("noop"):
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "tiny"
        response.outputs["y"].float_val.append(2.5)
        answer = response.SerializeToString()

        def noop(request: bytes, context: Any) -> bytes:
            return answer

        async def noop_async(request: bytes, context: Any) -> bytes:
            return answer

        handler = grpc.unary_unary_rpc_method_handler(noop if args.mode == "noop-sync" else noop_async)
    else:
        server = embedded_server(Path(args.config))
        server.start()
        servicer = PredictionServiceServicer(server.data_plane)
        body = PredictionServiceServicer.Predict.__wrapped__  # the servicer's Predict without the sync wrapper
        executor = ThreadPoolExecutor(max_workers=8) if args.mode == "aio-pool" else None

        async def predict(request: Any, context: Any) -> Any:
            try:
                if executor is None:
                    return body(servicer, request, context)
                return await loop.run_in_executor(executor, body, servicer, request, context)
            except ServingError as exc:
                await context.abort(grpc.StatusCode(_code(exc)), exc.message)

        handler = grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=predict_pb2.PredictRequest.FromString,
            response_serializer=predict_pb2.PredictResponse.SerializeToString)
    generic = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler})
    if args.mode == "noop-sync":
        from concurrent.futures import ThreadPoolExecutor as Pool

        sync_server = grpc.server(Pool(max_workers=8), handlers=[generic])
        sync_server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
        sync_server.start()
        print(SERVE_READY, flush=True)
        await loop.run_in_executor(None, stop.wait)
        sync_server.stop(1).wait()
        return
    aio_server = grpc.aio.server(handlers=[generic])
    aio_server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    await aio_server.start()
    print(SERVE_READY, flush=True)
    await loop.run_in_executor(None, stop.wait)
    await aio_server.stop(1)
    if server is not None:
        server.stop()


def _code(exc: Any) -> tuple[int, str]:
    import grpc

    return next((c.value for c in grpc.StatusCode if c.value[0] == int(exc.code)), grpc.StatusCode.UNKNOWN.value)


def start_variant(mode: str, config: Path, scratch: Path, rest_threads: int | None = None) -> ServerProcess:
    grpc_port, rest_port = free_port(), free_port() if mode == "sync" else 0
    command = [sys.executable, str(Path(__file__).resolve()), "serve", "--mode", mode, "--config", str(config),
               "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)]
    if rest_threads is not None:
        command += ["--rest-threads", str(rest_threads)]
    server = ServerProcess(f"variant-{mode}", command, scratch / f"variant-{mode}-{rest_threads}.log",
                           rest_port, grpc_port)
    if not server.wait_for(SERVE_READY):
        raise RuntimeError(f"variant {mode} did not start:\n{server.log_tail()}")
    return server


def load_point(server: ServerProcess, transport: str, model: str, clients: int, duration: float,
               files: dict[str, Path], method: str, channels: int = 1, cpu_pids: list[int] | None = None) -> dict[str, Any]:
    pids = cpu_pids or [server.pid]
    cpu0 = sum(tree_cpu_seconds(pid) for pid in pids)
    if transport == "REST":
        summary, _ = run_wrk(server.rest_port, model, files[f"{model}.lua"], clients, duration)
        requests, rps, p50 = summary["requests"], summary["requests"] / (summary["duration_us"] / 1e6), summary["p50_us"] / 1e3
        errors = summary["errors"]
    else:
        summary = run_grpc(server.grpc_port, files[f"{model}.pb"], method, clients, duration, channels=channels)
        requests, rps, p50, errors = summary["requests"], summary["rps"], summary["p50_ms"], sum(summary["errors"].values())
    cpu = sum(tree_cpu_seconds(pid) for pid in pids) - cpu0
    return {"rps": rps, "p50_ms": p50, "cpu_us": cpu / max(1, requests) * 1e6, "errors": errors}


def h2load_point(server: ServerProcess, model: str, clients: int, duration: float, files: dict[str, Path],
                 method: str) -> dict[str, Any] | None:
    """The same gRPC Predict driven by h2load (nghttp2's C load generator), or None without it.

    Calibrates the client: h2load costs a few µs of CPU per request where a Python gRPC
    client costs ~200, so on 2 shared cores its numbers show the server alone. It reports
    the mean latency (no percentiles) and cannot see gRPC statuses (they travel in HTTP/2
    trailers), so every server here was first checked with the official stub.
    """
    import struct

    if shutil.which("h2load") is None:
        return None
    framed = files[f"{model}.pb"].with_suffix(".grpc")
    payload = files[f"{model}.pb"].read_bytes()
    framed.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)  # gRPC's length-prefixed message
    connections = 1 if clients == 1 else 2
    cpu0 = tree_cpu_seconds(server.pid)
    out = subprocess.run(
        ["h2load", "-D", str(max(1, round(duration))), "-c", str(connections), "-m", str(clients // connections),
         "-t", "1", "-d", str(framed), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{server.grpc_port}{method}"],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    cpu = tree_cpu_seconds(server.pid) - cpu0

    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                     r"(\d+) timeout", out)
    latency = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if not (rate and done and latency):
        raise RuntimeError(f"h2load output not understood:\n{out[-2000:]}")
    mean_ms = float(latency.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[latency.group(2)]
    requests = int(done.group(1))
    return {"rps": float(rate.group(1)), "p50_ms": mean_ms, "cpu_us": cpu / max(1, requests) * 1e6,
            "errors": int(done.group(3)) + int(done.group(4)) + int(done.group(5))}


# -- D. micro-measurements -------------------------------------------------------------------------

def zero_copy_costs() -> list[tuple[str, float]]:
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from grpc_load import build_request
    from pyserving.server import tensor_codec

    rows = []
    for shape in ((1, 784), (32, 784)):
        x = np.random.default_rng(0).random(shape).astype(np.float32)
        packed = tf.make_tensor_proto(x)  # what TF Serving clients send: tensor_content
        typed = tensor_codec.from_numpy(x)  # float_val
        payload = build_request("mlp", {"x": x})
        label = "x".join(map(str, shape))
        rows += [
            (f"{label} PredictRequest.FromString (tensor_content)", median_us(lambda: predict_pb2.PredictRequest.FromString(payload))),
            (f"{label} to_numpy, tensor_content (zero copy, np.frombuffer)", median_us(lambda: tensor_codec.to_numpy(packed))),
            (f"{label} same + .copy() (what a copying decoder pays)", median_us(lambda: tensor_codec.to_numpy(packed).copy())),
            (f"{label} tf.make_ndarray, tensor_content", median_us(lambda: tf.make_ndarray(packed))),
            (f"{label} to_numpy, float_val (typed field)", median_us(lambda: tensor_codec.to_numpy(typed))),
        ]
    return rows


def _echo(conn: Any) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send_bytes(data)


def ipc_round_trip_us(size: int, seconds: float = 1.0) -> tuple[float, float]:
    """(p50 µs, caller CPU µs) of one round trip of ``size`` bytes to another process and back."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    worker = context.Process(target=_echo, args=(child,), daemon=True)
    worker.start()
    payload = b"x" * size
    for _ in range(200):
        parent.send_bytes(payload)
        parent.recv_bytes()
    times, cpu0, start = [], time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        parent.send_bytes(payload)
        parent.recv_bytes()
        times.append(time.perf_counter() - began)
    cpu = (time.process_time() - cpu0) / len(times) * 1e6
    parent.send_bytes(b"")
    worker.join(10)
    return statistics.median(times) * 1e6, cpu


# -- the report ------------------------------------------------------------------------------------

def _stage_table(costs: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    lines = ["| model | transport | decode µs | data plane µs | model call µs | encode µs | sum µs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (model, transport), c in costs.items():
        total = sum(c[s] for s in ("decode", "data plane", "model call", "encode"))
        lines.append(f"| {model} | {transport} | {c['decode']:.1f} | {c['data plane']:.1f} | {c['model call']:.1f} | "
                     f"{c['encode']:.1f} | {total:.1f} |")
    grpc_rows = [(m, c["servicer total"]) for (m, t), c in costs.items() if t == "gRPC"]
    lines += ["", "gRPC servicer's whole Predict in-process (parse, data plane, model, response, serialize; no "
              "transport): " + ", ".join(f"{m} {us:.1f} µs" for m, us in grpc_rows)]
    return lines


def _profile_table(rows: list[tuple[str, str, int, dict[str, Any]]]) -> list[str]:
    lines = ["| model | transport | clients | req/s | p50 ms | server CPU µs/req | " +
             " | ".join(f"{s} µs (%)" for s in STAGES) + " | GIL held % |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|"]
    for model, transport, clients, r in rows:
        cells = " | ".join(f"{r['stages'][s]:.0f} ({r['stages'][s] / r['cpu_us'] * 100:.0f}%)" for s in STAGES)
        gil = "-" if r["gil_pct"] is None else f"{r['gil_pct']:.0f}"
        lines.append(f"| {model} | {transport} | {clients} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['cpu_us']:.0f} | "
                     f"{cells} | {gil} |")
    return lines


def _variant_table(rows: list[tuple[str, str, str, int, dict[str, Any]]]) -> list[str]:
    lines = ["| option | transport | model | clients | req/s | vs shipped | p50 ms | server CPU µs/req | errors |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    shipped = {(t.split()[0], m, c): r for name, t, m, c, r in rows if name.startswith("shipped")}
    for name, transport, model, clients, r in rows:
        base = shipped.get((transport.split()[0], model, clients))
        ratio = f"{r['rps'] / base['rps']:.2f}x" if base and not name.startswith("shipped") else "-"
        lines.append(f"| {name} | {transport} | {model} | {clients} | {r['rps']:,.0f} | {ratio} | {r['p50_ms']:.3f} | "
                     f"{r['cpu_us']:.0f} | {r['errors']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        sub = argparse.ArgumentParser(prog="profile_request_path.py serve")
        sub.add_argument("--mode", choices=["sync", "aio-inline", "aio-pool", "noop-sync", "noop-aio"], required=True)
        sub.add_argument("--config", required=True)
        sub.add_argument("--grpc-port", type=int, required=True)
        sub.add_argument("--rest-port", type=int, default=0)
        sub.add_argument("--rest-threads", type=int, default=None)
        serve(sub.parse_args(argv[1:]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point (default 5)")
    parser.add_argument("--clients", default="1,32", help="client counts for parts B and C (default 1,32)")
    parser.add_argument("--quick", action="store_true", help="2 s points")
    parser.add_argument("--no-py-spy", action="store_true", help="part B without py-spy (Python time unsplit)")
    parser.add_argument("--parts", default="A,B,C,D", help="which parts to run (default A,B,C,D)")
    parser.add_argument("--output", help="also write the report here")
    parser.add_argument("--batching", action="store_true",
                        help="part B profiles the server with --enable_batching (run.py's batching parameters)")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    clients_list = [int(c) for c in args.clients.split(",")]
    parts = set(args.parts.upper().split(","))
    use_py_spy = not args.no_py_spy and shutil.which("py-spy") is not None
    if shutil.which("wrk") is None:
        print("profile_request_path.py needs wrk for the REST load: apt-get install -y wrk", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from grpc_load import build_request, predict_method_path
    from run import write_model_config

    report = ["# Where a request's time goes in pyserving", "",
              f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, {duration:g} s per load point; "
              "load generator and server share the cores."]
    scratch = Path(tempfile.mkdtemp(prefix="pyserving-profile-"))
    started: list[ServerProcess] = []

    def log(text: str) -> None:
        print(f"[profile] {text}", file=sys.stderr, flush=True)

    try:
        dirs = write_models(scratch / "models")
        config = write_model_config(dirs, scratch / "models.config")
        inputs = model_inputs()
        files: dict[str, Path] = {}
        for model in MODELS:
            files[f"{model}.lua"] = scratch / f"{model}.lua"
            files[f"{model}.lua"].write_text(WRK_LUA % json.dumps({"instances": inputs[model].tolist()}))
            files[f"{model}.pb"] = scratch / f"{model}.pb"
            files[f"{model}.pb"].write_bytes(build_request(model, {"x": inputs[model]}))
        method = predict_method_path()

        if "A" in parts:
            log("A: stage costs in-process")
            report += ["", "## A. Stage costs in-process (median µs per request, one thread, no transport)", ""]
            report += _stage_table(stage_costs(config, inputs))

        if "B" in parts:
            batching_file = None
            if args.batching:
                batching_file = scratch / "batching.pbtxt"
                batching_file.write_text(DEFAULT_BATCHING)
            server = start_pyserving("pyserving", dirs, scratch, batching_file=batching_file)
            if not isinstance(server, ServerProcess):
                raise SystemExit(f"--batching: {server}")
            started.append(server)
            rows = []
            for model in MODELS:
                for transport in ("gRPC", "REST"):
                    run_grpc(server.grpc_port, files[f"{model}.pb"], method, 8, 1.0)  # warm-up
                    for clients in clients_list:
                        log(f"B: {model} {transport} c={clients}")
                        rows.append((model, transport, clients, profile_under_load(
                            server, transport, model, clients, duration, files, method, scratch, use_py_spy)))
            server.stop()
            report += ["", "## B. pyserving-model-server" + (" --enable_batching" if args.batching else "") +
                       " under load: server CPU per request, by stage", "",
                       "Stages from per-thread CPU (TensorFlow threads = model call, gRPC native threads = transport) "
                       f"and {'the Python threads split by where the GIL holder was (py-spy --gil)' if use_py_spy else 'no py-spy (Python time unsplit)'}"
                       "; transport = gRPC / uvicorn / asyncio / thread hand-offs, i.e. everything outside the four "
                       "stages. py-spy samples at 250 Hz and costs the machine some CPU, so req/s here are a little "
                       "lower than in RESULTS.md.", ""]
            report += _profile_table(rows)

        if "C" in parts:
            rows_c: list[tuple[str, str, str, int, dict[str, Any]]] = []
            h2_rows: list[tuple[str, str, str, int, dict[str, Any]]] = []
            variants = [("shipped: thread-pool gRPC server", "sync", None), ("grpc.aio, Predict inline on the loop", "aio-inline", None),
                        ("grpc.aio, Predict in a thread pool", "aio-pool", None)]
            for label, mode, _ in variants:
                server = start_variant(mode, config, scratch)
                started.append(server)
                for model in MODELS:
                    run_grpc(server.grpc_port, files[f"{model}.pb"], method, 8, 1.0)
                    for clients in clients_list:
                        log(f"C: {label} {model} c={clients}")
                        rows_c.append((label, "gRPC", model, clients,
                                       load_point(server, "gRPC", model, clients, duration, files, method)))
                        h2 = h2load_point(server, model, clients, duration, files, method)
                        if h2 is not None:
                            h2_rows.append((label, "gRPC (h2load)", model, clients, h2))
                if mode == "sync":
                    for model in MODELS:
                        for clients in clients_list:
                            log(f"C: shipped REST {model} c={clients}")
                            rows_c.append(("shipped: REST, model call in the thread pool", "REST", model, clients,
                                           load_point(server, "REST", model, clients, duration, files, method)))
                server.stop()
            for label, mode in (("no-op handler, thread-pool gRPC server", "noop-sync"),
                                ("no-op handler, grpc.aio server", "noop-aio")):
                server = start_variant(mode, config, scratch)
                started.append(server)
                for clients in clients_list:
                    log(f"C: {label} c={clients}")
                    rows_c.append((label, "gRPC", "tiny", clients,
                                   load_point(server, "gRPC", "tiny", clients, duration, files, method)))
                    h2 = h2load_point(server, "tiny", clients, duration, files, method)
                    if h2 is not None:
                        h2_rows.append((label, "gRPC (h2load)", "tiny", clients, h2))
                server.stop()
            server = start_variant("sync", config, scratch, rest_threads=0)
            started.append(server)
            for model in MODELS:
                for clients in clients_list:
                    log(f"C: REST inline {model} c={clients}")
                    rows_c.append(("REST, model call inline on the event loop (rest_num_threads=0)", "REST", model,
                                   clients, load_point(server, "REST", model, clients, duration, files, method)))
            server.stop()
            # SO_REUSEPORT: one process, then two, on one gRPC port (4 connections per client process).
            reuse = ("--grpc_channel_arguments=grpc.so_reuseport=1",)
            first = start_pyserving("reuseport-a", dirs, scratch, extra_flags=reuse)
            assert isinstance(first, ServerProcess)
            started.append(first)
            top = max(clients_list)
            for count in (1, 2):
                if count == 2:
                    second = start_pyserving("reuseport-b", dirs, scratch, extra_flags=reuse, grpc_port=first.grpc_port)
                    assert isinstance(second, ServerProcess)
                    started.append(second)
                pids = [s.pid for s in started if s.name.startswith("reuseport") and s.proc.poll() is None]
                for model in MODELS:
                    run_grpc(first.grpc_port, files[f"{model}.pb"], method, 8, 1.0, channels=4)
                    log(f"C: SO_REUSEPORT x{count} {model} c={top}")
                    rows_c.append((f"{count} pyserving-model-server process{'es' if count > 1 else ''}, SO_REUSEPORT, "
                                   "4 connections per client process", "gRPC", model, top,
                                   load_point(first, "gRPC", model, top, duration, files, method, channels=4,
                                              cpu_pids=pids)))
            for server in started:
                server.stop()
            report += ["", "## C. Front-end options (req/s; server CPU summed over its processes)", ""]
            report += _variant_table(rows_c)
            if h2_rows:
                report += ["", "The gRPC variants again, driven by h2load (C; mean latency instead of p50; a few µs of "
                           "client CPU per request, so these show the server alone):", ""]
                report += _variant_table(h2_rows)

        if "D" in parts:
            log("D: micro-measurements")
            report += ["", "## D. Micro-measurements", "", "| what | µs |", "|---|---:|"]
            report += [f"| {name} | {us:.2f} |" for name, us in zero_copy_costs()]
            report += ["", "| one round trip to another process (multiprocessing Pipe) | p50 µs | caller CPU µs |",
                       "|---|---:|---:|"]
            for size in (64, 3200):
                p50, cpu = ipc_round_trip_us(size)
                report.append(f"| {size} bytes each way | {p50:.1f} | {cpu:.1f} |")
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    text = "\n".join(report) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
