"""How fast does a new version take over, with clients sending the whole time?

Starts the real ``pyserving-model-server`` on free loopback ports, watching one model
(``half``, TF1 ``half_plus_two`` with ``a = 0`` and ``b = version``, so every answer says
which version served it), and runs ``--clients`` client threads (half gRPC, half REST,
requests naming no version) for the whole run. Then, ``--swaps`` times: a complete new
version, written beforehand outside the watched folder, is renamed into it (the moment
its files are complete) and the benchmark measures

* ``AVAILABLE``: until the REST model status shows the new version AVAILABLE;
* ``answers``: until the first client is answered by the new version (what users see);
* ``old END``: until the previous version is unloaded (END), after which the next swap starts.

It also counts failed requests (any error, on either transport) and reads the server
process's resident memory (``VmRSS`` in ``/proc/<pid>/status``) before the first swap,
after swap 5 and after the last one. Usage::

    python benchmarks/bench_swap.py [--swaps 20] [--clients 8] [--poll 30] [--pause-ms 0]
    python benchmarks/bench_swap.py --swaps 50      # memory over many swaps

Targets (2-core machine, 30 s file-system poll, so every pick-up comes from a file event):
median ``answers`` <= 1 s, max <= 2 s, 0 failed requests, RSS growth <= 30 %. Exit status 1
when one is missed. The clients share the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.saved_models import write_half_plus_two_tf1  # noqa: E402
from tests.support.server_process import start_model_server  # noqa: E402
from tests.support.traffic import TrafficClients, rest_status  # noqa: E402

MODEL = "half"
STEP_TIMEOUT_S = 60.0
TARGETS = {"median_s": 1.0, "max_s": 2.0, "rss_growth": 0.30}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def wait_status(rest_port: int, check, what: str, pause_s: float = 0.01) -> float:
    """Poll the model status until ``check(status)``; the time it first held."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        if check(rest_status(rest_port, MODEL)):
            return time.monotonic()
        time.sleep(pause_s)  # polling interval of a bounded wait
    raise SystemExit(f"timed out after {STEP_TIMEOUT_S} s waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--poll", type=float, default=30.0, help="--file_system_poll_wait_seconds of the server")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="think time between one client's requests")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="pyserving-bench-swap-"))
    server = None
    traffic = None
    try:
        staging, base = scratch / "staging", scratch / MODEL
        base.mkdir()
        for version in range(1, args.swaps + 2):
            write_half_plus_two_tf1(staging / str(version), a=0.0, b=float(version), any_shape_x=True)
        (staging / "1").rename(base / "1")
        server, grpc_port, rest_port = start_model_server(
            [f"--model_name={MODEL}", f"--model_base_path={base}", f"--file_system_poll_wait_seconds={args.poll:g}"]
        )
        pid = server.proc.pid
        traffic = TrafficClients(MODEL, grpc_port, rest_port, clients=args.clients, pause_s=args.pause_ms / 1e3,
                                 max_duration_s=3600.0).start()
        if traffic.wait_for_version(1, STEP_TIMEOUT_S) is None:
            raise SystemExit("the clients got no answer from version 1")
        time.sleep(2.0)  # warm-up: connections open, the server's runners made, RSS settled
        rss_before = rss_bytes(pid)
        rows = []
        rss_after_5 = None
        for version in range(2, args.swaps + 2):
            available: list[float] = []
            watcher = threading.Thread(target=lambda v=version: available.append(
                wait_status(rest_port, lambda s: s.get(v, ("",))[0] == "AVAILABLE", f"version {v} AVAILABLE")))
            (staging / str(version)).rename(base / str(version))
            complete = time.monotonic()
            watcher.start()
            answered = traffic.wait_for_version(version, STEP_TIMEOUT_S)
            if answered is None:
                raise SystemExit(f"no client was answered by version {version} within {STEP_TIMEOUT_S} s")
            old_end = wait_status(rest_port, lambda s, v=version - 1: s.get(v, ("",))[0] == "END",
                                  f"version {version - 1} END")
            watcher.join(STEP_TIMEOUT_S)
            if not available:
                raise SystemExit(f"version {version} was not seen AVAILABLE")
            rss = rss_bytes(pid)
            rows.append((version, available[0] - complete, answered - complete, old_end - complete, rss))
            if version == 6:
                rss_after_5 = rss
        report = traffic.stop()
        traffic = None
        rss_after = rss_bytes(pid)
    finally:
        if traffic is not None:
            traffic.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    mib = 1024 * 1024
    print(f"bench_swap: {args.swaps} swaps of a TF1 half_plus_two, {args.clients} clients "
          f"({(args.clients + 1) // 2} gRPC, {args.clients // 2} REST, pause {args.pause_ms:g} ms), "
          f"--file_system_poll_wait_seconds={args.poll:g}, {os.cpu_count()} CPUs")
    print("times in seconds from the rename into the watched folder")
    print(f"{'swap':>4} {'version':>7} {'AVAILABLE':>10} {'answers':>8} {'old END':>8} {'RSS MiB':>8}")
    for index, (version, avail, answer, end, rss) in enumerate(rows, 1):
        print(f"{index:>4} {version:>7} {avail:>10.3f} {answer:>8.3f} {end:>8.3f} {rss / mib:>8.1f}")
    answers = [r[2] for r in rows]
    availables = [r[1] for r in rows]
    median, worst = statistics.median(answers), max(answers)
    growth = rss_after / rss_before - 1
    by_transport = report.by_transport()
    print()
    print(f"{'':<34} {'median':>8} {'max':>8}")
    print(f"{'rename -> status AVAILABLE (s)':<34} {statistics.median(availables):>8.3f} {max(availables):>8.3f}")
    print(f"{'rename -> first answer (s)':<34} {median:>8.3f} {worst:>8.3f}")
    print(f"requests: {report.requests} ({by_transport['grpc']} gRPC, {by_transport['rest']} REST answered) "
          f"in {report.duration_s:.1f} s; failed: {len(report.failures)}; "
          f"older version after newer: {len(report.regressions)}")
    latencies = sorted(s.end_s - s.start_s for s in report.samples)
    if latencies:
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
        print(f"request latency over the run (ms): p50 {pick(0.5):.1f}, p99 {pick(0.99):.1f}, "
              f"max {latencies[-1] * 1e3:.1f}")
    if report.failures or report.regressions:
        print(report.describe_failures())
    print(f"server RSS: before {rss_before / mib:.1f} MiB, after {rss_after / mib:.1f} MiB "
          f"({growth:+.1%})" + (f"; after swap 5 {rss_after_5 / mib:.1f} MiB, growth since "
                                f"{rss_after / rss_after_5 - 1:+.1%}" if rss_after_5 else ""))
    checks = [
        (f"median <= {TARGETS['median_s']} s", median <= TARGETS["median_s"]),
        (f"max <= {TARGETS['max_s']} s", worst <= TARGETS["max_s"]),
        ("0 failed requests", not report.failures and not report.regressions),
        (f"RSS growth <= {TARGETS['rss_growth']:.0%}", growth <= TARGETS["rss_growth"]),
    ]
    print("targets: " + ", ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in checks))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
