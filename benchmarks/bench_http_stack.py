"""Which HTTP stack should carry the REST API? Requests/s and p50 latency, measured.

Each candidate serves a predict-shaped request — ``POST /v1/models/half_plus_two:predict``
with ``{"instances": [1.0, 2.0, 5.0]}`` answered by ``{"predictions": [2.5, 3.0, 4.5]}`` —
in its own process, and a separate load-generator process drives it over loopback with
keep-alive connections (``wrk`` when installed: ``apt-get install wrk``; else a small
asyncio client in a second process with TCP_NODELAY). Each (stack, clients) cell is the
median of ``--runs`` runs of ``--duration`` seconds; the server's CPU use (its process and
children, from /proc) is reported beside it, because on a small machine the client competes
with the server for cores.

Candidates (those whose packages import are measured, the rest are listed as skipped):

* ``uvicorn-httptools`` / ``uvicorn-h11``: uvicorn with a bare ASGI app (no framework),
  asyncio loop; ``uvicorn-httptools-uvloop`` when uvloop is importable, ``uvicorn-zttp``
  when the (pre-1.0) zttp parser is.
* ``granian``: the Rust server, ASGI interface, one worker, one runtime thread.
* ``pyserving-pool`` / ``pyserving-inline``: the real :mod:`pyserving.server.rest_server`
  over a data plane with an in-memory numpy half-plus-two model, model calls in its thread
  pool or inline on the event loop. These include routing, JSON decoding against the
  signature, input checks and TF Serving's output encoding.

Usage::

    python benchmarks/bench_http_stack.py                      # everything, 5 s x 3 runs
    python benchmarks/bench_http_stack.py --stacks uvicorn-httptools,granian --duration 3
    PYTHONPATH=/tmp/extra python benchmarks/bench_http_stack.py  # granian/uvloop from elsewhere

Only loopback addresses are used; every server process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port, tree_cpu_seconds  # noqa: E402  (the shared process helpers)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATH = "/v1/models/half_plus_two:predict"
BODY = b'{"instances": [1.0, 2.0, 5.0]}'
EXPECTED = [2.5, 3.0, 4.5]


# -- the trivial app every generic stack serves ------------------------------------------

async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A bare ASGI predict handler: parse JSON, compute, answer JSON. No routing work."""
    import orjson

    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = orjson.loads(b"".join(chunks))
    out = orjson.dumps({"predictions": [0.5 * x + 2.0 for x in body["instances"]]})
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
    })
    await send({"type": "http.response.body", "body": out})


# -- servers ---------------------------------------------------------------------------

def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


STACKS: dict[str, Callable[[], bool]] = {
    "uvicorn-httptools": lambda: _importable("uvicorn") and _importable("httptools"),
    "uvicorn-h11": lambda: _importable("uvicorn") and _importable("h11"),
    "uvicorn-httptools-uvloop": lambda: _importable("uvicorn") and _importable("uvloop"),
    "uvicorn-zttp": lambda: _importable("uvicorn") and _importable("zttp"),
    "granian": lambda: _importable("granian"),
    "pyserving-pool": lambda: _importable("uvicorn"),
    "pyserving-inline": lambda: _importable("uvicorn"),
}


def serve(stack: str, port: int, pool_threads: int) -> None:
    """Run one candidate in this process until SIGTERM (the ``serve`` sub-command)."""
    if stack.startswith("uvicorn"):
        import uvicorn

        uvicorn.run(
            "bench_http_stack:app", host="127.0.0.1", port=port, app_dir=str(HERE),
            http={"uvicorn-h11": "h11", "uvicorn-zttp": "zttp"}.get(stack, "httptools"),
            loop="uvloop" if stack.endswith("uvloop") else "asyncio",
            lifespan="off", ws="none", access_log=False, log_level="warning",
            proxy_headers=False, server_header=False, interface="asgi3",
        )
    elif stack.startswith("pyserving"):
        sys.path.insert(0, str(ROOT))
        import threading

        from pyserving.server.data_plane import DataPlane
        from pyserving.server.rest_server import RestServerOptions, start_rest_server

        options = RestServerOptions(host="127.0.0.1", port=port, num_threads=0 if stack == "pyserving-inline" else pool_threads)
        handle = start_rest_server(DataPlane(_BenchCore()), options)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        handle.stop()
    else:
        raise SystemExit(f"unknown stack {stack!r}")


def _server_command(stack: str, port: int, pool_threads: int) -> tuple[list[str], str]:
    if stack == "granian":
        return (
            [sys.executable, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--runtime-threads", "1", "--runtime-mode", "st", "--http", "1", "--no-ws",
             "--loop", "asyncio", "--log-level", "warning", "--no-access-log", "bench_http_stack:app"],
            str(HERE),
        )
    return [sys.executable, str(Path(__file__).resolve()), "serve", stack, str(port), str(pool_threads)], str(HERE)


class _BenchCore:
    """The smallest ServingCore: one numpy half-plus-two model, version 1."""

    def __init__(self) -> None:
        from pyserving.servable.handle import ServableHandle
        from pyserving.servable.ids import ServableId
        from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

        self._id = ServableId("half_plus_two", 1)
        self._handle_cls = ServableHandle
        spec = SignatureSpec(inputs={"x": TensorSpec(DType.FLOAT, (None,))},
                             outputs={"y": TensorSpec(DType.FLOAT, (None,))})
        self._servable = _HalfPlusTwo({"serving_default": spec})

    def get_handle(self, request: Any) -> Any:
        from pyserving.servable.errors import NotFoundError

        if request.name != self._id.name:
            raise NotFoundError(f"Servable not found for request: {request}")
        return self._handle_cls(self._id, self._servable, lambda: None)

    def version_labels(self, name: str) -> dict[str, int]:
        return {}

    def version_states(self, name: str) -> list[Any]:
        return []


class _HalfPlusTwo:
    def __init__(self, signatures: dict[str, Any]) -> None:
        self.signatures = signatures

    def run(self, signature_name: str, inputs: Any, output_filter: Any = ()) -> dict[str, Any]:
        return {"y": inputs["x"] * 0.5 + 2.0}


# -- process helpers --------------------------------------------------------------------

def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", PATH, BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = json.loads(response.read())
            conn.close()
            if response.status != 200 or data.get("predictions") != EXPECTED:
                raise RuntimeError(f"wrong answer {response.status}: {data}")
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready after {timeout_s}s")


# -- load generators --------------------------------------------------------------------

_WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY.decode()}'
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk(port: int, clients: int, duration_s: float, script: str) -> tuple[float, float, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{duration_s:g}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p50_ms = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return rps, p50_ms, int(bad.group(1)) if bad else (1 if errors else 0)


async def _python_load(port: int, clients: int, duration_s: float) -> dict[str, Any]:
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    latencies: list[float] = []
    bad = 0
    deadline = time.monotonic() + duration_s

    async def one() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                bad += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1e3, "bad": bad}


def _python(port: int, clients: int, duration_s: float) -> tuple[float, float, int]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "load", str(port), str(clients), str(duration_s)],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    return data["rps"], data["p50_ms"], data["bad"]


# -- the measurement -------------------------------------------------------------------

@dataclass
class Cell:
    rps: float
    p50_ms: float
    cpu_pct: float
    bad: int


def measure(
    stack: str, clients_list: list[int], runs: int, duration_s: float, use_wrk: bool, pool_threads: int
) -> dict[int, Cell]:
    port = free_port()
    command, cwd = _server_command(stack, port, pool_threads)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True)
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(_WRK_SCRIPT)
    script.close()
    try:
        _wait_ready(port, proc)
        load = (lambda c, d: _wrk(port, c, d, script.name)) if use_wrk else (lambda c, d: _python(port, c, d))
        load(max(clients_list), min(2.0, duration_s))  # warm-up
        result: dict[int, Cell] = {}
        for clients in clients_list:
            samples = []
            for _ in range(runs):
                cpu0 = tree_cpu_seconds(proc.pid)
                t0 = time.monotonic()
                rps, p50, bad = load(clients, duration_s)
                cpu = (tree_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
                samples.append(Cell(rps, p50, cpu, bad))
            result[clients] = Cell(
                statistics.median(s.rps for s in samples),
                statistics.median(s.p50_ms for s in samples),
                statistics.median(s.cpu_pct for s in samples),
                sum(s.bad for s in samples),
            )
        return result
    finally:
        os.unlink(script.name)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1], int(argv[2]), int(argv[3]))
        return
    if argv[:1] == ["load"]:
        print(json.dumps(asyncio.run(_python_load(int(argv[1]), int(argv[2]), float(argv[3])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated candidates")
    parser.add_argument("--clients", default="1,16", help="comma-separated concurrent keep-alive connections")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell; the median is reported")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--python-client", action="store_true", help="use the asyncio client even if wrk exists")
    parser.add_argument("--pool-threads", type=int, default=4 * (os.cpu_count() or 1),
                        help="pyserving-pool worker threads (default: 4 x CPUs, as rest_api_num_threads)")
    args = parser.parse_args(argv)
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    clients_list = [int(c) for c in args.clients.split(",")]
    print(f"# load generator: {'wrk -t1' if use_wrk else 'asyncio client (separate process)'}; "
          f"{args.runs} x {args.duration:g} s per cell, medians; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    header = "| stack | " + " | ".join(f"c={c} req/s | c={c} p50 ms | c={c} server CPU %" for c in clients_list) + " |"
    print(header)
    print("|" + "---|" * (1 + 3 * len(clients_list)))
    for stack in args.stacks.split(","):
        check = STACKS.get(stack)
        if check is None or not check():
            print(f"| {stack} | skipped: not installed |")
            continue
        cells = measure(stack, clients_list, args.runs, args.duration, use_wrk, args.pool_threads)
        row = " | ".join(
            f"{cells[c].rps:.0f} | {cells[c].p50_ms:.3f} | {cells[c].cpu_pct:.0f}" + (f" ({cells[c].bad} bad)" if cells[c].bad else "")
            for c in clients_list
        )
        print(f"| {stack} | {row} |", flush=True)


if __name__ == "__main__":
    main()
