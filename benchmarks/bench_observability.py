"""What metrics and request logging cost: throughput with them on vs. off, in one run.

Starts ``pyserving-model-server`` three times on the tiny model (half_plus_two, one float
per request), on free loopback ports, all at once:

* ``plain``: default flags;
* ``metrics``: ``--monitoring_config_file`` (Prometheus on, the default path);
* ``metrics+logging``: the same plus ``logging_config`` on the model, ``sampling_rate: 1.0``
  (every request and its response written as a ``PredictionLog`` TFRecord).

Each load point — REST with wrk at 8 and 32 clients, gRPC with ``grpc_load.py`` at 8
clients — is measured on every server in turn, for ``--rounds`` rounds of ``--seconds``
each, and the order of the servers rotates from round to round, so background load on the
shared machine and any drift hit every configuration alike. The Markdown table gives the
median req/s over the rounds and its ratio to ``plain``, and the median server CPU µs per
request (the noise-robust cost). Afterwards it checks that the features were on: the
metrics page counts the requests, and the request log holds about as many records as the
logging server answered (a shortfall means the logger dropped records: its queue was full).

Usage: ``python benchmarks/bench_observability.py [--seconds 3] [--rounds 3]`` (about
2.5 minutes with the defaults; needs wrk: ``apt-get install -y wrk``). Every server is
stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: models, servers, load generators)

PLAIN, METRICS, LOGGING = "plain", "metrics", "metrics+logging"
CONFIGS = (PLAIN, METRICS, LOGGING)
#: (transport, clients) of each load point.
POINTS = (("REST", 8), ("REST", 32), ("gRPC", 8))
MONITORING = 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'


def logging_model_config(model_dir: Path, prefix: Path, path: Path) -> Path:
    """The model config of ``metrics+logging``: tiny with every request logged under ``prefix``."""
    path.write_text(f"""model_config_list {{
  config {{
    name: 'tiny' base_path: '{model_dir}' model_platform: 'tensorflow'
    logging_config {{
      log_collector_config {{ filename_prefix: '{prefix}' }}
      sampling_config {{ sampling_rate: 1.0 }}
    }}
  }}
}}
""")
    return path


def start_servers(model_dir: Path, scratch: Path) -> dict[str, bench.ServerProcess]:
    monitoring = scratch / "monitoring.config"
    monitoring.write_text(MONITORING)
    logged = logging_model_config(model_dir, scratch / "requestlog" / "tiny", scratch / "logged.config")
    flags = {
        PLAIN: (),
        METRICS: (f"--monitoring_config_file={monitoring}",),
        # A repeated flag keeps its last value: this --model_config_file replaces start_pyserving's.
        LOGGING: (f"--monitoring_config_file={monitoring}", f"--model_config_file={logged}"),
    }
    servers: dict[str, bench.ServerProcess] = {}
    try:
        for name in CONFIGS:
            server = bench.start_pyserving(name, {"tiny": model_dir}, scratch, extra_flags=flags[name])
            assert isinstance(server, bench.ServerProcess)  # no batching flags: never BATCHING_NA
            servers[name] = server
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def tf_request_count(server: bench.ServerProcess) -> float:
    """The sum of ``:tensorflow:serving:request_count`` on the server's metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return sum(s.value for s in families[":tensorflow:serving:request_count"].samples)


def count_records(folder: Path) -> int:
    import tensorflow as tf

    files = sorted(str(p) for p in folder.glob("*.tfrecord"))
    return sum(1 for _ in tf.data.TFRecordDataset(files)) if files else 0


def render(results: dict[tuple[str, int, str], list[bench.Point]], rounds: int, seconds: float) -> str:
    def median(points: list[bench.Point], field: str) -> float:
        return statistics.median(getattr(p, field) for p in points)

    lines = [
        f"Throughput of the tiny model (one float per request), median of {rounds} interleaved rounds x "
        f"{seconds:g} s per point ({bench.machine_line()}).", "",
        "| load | plain req/s | metrics req/s | ratio | metrics+logging req/s | ratio | "
        "server CPU µs/req: plain / metrics / +logging |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for transport, clients in POINTS:
        rps = {c: median(results[(transport, clients, c)], "rps") for c in CONFIGS}
        cpu = {c: statistics.median(p.cpu_us_per_request for p in results[(transport, clients, c)]) for c in CONFIGS}
        tool = "wrk" if transport == "REST" else "grpc_load"
        lines.append(
            f"| {transport} ({tool}), {clients} clients | {rps[PLAIN]:,.0f} | {rps[METRICS]:,.0f} | "
            f"{rps[METRICS] / rps[PLAIN]:.3f} | {rps[LOGGING]:,.0f} | {rps[LOGGING] / rps[PLAIN]:.3f} | "
            f"{cpu[PLAIN]:.0f} / {cpu[METRICS]:.0f} / {cpu[LOGGING]:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per load point and round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench_observability.py needs wrk for the REST load: apt-get install -y wrk", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from grpc_load import build_request, predict_method_path

    scratch = Path(tempfile.mkdtemp(prefix="pyserving-observability-"))
    servers: dict[str, bench.ServerProcess] = {}
    results: dict[tuple[str, int, str], list[bench.Point]] = {}
    try:
        print(f"[observability] writing the models into {scratch}", file=sys.stderr, flush=True)
        model_dir = bench.write_models(scratch / "models")["tiny"]
        x = np.array([[1.0]], np.float32)
        files = {"tiny.lua": scratch / "tiny.lua", "tiny.pb": scratch / "tiny.pb"}
        files["tiny.lua"].write_text(bench.WRK_LUA % json.dumps({"instances": x.tolist()}))
        files["tiny.pb"].write_bytes(build_request("tiny", {"x": x}))
        method = predict_method_path()
        print("[observability] starting the servers", file=sys.stderr, flush=True)
        servers = start_servers(model_dir, scratch)
        for server in servers.values():
            bench.check_server(server, "tiny", x, np.array([[2.5]], np.float32), files["tiny.pb"])
            for transport in ("REST", "gRPC"):
                bench.measure(server, transport, "tiny", 8, 1.0, files, method)  # warm-up
        for round_index in range(args.rounds):
            order = CONFIGS[round_index % len(CONFIGS):] + CONFIGS[:round_index % len(CONFIGS)]
            for transport, clients in POINTS:
                for name in order:
                    point = bench.measure(servers[name], transport, "tiny", clients, args.seconds, files, method)
                    results.setdefault((transport, clients, name), []).append(point)
                    print(f"[observability] round {round_index + 1} {transport} c={clients} {name}: "
                          f"{point.rps:,.0f} req/s, {point.cpu_us_per_request:.0f} µs CPU/req, errors {point.errors}, "
                          f"other CPU {point.other_cpu_s / point.wall_s * 100:.0f} %", file=sys.stderr, flush=True)
        for name, server in servers.items():
            if server.proc.poll() is not None:
                raise RuntimeError(f"{name} exited during the run:\n{server.log_tail()}")
        counted = {name: tf_request_count(servers[name]) for name in (METRICS, LOGGING)}
        answered = tf_request_count(servers[LOGGING])
    finally:
        for server in servers.values():
            server.stop()  # SIGTERM: the request log is flushed and closed
    try:
        records = count_records(scratch / "requestlog")
        errors = sum(p.errors for points in results.values() for p in points)
        print(render(results, args.rounds, args.seconds))
        print()
        print(f"Checks: errors {errors}; requests counted by the metrics page: metrics {counted[METRICS]:,.0f}, "
              f"metrics+logging {counted[LOGGING]:,.0f}; PredictionLog records written by metrics+logging: "
              f"{records:,} of the {answered:,.0f} requests it answered"
              + (f" ({answered - records:,.0f} dropped: the log queue was full)." if records < answered else "."))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
