"""Offline batch inference (``pyserving batch``): rows/s end to end, Parquet -> Parquet, next to the floor.

    python benchmarks/bench_batch.py [--rows 200000] [--quick] [--no-server]

What it does, in a temporary folder:

1. writes the MLP benchmark model (784-512-512-10, ``tests.support.saved_models.write_mlp_model``)
   and a Parquet dataset of ``--rows`` rows (``x``: fixed-size list of 784 float32, an ``id``
   column; row groups of 16384 rows; about 3.2 kB a row);
2. the floor: ``SavedModelServable.run`` called in-process on one thread with a ready numpy
   batch of 256 rows, as many rows as the dataset -> rows/s;
3. ``pyserving.batch.run`` in-process, model loaded and warmed up beforehand (the pipeline
   alone: read, convert, score at batch 256, write ``scores.parquet``) -> rows/s, and as a
   share of the floor (target >= 80 %). Steps 2 and 3 alternate ``--repeats`` times (medians);
4. the ``pyserving batch`` command as a user runs it (Python start, TensorFlow import, model
   load included) -> rows/s over its wall time;
5. unless ``--no-server`` (or ``pyserving.batch.remote`` is missing): ``pyserving-model-server``
   serving the model, and ``pyserving batch --server`` over gRPC and REST (4 calls in flight)
   on the first ``--server-rows`` rows (default 20000: REST carries the floats as JSON).

Prints one Markdown table. Every output is checked (row count, ids in order, a sample of
rows against the floor's answers). The server is stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BATCH = 256
ROW_GROUP = 16384


def write_dataset(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    # How an embedding export usually looks: non-null elements, no dictionary (random floats
    # would not compress), uncompressed.
    schema = pa.schema([("id", pa.int64()), pa.field("x", pa.list_(pa.field("element", pa.float32(), False), 784),
                                                      nullable=False)])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            x = rng.random((n, 784), dtype=np.float32)
            writer.write_table(pa.table({
                "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), type=schema.field("x").type),
            }, schema=schema))


def measure_floor(servable, rows: int) -> float:
    """rows/s of ``SavedModelServable.run`` on ready batches of 256 rows, ``rows`` rows in all."""
    import numpy as np

    x = np.random.default_rng(1).random((BATCH, 784), dtype=np.float32)
    for _ in range(20):
        servable.run("serving_default", {"x": x})
    calls = max(1, rows // BATCH)
    start = time.perf_counter()
    for _ in range(calls):
        servable.run("serving_default", {"x": x})
    return calls * BATCH / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def check_output(path: Path, rows: int, model_dir: Path, dataset: Path) -> None:
    """Row count, ids 0..rows-1 in order, and 256 rows equal to the model called directly."""
    import numpy as np
    import pyarrow.parquet as pq

    from pyserving.loaders.saved_model import SavedModelServable

    out = pq.read_table(path)
    ids = out.column("id").to_numpy()
    if len(ids) != rows or not (ids == np.arange(rows)).all():
        raise RuntimeError(f"{path}: {len(ids)} rows, ids in order: {bool((ids == np.arange(len(ids))).all())}")
    sample = pq.ParquetFile(dataset).read_row_group(0, columns=["x"]).column("x").combine_chunks()[:BATCH]
    x = sample.flatten().to_numpy().reshape(-1, 784)
    servable = SavedModelServable.load(model_dir)
    try:
        expected = servable.run("serving_default", {"x": x})["probabilities"]
    finally:
        servable.close()
    got = np.array(out.column("probabilities").slice(0, BATCH).to_pylist(), np.float32)
    if not np.allclose(got, expected, atol=1e-5):
        raise RuntimeError(f"{path}: scores differ from the model called directly")


def run_cli(args: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYSERVING_LOG_LEVEL="WARNING")
    script = Path(sys.executable).parent / "pyserving"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pyserving.cli"]
    start = time.perf_counter()
    done = subprocess.run(command + args, env=env, capture_output=True, text=True, cwd=str(REPO))
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"pyserving {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="dataset rows (default 200000)")
    parser.add_argument("--quick", action="store_true", help="50000 rows")
    parser.add_argument("--no-server", action="store_true", help="skip the --server rows")
    parser.add_argument("--server-rows", type=int, default=20_000,
                        help="rows sent through each --server mode (default 20000; REST carries JSON)")
    parser.add_argument("--repeats", type=int, default=3, help="floor / local runs, alternated (default 3)")
    args = parser.parse_args(argv)
    rows = 50_000 if args.quick else args.rows
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pyserving.batch import BatchOptions, open_local_model, run
    from tests.support.saved_models import write_mlp_model

    results: list[tuple[str, str, float, float]] = []  # (mode, what is timed, seconds, rows/s)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        model_dir = root / "mlp" / "1"
        write_mlp_model(model_dir)
        dataset = root / "data.parquet"
        began = time.perf_counter()
        write_dataset(dataset, rows)
        print(f"dataset: {rows:,} rows, {dataset.stat().st_size / 2**20:,.0f} MiB, written in "
              f"{time.perf_counter() - began:.1f} s", file=sys.stderr)

        # The floor and the pipeline alternate, ``--repeats`` times each, so that load from
        # other work on a shared machine hits both alike; the medians are reported.
        from pyserving.loaders.saved_model import SavedModelServable

        floors, locals_ = [], []
        servable = SavedModelServable.load(model_dir)
        with open_local_model(root / "mlp") as model:
            import numpy as np

            warm = np.random.default_rng(2).random((BATCH, 784), dtype=np.float32)
            for _ in range(20):
                model.score({"x": warm})
            write_dataset(root / "warm.parquet", 8192)  # the job's imports and first allocations, untimed
            run(BatchOptions(str(root / "mlp"), input=str(root / "warm.parquet"), output=str(root / "warm-out.parquet"),
                             progress=False), model=model)
            for repeat in range(args.repeats):
                floors.append(measure_floor(servable, rows))
                out = root / "local.parquet"
                summary = run(BatchOptions(str(root / "mlp"), input=str(dataset), output=str(out), batch_size=BATCH,
                                           progress=False, overwrite=True), model=model)
                locals_.append(rows / summary.seconds)
        servable.close()
        check_output(out, rows, model_dir, dataset)
        floor = median(floors)
        results.append(("floor: SavedModelServable.run, batch 256, one thread", "model calls only",
                        rows / floor, floor))
        local = median(locals_)
        results.append(("pyserving.batch.run (local, model loaded)", "read+score+write", rows / local, local))
        print("floor rows/s: " + ", ".join(f"{v:,.0f}" for v in floors) + "; local rows/s: "
              + ", ".join(f"{v:,.0f}" for v in locals_), file=sys.stderr)

        out = root / "cli.parquet"
        elapsed = run_cli(["batch", str(root / "mlp"), "--input", str(dataset), "--output", str(out)])
        check_output(out, rows, model_dir, dataset)
        results.append(("pyserving batch (command)", "whole command: start, TF import, load", elapsed,
                        rows / elapsed))

        if not args.no_server and importlib.util.find_spec("pyserving.batch.remote") is not None:
            from tests.support.server_process import start_model_server

            server_rows = min(rows, args.server_rows)
            small = root / "server-data.parquet"
            write_dataset(small, server_rows)
            server, grpc_port, rest_port = start_model_server(
                [f"--model_base_path={root / 'mlp'}", "--model_name=mlp"], timeout_s=180)
            try:
                for scheme, url in (("gRPC", f"grpc://127.0.0.1:{grpc_port}"),
                                    ("REST", f"http://127.0.0.1:{rest_port}")):
                    out = root / f"server-{scheme}.parquet"
                    summary = run(BatchOptions("mlp", input=str(small), output=str(out), server=url,
                                               batch_size=BATCH, progress=False))
                    check_output(out, server_rows, model_dir, small)
                    results.append((f"pyserving batch --server ({scheme}, 4 in flight; {server_rows:,} rows)",
                                    "read+score+write", summary.seconds, server_rows / summary.seconds))
            finally:
                server.stop()

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{rows:,} rows of 784 float32 (Parquet, uncompressed) -> scores.parquet\n")
    print("| mode | timed | seconds | rows/s | % of floor |")
    print("|---|---|---:|---:|---:|")
    for mode, what, seconds, rate in results:
        secs = f"{seconds:.2f}"
        print(f"| {mode} | {what} | {secs} | {rate:,.0f} | {100 * rate / floor:.0f} % |")
    local = results[1][3]
    verdict = "met" if local >= 0.8 * floor else "NOT met"
    print(f"\nTarget (local pipeline >= 80 % of the floor): {verdict} ({100 * local / floor:.0f} %).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
