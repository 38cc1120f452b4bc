"""The batching path on an accelerator: pyserving's ``Batcher`` in front of a GPU model.

Many request threads each send one row (an MNIST-sized 784-float vector) to an MLP
(784-512-512-10, ReLU). Without batching every request is its own model call; with
``Batcher`` concurrent requests share calls. The model is PyTorch on CUDA when available
(the accelerator machines ship torch, not TensorFlow), else a numpy MLP on the CPU so the
script also runs anywhere:

    python benchmarks/gpu_batching.py [--threads 1 8 32 128] [--seconds 5]

Prints rows/s, p50 / p99 latency per request and the mean batch size, for each thread count,
unbatched and batched, in one run.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyserving.loaders.batcher import Batcher  # noqa: E402


def make_model() -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    rng = np.random.default_rng(0)
    sizes = [784, 512, 512, 10]
    weights = [rng.standard_normal((a, b)).astype(np.float32) * 0.05 for a, b in zip(sizes, sizes[1:])]
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA device")
        device = torch.device("cuda")
        layers = [torch.from_numpy(w).to(device) for w in weights]

        @torch.inference_mode()
        def predict(x: np.ndarray) -> np.ndarray:
            h = torch.from_numpy(x).to(device, non_blocking=True)
            for i, w in enumerate(layers):
                h = h @ w
                if i < len(layers) - 1:
                    h = torch.relu(h)
            return h.cpu().numpy()

        return predict, f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"
    except ImportError as exc:

        def predict(x: np.ndarray) -> np.ndarray:
            h = x
            for i, w in enumerate(weights):
                h = h @ w
                if i < len(weights) - 1:
                    h = np.maximum(h, 0)
            return h

        return predict, f"numpy on the CPU ({exc})"


def drive(call: Callable[[np.ndarray], np.ndarray], threads: int, seconds: float) -> tuple[float, float, float, int]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    errors = [0]
    start_barrier = threading.Barrier(threads + 1)

    def client(i: int) -> None:
        x = np.full((1, 784), 0.01 * (i + 1), dtype=np.float32)
        start_barrier.wait()
        while not stop.is_set():
            t = time.perf_counter()
            try:
                y = call(x)
                if y.shape != (1, 10):
                    errors[0] += 1
            except Exception:  # noqa: BLE001 - counted
                errors[0] += 1
            latencies[i].append(time.perf_counter() - t)

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    start_barrier.wait()
    begin = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in pool:
        t.join(30)
    elapsed = time.perf_counter() - begin
    flat = sorted(v for per in latencies for v in per)
    return len(flat) / elapsed, flat[len(flat) // 2] * 1e3, flat[int(len(flat) * 0.99)] * 1e3, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-batch-size", type=int, default=256)
    args = parser.parse_args()
    predict, where = make_model()
    predict(np.zeros((256, 784), np.float32))  # warm up kernels for the largest batch
    predict(np.zeros((1, 784), np.float32))
    print(f"model: MLP 784-512-512-10, {where}; {args.seconds:.0f} s per point")
    print(f"{'threads':>7} {'mode':<9} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'errors':>6}")
    for threads in args.threads:
        rate, p50, p99, errors = drive(predict, threads, args.seconds)
        print(f"{threads:>7} {'unbatched':<9} {rate:9.0f} {p50:8.3f} {p99:8.3f} {1.0:10.1f} {errors:6d}")
        with Batcher(predict, max_batch_size=args.max_batch_size, max_enqueued_batches=1024,
                     num_batch_threads=1) as batcher:
            rate_b, p50_b, p99_b, errors_b = drive(batcher, threads, args.seconds)
            stats = batcher.statistics()
        mean = stats.rows / stats.batches if stats.batches else 0.0
        print(f"{threads:>7} {'batched':<9} {rate_b:9.0f} {p50_b:8.3f} {p99_b:8.3f} {mean:10.1f} {errors_b:6d}"
              f"   x{rate_b / rate:.2f}")
    print("one run per point: compare rows within this run only")


if __name__ == "__main__":
    main()
