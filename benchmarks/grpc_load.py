"""A multi-process asyncio gRPC load generator for TF Serving's ``PredictionService/Predict``.

``P`` worker processes each keep ``M`` requests in flight (``grpc.aio``, one event loop,
``M`` coroutines that send the next request as soon as the previous one is answered) for a
fixed time, and report every latency (ms) and every non-OK status. One Python process
driving gRPC needs a quarter to a third of a core per 1k requests/s, so on a small machine
the load is spread over processes and its CPU time is reported next to the server's.

Per request the worker does as little as it can: the ``PredictRequest`` is serialized once,
in the parent, with the official ``tensorflow-serving-api`` protos, and sent as bytes on the
official stub's method path (read from ``PredictionServiceStub`` itself); answers stay
bytes (the status says whether the request succeeded). Before the timed window each worker
connects and sends a few requests, and the parent checks one answer through the official
stub when it builds the request itself (``--model``). The workers import only ``grpc``
(no TensorFlow), so they start in a fraction of a second.

Connections: each worker opens ``--channels`` channels (own TCP connections, never shared
through gRPC's global subchannel pool) and spreads its coroutines over them round robin.

Usage::

    python benchmarks/grpc_load.py --target 127.0.0.1:8500 --model half_plus_two --shape 1,1 \\
        --processes 2 --concurrency 16 --duration 10 [--json]
    python benchmarks/grpc_load.py --target 127.0.0.1:8500 --request-file request.bin ...

``--request-file`` holds a serialized ``PredictRequest`` (``run.py`` writes it). ``--json``
prints one JSON object: requests, errors (status name -> count), rps, p50_ms, p99_ms,
elapsed_s, client_cpu_s (CPU seconds of the workers during the timed window) and the
window itself as ``time.monotonic()`` values (started_at, finished_at).
Only loopback targets are meant; the run ends by itself after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

#: How long the parent waits for a worker to connect and send its warm-up requests.
READY_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 3


@dataclass
class LoadResult:
    """What one load run measured; latencies in milliseconds."""

    requests: int
    errors: dict[str, int]
    rps: float
    p50_ms: float
    p99_ms: float
    elapsed_s: float
    client_cpu_s: float
    processes: int
    concurrency: int
    #: the timed window in ``time.monotonic()`` seconds (CLOCK_MONOTONIC: comparable across processes)
    started_at: float = 0.0
    finished_at: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def predict_method_path() -> str:
    """The Predict method path exactly as the official generated stub calls it."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class _Recorder:
        def __init__(self) -> None:
            self.paths: dict[str, str] = {}

        def unary_unary(self, path: str, *args: Any, **kwargs: Any) -> None:
            self.paths[path.rsplit("/", 1)[-1]] = path

        unary_stream = stream_unary = stream_stream = unary_unary

    recorder = _Recorder()
    prediction_service_pb2_grpc.PredictionServiceStub(recorder)
    return recorder.paths["Predict"]


def build_request(model: str, inputs: dict[str, Any], signature_name: str = "") -> bytes:
    """A serialized ``PredictRequest`` built the way TF Serving's clients build it."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature_name:
        request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request.SerializeToString()


def check_with_official_stub(target: str, payload: bytes, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send ``payload`` once through the official stub; return the outputs as numpy arrays."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_pb2.PredictRequest.FromString(payload), timeout=timeout_s)
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


# -- the worker process ---------------------------------------------------------------------


async def _drive(
    target: str, method: str, payload: bytes, concurrency: int, channels: int, timeout_s: float, conn: Connection
) -> None:
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        calls = [channel.unary_unary(method) for channel in opened]  # bytes in, bytes out
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        for call in calls:
            for _ in range(WARMUP_REQUESTS):
                await call(payload, timeout=timeout_s)
        conn.send("ready")
        start_at, end_at = conn.recv()  # time.monotonic() values, shared by all workers
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        latencies = array("d")
        errors: Counter[str] = Counter()
        monotonic, perf = time.monotonic, time.perf_counter

        async def client(call: Any) -> None:
            append = latencies.append
            while monotonic() < end_at:
                began = perf()
                try:
                    await call(payload, timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    continue
                append((perf() - began) * 1e3)

        cpu_before = time.process_time()
        await asyncio.gather(*(client(calls[i % channels]) for i in range(concurrency)))
        finished = time.monotonic()
        cpu = time.process_time() - cpu_before
        conn.send({"latencies": latencies.tobytes(), "errors": dict(errors), "finished": finished, "cpu_s": cpu})
    finally:
        for channel in opened:
            await channel.close()


def _worker(
    target: str, method: str, payload: bytes, concurrency: int, channels: int, timeout_s: float, conn: Connection
) -> None:
    try:
        asyncio.run(_drive(target, method, payload, concurrency, channels, timeout_s, conn))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        try:
            conn.send({"failed": f"{type(exc).__name__}: {exc}"})
        except OSError:
            pass
    finally:
        conn.close()


# -- the parent -----------------------------------------------------------------------------


def run_load(
    target: str,
    payload: bytes,
    *,
    processes: int,
    concurrency: int,
    duration_s: float,
    method: str | None = None,
    channels: int = 1,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Drive ``target`` with ``processes`` x ``concurrency`` requests in flight for ``duration_s``.

    Raises RuntimeError when a worker cannot connect or fails outside a request (an RPC
    error during the timed window is counted, not raised).
    """
    if processes < 1 or concurrency < 1 or channels < 1 or duration_s <= 0:
        raise ValueError(
            f"processes, concurrency and channels must be >= 1 and duration_s > 0, got "
            f"{processes}, {concurrency}, {channels}, {duration_s}"
        )
    method = method or "/tensorflow.serving.PredictionService/Predict"
    context = multiprocessing.get_context("spawn")  # no inherited gRPC or TensorFlow state
    pipes, workers = [], []
    for _ in range(processes):
        parent_end, child_end = context.Pipe()
        worker = context.Process(
            target=_worker, args=(target, method, payload, concurrency, min(channels, concurrency), timeout_s, child_end),
            daemon=True,
        )
        worker.start()
        child_end.close()
        pipes.append(parent_end)
        workers.append(worker)
    try:
        for pipe in pipes:
            if not pipe.poll(READY_TIMEOUT_S):
                raise RuntimeError(f"a gRPC load worker did not get ready within {READY_TIMEOUT_S} s")
            message = pipe.recv()
            if message != "ready":
                raise RuntimeError(f"a gRPC load worker failed before the run: {message}")
        start_at = time.monotonic() + 0.05
        for pipe in pipes:
            pipe.send((start_at, start_at + duration_s))
        reports = []
        for pipe in pipes:
            if not pipe.poll(duration_s + timeout_s + READY_TIMEOUT_S):
                raise RuntimeError("a gRPC load worker did not report")
            report = pipe.recv()
            if "failed" in report:
                raise RuntimeError(f"a gRPC load worker failed: {report['failed']}")
            reports.append(report)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    latencies = array("d")
    errors: Counter[str] = Counter()
    for report in reports:
        latencies.frombytes(report["latencies"])
        errors.update(report["errors"])
    elapsed = max(report["finished"] for report in reports) - start_at
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")  # noqa: E731
    return LoadResult(
        requests=len(ordered), errors=dict(errors), rps=len(ordered) / elapsed, p50_ms=pick(0.5), p99_ms=pick(0.99),
        elapsed_s=elapsed, client_cpu_s=sum(report["cpu_s"] for report in reports), processes=processes,
        concurrency=concurrency, started_at=start_at, finished_at=start_at + elapsed, latencies_ms=ordered,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC server (loopback)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--request-file", help="a serialized PredictRequest")
    source.add_argument("--model", help="build the request: model name (with --shape, --input)")
    parser.add_argument("--shape", default="1,1", help="shape of the float32 input, e.g. 1,784")
    parser.add_argument("--input", default="x", help="input tensor name")
    parser.add_argument("--method", default=None, help="method path (default: the official stub's Predict)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per process")
    parser.add_argument("--channels", type=int, default=1, help="channels (TCP connections) per process")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request deadline, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.request_file:
        with open(args.request_file, "rb") as handle:
            payload = handle.read()
        method = args.method or "/tensorflow.serving.PredictionService/Predict"
    else:
        import numpy as np

        shape = tuple(int(d) for d in args.shape.split(","))
        payload = build_request(args.model, {args.input: np.full(shape, 0.5, np.float32)})
        outputs = check_with_official_stub(args.target, payload)
        print(f"official stub answered: {', '.join(f'{k}{list(v.shape)}' for k, v in outputs.items())}", file=sys.stderr)
        method = args.method or predict_method_path()
    result = run_load(
        args.target, payload, processes=args.processes, concurrency=args.concurrency, duration_s=args.duration,
        method=method, channels=args.channels, timeout_s=args.timeout,
    )
    if args.json:
        report = asdict(result)
        del report["latencies_ms"]
        print(json.dumps(report))
    else:
        print(f"{result.requests} requests in {result.elapsed_s:.2f} s: {result.rps:.0f} req/s, p50 {result.p50_ms:.3f} ms, "
              f"p99 {result.p99_ms:.3f} ms, errors {result.errors or 0}, client CPU {result.client_cpu_s:.2f} s "
              f"({args.processes} processes x {args.concurrency} in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
