"""What a route costs: one client calling a route vs. the model it routes to, REST and gRPC.

Starts ``pyserving-model-server`` with the tiny model (y = 0.5 x + 2) twice under two names
(``tiny`` and ``tiny_b``) and two routes in front of them: ``ab`` (90/10 by weight, no key)
and ``sticky`` (the same arms, with a segment key the client sends, a header rule it does
not match, and a shadow to ``tiny_b`` at 100 %). One client (a keep-alive ``http.client``
connection for REST; the blocking official-stub call path for gRPC) alternates between the
direct model and each route in rounds, so machine noise hits all of them alike; the table
gives the median over rounds of each round's p50 and the difference to the direct call.

Usage: ``python benchmarks/bench_routing.py [--seconds 2] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: servers, models, ports)

ROUTES = """
routes {
  name: "ab"
  arms { name: "a" model_name: "tiny" weight: 90 }
  arms { name: "b" model_name: "tiny_b" weight: 10 }
}
routes {
  name: "sticky"
  segment_key: "x-user-id"
  arms { name: "a" model_name: "tiny" weight: 90 }
  arms { name: "b" model_name: "tiny_b" weight: 10 }
  rules { header: "x-country" equals: "DE" arm: "b" }
  shadow { model_name: "tiny_b" percent: 100 }
}
"""
TARGETS = ("tiny", "ab", "sticky")
HEADERS = {"Content-Type": "application/json", "x-user-id": "user-42"}


def rest_p50(port: int, name: str, seconds: float) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"instances": [[1.0]]})
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        began = time.perf_counter()
        conn.request("POST", f"/v1/models/{name}:predict", body, HEADERS)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - began)
        if response.status != 200:
            raise RuntimeError(f"{name}: HTTP {response.status}")
    conn.close()
    return statistics.median(times) * 1e3


def grpc_p50(port: int, name: str, seconds: float) -> float:
    import grpc

    from grpc_load import build_request, predict_method_path

    import numpy as np

    payload = build_request(name, {"x": np.array([[1.0]], np.float32)})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(predict_method_path())
        metadata = (("x-user-id", "user-42"),)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            began = time.perf_counter()
            call(payload, metadata=metadata, timeout=30)
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per target per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="pyserving-routing-"))
    from tests.support.saved_models import write_half_plus_two_tf1

    dirs = {"tiny": scratch / "tiny", "tiny_b": scratch / "tiny_b"}
    for path in dirs.values():
        write_half_plus_two_tf1(path / "1")
    routes = scratch / "routes.config"
    routes.write_text(ROUTES)
    server = bench.start_pyserving("pyserving", dirs, scratch, extra_flags=(f"--routing_config_file={routes}",))
    assert isinstance(server, bench.ServerProcess)
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for transport, measure, port in (("REST", rest_p50, server.rest_port), ("gRPC", grpc_p50, server.grpc_port)):
            for name in TARGETS:
                measure(port, name, 0.3)  # warm up
            for _ in range(args.rounds):
                for name in TARGETS:
                    results.setdefault((transport, name), []).append(measure(port, name, args.seconds))
    finally:
        server.stop()
    print(f"One client, p50 latency, median of {args.rounds} rounds x {args.seconds:g} s ({bench.machine_line()})\n")
    print("| transport | called | p50 ms | route overhead ms |")
    print("|---|---|---:|---:|")
    for transport in ("REST", "gRPC"):
        direct = statistics.median(results[(transport, "tiny")])
        for name in TARGETS:
            p50 = statistics.median(results[(transport, name)])
            label = {"tiny": "model `tiny` directly", "ab": "route `ab` (90/10 by weight)",
                     "sticky": "route `sticky` (segment key, rule, 100 % shadow)"}[name]
            overhead = "" if name == "tiny" else f"{p50 - direct:+.3f}"
            print(f"| {transport} | {label} | {p50:.3f} | {overhead} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
