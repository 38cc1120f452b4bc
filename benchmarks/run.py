"""pyserving vs. the course's FastAPI baseline, with and without batching: one command, one table.

    python benchmarks/run.py [--duration 10] [--quick] [--no-write]

What it does, all on loopback (see ``benchmarks/README.md`` for what each column means):

1. writes two SavedModels into a temporary folder: ``tiny`` (TF Serving's half_plus_two,
   y = 0.5·x + 2 on one float) and ``mlp`` (784-512-512-10, ReLU, float32, seeded weights);
2. times the model called in-process, batch 1 and batch 32: pyserving's
   ``SavedModelServable.run`` (the floor of every pyserving row) and the signature function
   the FastAPI app calls;
3. starts, on free ports, ``pyserving-model-server`` (the console script, both models from a
   model config file), the same with ``--enable_batching=true --batching_parameters_file``,
   and ``fastapi_baseline.py`` (uvicorn, 2 worker processes, one SO_REUSEPORT socket
   each); a server that refuses the batching flags ("not supported yet") is reported n/a;
4. checks every server's answer on both transports against the in-process model, warms
   each up, then drives every (model, clients, transport, server) point for ``--duration``
   seconds: REST with ``wrk`` (``-c N -t min(N, 2)``, a Lua script posting the JSON body),
   gRPC with ``grpc_load.py`` (multi-process grpc.aio, pre-serialized requests). Points are
   interleaved — for each model and client count, every server in turn — so background
   load on a shared machine hits all servers alike;
5. prints the Markdown table and the target ratios, and writes ``benchmarks/RESULTS.md``
   (unless ``--no-write``).

CPU: the server's CPU is utime + stime of its process tree from /proc (both uvicorn
workers for FastAPI), sampled every 50 ms and cut to the load generator's own timed
window; the client's is wrk's rusage or grpc_load's own count; "other" is what the rest of
the machine used meanwhile (/proc/stat busy time minus both): noise.
Every server is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


MODELS = ("tiny", "mlp")
CLIENTS = (1, 8, 32)
PYSERVING, BATCHING, FASTAPI = "pyserving", "pyserving+batching", "fastapi-2w"
#: Defaults written to the batching parameters file (TF Serving's BatchingParameters text):
#: a batch closes as soon as the batch thread is free (no timeout), so requests are batched
#: only when they are actually waiting; one batch thread, since TF already uses both cores.
DEFAULT_BATCHING = """max_batch_size { value: 32 }
batch_timeout_micros { value: 0 }
num_batch_threads { value: 1 }
max_enqueued_batches { value: 1000 }
"""
WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "status_errors": %%d, ' ..
    '"p50_us": %%f, "p99_us": %%f}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float
    wall_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / max(1, self.requests) * 1e6


# -- server processes -------------------------------------------------------------------------

BATCHING_NA = "n/a (batching not available)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_cpu_seconds(root_pid: int) -> float:
    """utime + stime of ``root_pid`` and its live descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


class ServerProcess:
    """A server in its own process group, output in a log file; ``stop()`` ends the group."""

    def __init__(self, name: str, command: list[str], log: Path, rest_port: int, grpc_port: int | None) -> None:
        env = dict(os.environ, PYSERVING_HOST="127.0.0.1", PYSERVING_LOG_LEVEL="WARNING", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONUNBUFFERED="1")
        self.name, self.log, self.rest_port, self.grpc_port = name, log, rest_port, grpc_port
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                         start_new_session=True)
        self.pid = self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_for(self, text: str, count: int = 1, timeout_s: float = 180.0) -> bool:
        """True once ``text`` appeared ``count`` times in the log; False when the process exited."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log.read_text(errors="replace").count(text) >= count:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)


def write_model_config(dirs: dict[str, Path], path: Path) -> Path:
    """TF Serving's text ModelServerConfig naming every model (platform tensorflow)."""
    path.write_text("model_config_list {\n" + "".join(
        f"  config {{ name: '{m}' base_path: '{d}' model_platform: 'tensorflow' }}\n" for m, d in dirs.items()) + "}\n")
    return path


def server_program() -> list[str]:
    """The ``pyserving-model-server`` console script next to this Python (or its module)."""
    script = shutil.which("pyserving-model-server", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "pyserving.server.main"]


def start_pyserving(name: str, dirs: dict[str, Path], scratch: Path, batching_file: Path | None = None,
                    extra_flags: tuple[str, ...] = (), grpc_port: int | None = None) -> ServerProcess | str:
    """``pyserving-model-server`` serving both models; BATCHING_NA when it refuses the batching flags."""
    config = write_model_config(dirs, scratch / "models.config")
    extra = ["--enable_batching=true", f"--batching_parameters_file={batching_file}"] if batching_file else []
    for _attempt in range(3):
        port, rest_port = grpc_port or free_port(), free_port()
        server = ServerProcess(name, server_program() + [f"--port={port}", f"--rest_api_port={rest_port}",
                                                         f"--model_config_file={config}", *extra, *extra_flags],
                               scratch / f"{name}.log", rest_port, port)
        if server.wait_for("Exporting HTTP/REST API"):
            return server
        server.stop()
        if batching_file and "not supported yet" in server.log_tail():
            return BATCHING_NA
        if "Could not bind" not in server.log_tail():
            raise RuntimeError(f"{name} did not start:\n{server.log_tail()}")
    raise RuntimeError(f"{name}: no free ports after 3 attempts")


def start_fastapi(name: str, dirs: dict[str, Path], scratch: Path) -> ServerProcess:
    models = [arg for m, d in dirs.items() for arg in ("--model", f"{m}={d / '1'}")]
    for _attempt in range(3):
        port = free_port()
        server = ServerProcess(name, [sys.executable, str(HERE / "fastapi_baseline.py"), "--port", str(port),
                                      "--workers", "2", *models], scratch / f"{name}.log", port, None)
        if server.wait_for("Application startup complete.", count=2):
            return server
        server.stop()
        if "address already in use" not in server.log_tail():
            raise RuntimeError(f"{name} did not start:\n{server.log_tail()}")
    raise RuntimeError(f"{name}: no free port after 3 attempts")


def check_server(server: ServerProcess, model: str, x: Any, expected: Any, request_file: Path) -> None:
    """The server's answer on each transport equals the in-process model's."""
    import numpy as np

    from grpc_load import check_with_official_stub

    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    conn.request("POST", f"/v1/models/{model}:predict", json.dumps({"instances": x.tolist()}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200 or not np.allclose(json.loads(body)["predictions"], expected, atol=1e-5):
        raise RuntimeError(f"{server.name} REST answered {response.status} {body[:300]!r} for {model}")
    if server.grpc_port:
        outputs = check_with_official_stub(f"127.0.0.1:{server.grpc_port}", request_file.read_bytes())
        if not np.allclose(next(iter(outputs.values())), expected, atol=1e-5):
            raise RuntimeError(f"{server.name} gRPC answered {outputs} for {model}")


# -- models and the in-process floor ----------------------------------------------------------

def write_models(root: Path) -> dict[str, Path]:
    from tests.support.saved_models import write_half_plus_two_tf1, write_mlp_model

    dirs = {"tiny": root / "tiny", "mlp": root / "mlp"}
    write_half_plus_two_tf1(dirs["tiny"] / "1")
    write_mlp_model(dirs["mlp"] / "1")
    return dirs


def model_inputs() -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {"tiny": np.array([[1.0]], np.float32), "mlp": rng.random((1, 784)).astype(np.float32)}


def _time_calls(call: Any, seconds: float) -> tuple[float, float]:
    """(p50 ms, calls/s) of ``call`` repeated for about ``seconds``, after a warm-up."""
    for _ in range(50):
        call()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    times.sort()
    return times[len(times) // 2] * 1e3, len(times) / (time.perf_counter() - start)


def measure_floor(dirs: dict[str, Path], inputs: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """The model called in-process at batch 1 and 32: pyserving's servable and the signature fn."""
    import numpy as np
    import tensorflow as tf

    from pyserving.loaders.saved_model import SavedModelServable

    rows = []
    for model in MODELS:
        servable = SavedModelServable.load(dirs[model] / "1")
        function = tf.saved_model.load(str(dirs[model] / "1")).signatures["serving_default"]
        for batch in (1, 32):
            x = np.repeat(inputs[model], batch, axis=0)
            calls = {
                "SavedModelServable.run (pyserving)": lambda: servable.run("serving_default", {"x": x}),
                "signature function (FastAPI)": lambda: function(x=tf.constant(x)),
            }
            for name, call in calls.items():
                p50, rate = _time_calls(call, seconds)
                rows.append({"model": model, "call": name, "batch": batch, "p50_ms": p50, "calls_s": rate})
        servable.close()
    return rows


def expected_outputs(dirs: dict[str, Path], inputs: dict[str, Any]) -> dict[str, Any]:
    from pyserving.loaders.saved_model import SavedModelServable

    out = {}
    for model in MODELS:
        servable = SavedModelServable.load(dirs[model] / "1")
        out[model] = next(iter(servable.run("serving_default", {"x": inputs[model]}).values()))
        servable.close()
    return out


# -- load points ------------------------------------------------------------------------------

def _busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, model: str, script: Path, clients: int, duration: float) -> tuple[dict[str, Any], float]:
    """One wrk run; (its JSON summary, its CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
         "-s", str(script), f"http://127.0.0.1:{port}/v1/models/{model}:predict"],
        capture_output=True, text=True, timeout=duration + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(line[len("WRK_JSON "):]), cpu


def run_grpc(port: int, request_file: Path, method: str, clients: int, duration: float,
             channels: int = 1) -> dict[str, Any]:
    """One grpc_load.py run (1 process at 1 client, else 2 processes x clients/2); its JSON summary."""
    processes = 1 if clients == 1 else 2
    out = subprocess.run(
        [sys.executable, str(HERE / "grpc_load.py"), "--target", f"127.0.0.1:{port}", "--request-file",
         str(request_file), "--method", method, "--processes", str(processes), "--concurrency",
         str(clients // processes), "--channels", str(channels), "--duration", str(duration), "--json"],
        capture_output=True, text=True, timeout=duration + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"grpc_load failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class CpuSampler:
    """Samples a server's CPU seconds and the machine's busy seconds every 50 ms in a thread,
    so a load run's own window can be cut out of the counters afterwards (a load generator
    that starts up for a second before its timed window would otherwise dilute them)."""

    def __init__(self, pids: list[int]) -> None:
        import threading

        self._pids = pids
        self._samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _read(self) -> tuple[float, float, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = 0.0
        for pid in self._pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / ticks
        return time.monotonic(), cpu, _busy_seconds()

    def _run(self) -> None:
        while True:
            self._samples.append(self._read())
            if self._stop.wait(0.05):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._samples.append(self._read())

    def between(self, t0: float, t1: float) -> tuple[float, float]:
        """(server CPU s, machine busy s) from t0 to t1, interpolated between samples."""
        def at(t: float) -> tuple[float, float]:
            samples = self._samples
            for (ta, ca, ba), (tb, cb, bb) in zip(samples, samples[1:]):
                if ta <= t <= tb:
                    w = (t - ta) / (tb - ta) if tb > ta else 0.0
                    return ca + (cb - ca) * w, ba + (bb - ba) * w
            edge = samples[0] if t < samples[0][0] else samples[-1]
            return edge[1], edge[2]

        (c0, b0), (c1, b1) = at(t0), at(t1)
        return c1 - c0, b1 - b0


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and its descendants now (a server's worker processes are fixed after start)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def measure(server: ServerProcess, transport: str, model: str, clients: int, duration: float,
            files: dict[str, Path], method: str) -> Point:
    sampler = CpuSampler(process_tree(server.pid))
    try:
        if transport == "REST":
            began = time.monotonic()
            summary, client_cpu = run_wrk(server.rest_port, model, files[f"{model}.lua"], clients, duration)
            wall = summary["duration_us"] / 1e6
            window = (began, began + wall)
            requests, errors = summary["requests"], summary["errors"]
            rps, p50, p99 = requests / wall, summary["p50_us"] / 1e3, summary["p99_us"] / 1e3
        else:
            summary = run_grpc(server.grpc_port, files[f"{model}.pb"], method, clients, duration)
            client_cpu, wall = summary["client_cpu_s"], summary["elapsed_s"]
            window = (summary["started_at"], summary["finished_at"])
            requests, errors = summary["requests"], sum(summary["errors"].values())
            rps, p50, p99 = summary["rps"], summary["p50_ms"], summary["p99_ms"]
    finally:
        sampler.stop()
    server_cpu, busy = sampler.between(*window)
    other = max(0.0, busy - server_cpu - client_cpu)
    return Point(rps, p50, p99, errors, requests, server_cpu, client_cpu, other, wall)


# -- the report -------------------------------------------------------------------------------

def machine_line() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    import grpc
    import tensorflow as tf

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, grpcio {grpc.__version__}, {wrk}")


def _pct(seconds: float, wall: float) -> str:
    return f"{seconds / wall * 100:.0f}" if wall > 0 else "-"


def render(results: dict[tuple[str, str, str, int], Point | str], floor: list[dict[str, Any]],
           servers: list[str], clients_list: tuple[int, ...], header: list[str]) -> tuple[str, list[tuple[str, str, bool | None]]]:
    lines = list(header)
    lines += ["", "## The floor: the model called in-process (one thread, no server)", "",
              "| model | call | batch | p50 ms | calls/s | rows/s |", "|---|---|---:|---:|---:|---:|"]
    for row in floor:
        lines.append(f"| {row['model']} | {row['call']} | {row['batch']} | {row['p50_ms']:.3f} | "
                     f"{row['calls_s']:,.0f} | {row['calls_s'] * row['batch']:,.0f} |")
    for model in MODELS:
        lines += ["", f"## {model}: one instance per request", "",
                  "| transport | server | clients | req/s | x FastAPI | p50 ms | p99 ms | errors | server CPU % "
                  "| server CPU µs/req | client CPU % | other CPU % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for clients in clients_list:
            base = results.get((model, "REST", FASTAPI, clients))
            for transport in ("REST", "gRPC"):
                for server in servers:
                    if transport == "gRPC" and server == FASTAPI:
                        continue
                    p = results.get((model, transport, server, clients))
                    if isinstance(p, str):
                        lines.append(f"| {transport} | {server} | {clients} | {p} | | | | | | | | |")
                    elif p is not None:
                        ratio = f"{p.rps / base.rps:.2f}" if isinstance(base, Point) and base.rps else "-"
                        lines.append(
                            f"| {transport} | {server} | {clients} | {p.rps:,.0f} | {ratio} | {p.p50_ms:.3f} | "
                            f"{p.p99_ms:.3f} | {p.errors} | {_pct(p.server_cpu_s, p.wall_s)} | "
                            f"{p.cpu_us_per_request:,.0f} | {_pct(p.client_cpu_s, p.wall_s)} | {_pct(p.other_cpu_s, p.wall_s)} |")
    points = [p for p in results.values() if isinstance(p, Point)]
    if points:
        others = [p.other_cpu_s / p.wall_s * 100 for p in points if p.wall_s > 0]
        noisy = sum(1 for o in others if o > 20)
        lines += ["", f"Noise: other CPU (the rest of the machine, hypervisor steal included) averaged "
                      f"{sum(others) / len(others):.0f} % of a core per point, max {max(others):.0f} %; "
                      f"{noisy} of {len(others)} points above 20 %"
                      + (" — treat those rows with care, or run again on a quieter machine." if noisy else ".")]
    targets = evaluate_targets(results, floor)
    lines += ["", "## Targets (ratios from this run)", "", "| target | measured | result |", "|---|---|---|"]
    for name, measured, ok in targets:
        lines.append(f"| {name} | {measured} | {'PASS' if ok else ('FAIL' if ok is False else 'n/a')} |")
    return "\n".join(lines) + "\n", targets


def evaluate_targets(results: dict[tuple[str, str, str, int], Point | str],
                     floor: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    def rps(model: str, transport: str, server: str, clients: int) -> float | None:
        p = results.get((model, transport, server, clients))
        return p.rps if isinstance(p, Point) else None

    out: list[tuple[str, str, bool | None]] = []
    fa_mlp, ps_mlp, b_mlp = (rps("mlp", "REST", s, 32) for s in (FASTAPI, PYSERVING, BATCHING))
    b_mlp_grpc, ps_mlp_grpc = rps("mlp", "gRPC", BATCHING, 32), rps("mlp", "gRPC", PYSERVING, 32)
    if b_mlp and fa_mlp and ps_mlp:
        out.append(("MLP, 32 clients, REST: batching >= 2x FastAPI req/s", f"{b_mlp / fa_mlp:.2f}x", b_mlp / fa_mlp >= 2))
        out.append(("MLP, 32 clients, REST: batching >= 2x pyserving without batching", f"{b_mlp / ps_mlp:.2f}x",
                    b_mlp / ps_mlp >= 2))
        if b_mlp_grpc and ps_mlp_grpc:
            out.append(("(info) MLP, 32 clients, gRPC: batching vs FastAPI REST / vs gRPC without batching",
                        f"{b_mlp_grpc / fa_mlp:.2f}x / {b_mlp_grpc / ps_mlp_grpc:.2f}x", None))
    else:
        out.append(("MLP, 32 clients: batching >= 2x FastAPI and >= 2x without batching",
                    "n/a (batching not available)" if isinstance(results.get(("mlp", "REST", BATCHING, 32)), str)
                    else "missing", None))
    fa_tiny = rps("tiny", "REST", FASTAPI, 32)
    best = max(filter(None, (rps("tiny", "REST", s, 32) for s in (PYSERVING, BATCHING))), default=None)
    if fa_tiny and best:
        out.append(("tiny, 32 clients, REST: pyserving (better of with/without batching) >= 1.5x FastAPI",
                    f"{best / fa_tiny:.2f}x", best / fa_tiny >= 1.5))
    grpc1, fa1 = results.get(("tiny", "gRPC", PYSERVING, 1)), results.get(("tiny", "REST", FASTAPI, 1))
    floor1 = next((r["p50_ms"] for r in floor if r["model"] == "tiny" and r["batch"] == 1
                   and r["call"].startswith("SavedModelServable")), None)
    if isinstance(grpc1, Point) and isinstance(fa1, Point):
        out.append(("tiny, 1 client: pyserving gRPC p50 <= 0.6x FastAPI p50",
                    f"{grpc1.p50_ms:.3f} / {fa1.p50_ms:.3f} ms = {grpc1.p50_ms / fa1.p50_ms:.2f}x",
                    grpc1.p50_ms / fa1.p50_ms <= 0.6))
    if isinstance(grpc1, Point) and floor1 is not None:
        out.append(("tiny, 1 client: pyserving gRPC p50 within 0.3 ms of the in-process call",
                    f"{grpc1.p50_ms:.3f} - {floor1:.3f} = {grpc1.p50_ms - floor1:+.3f} ms",
                    grpc1.p50_ms - floor1 <= 0.3))
    errors = sum(p.errors for p in results.values() if isinstance(p, Point))
    out.append(("zero errors everywhere", f"{errors} errors", errors == 0))
    return out


# -- main -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load point (default 10)")
    parser.add_argument("--quick", action="store_true", help="2 s points, short warm-up (about 1.5 minutes)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"), help="where to write the results")
    parser.add_argument("--batching-parameters", help="BatchingParameters text file (default: see DEFAULT_BATCHING)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of tiny,mlp")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    warmup = 0.5 if args.quick else 1.0
    if shutil.which("wrk") is None:
        print("run.py needs wrk for the REST load: apt-get install -y wrk", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    models = tuple(m for m in args.models.split(",") if m in MODELS)
    batching_params = Path(args.batching_parameters).read_text() if args.batching_parameters else DEFAULT_BATCHING
    batching_text = " ".join(batching_params.split())
    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="pyserving-bench-"))
    servers: dict[str, ServerProcess | str] = {}
    try:
        print(f"[run] writing models into {scratch}", file=sys.stderr, flush=True)
        dirs = write_models(scratch / "models")
        inputs = model_inputs()
        expected = expected_outputs(dirs, inputs)
        print("[run] timing the in-process floor", file=sys.stderr, flush=True)
        floor = measure_floor(dirs, inputs, 0.5 if args.quick else 1.5)

        from grpc_load import build_request, predict_method_path

        files: dict[str, Path] = {}
        for model in MODELS:
            body = json.dumps({"instances": inputs[model].tolist()})
            files[f"{model}.lua"] = scratch / f"{model}.lua"
            files[f"{model}.lua"].write_text(WRK_LUA % body)
            files[f"{model}.pb"] = scratch / f"{model}.pb"
            files[f"{model}.pb"].write_bytes(build_request(model, {"x": inputs[model]}))
        method = predict_method_path()
        batching_file = scratch / "batching.pbtxt"
        batching_file.write_text(batching_params)

        print("[run] starting servers", file=sys.stderr, flush=True)
        servers[PYSERVING] = start_pyserving(PYSERVING, dirs, scratch)
        servers[BATCHING] = start_pyserving(BATCHING, dirs, scratch, batching_file=batching_file)
        servers[FASTAPI] = start_fastapi(FASTAPI, dirs, scratch)
        running = {name: s for name, s in servers.items() if isinstance(s, ServerProcess)}
        for server in running.values():
            for model in models:
                check_server(server, model, inputs[model], expected[model], files[f"{model}.pb"])
        for model in models:
            for server in running.values():
                for transport in ("REST", "gRPC") if server.grpc_port else ("REST",):
                    measure(server, transport, model, 8, warmup, files, method)

        results: dict[tuple[str, str, str, int], Point | str] = {}
        total = len(models) * len(CLIENTS) * sum(2 if s.grpc_port else 1 for s in running.values())
        done = 0
        for model in models:
            for clients in CLIENTS:
                for transport in ("REST", "gRPC"):
                    for name, server in servers.items():
                        if transport == "gRPC" and name == FASTAPI:
                            continue
                        if isinstance(server, str):
                            results[(model, transport, name, clients)] = server
                            continue
                        point = measure(server, transport, model, clients, duration, files, method)
                        results[(model, transport, name, clients)] = point
                        done += 1
                        print(f"[run] {done}/{total} {model} {transport} {name} c={clients}: {point.rps:,.0f} req/s, "
                              f"p50 {point.p50_ms:.3f} ms, p99 {point.p99_ms:.3f} ms, errors {point.errors}",
                              file=sys.stderr, flush=True)
        for name, server in running.items():
            if server.proc.poll() is not None:
                raise RuntimeError(f"{name} exited during the run:\n{server.log_tail()}")
    finally:
        for server in servers.values():
            if isinstance(server, ServerProcess):
                server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    load_after = os.getloadavg()
    header = [
        "# pyserving benchmark results", "",
        f"Run {started:%Y-%m-%d %H:%M %Z} with `python benchmarks/run.py{' --quick' if args.quick else f' --duration {duration:g}'}`"
        f" ({duration:g} s per point).", "",
        f"Machine: {machine_line()}. Load average before / after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} (the cores are shared with other work: see \"other CPU %\").", "",
        "Servers: `pyserving-model-server` (default flags, both models from one model config file); "
        f"the same with `--enable_batching=true --batching_parameters_file` (`{batching_text}`); "
        "`benchmarks/fastapi_baseline.py` (FastAPI + uvicorn, 2 worker processes with one SO_REUSEPORT socket each, "
        "`tf.saved_model.load` + signature function). Requests carry one instance. REST load: wrk (`-c N -t min(N,2)`); gRPC load: `grpc_load.py` "
        "(1 process x 1 in flight at 1 client, else 2 processes x N/2), pre-serialized official `PredictRequest`.",
    ]
    text, targets = render(results, floor, list(servers), CLIENTS, header)
    print(text)
    if not args.no_write:
        Path(args.output).write_text(text)
        print(f"[run] wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
