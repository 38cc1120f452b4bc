"""The library's Batcher: many threads, one batched function, each caller its own rows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pyserving.loaders.batcher import Batcher
from pyserving.servable.errors import InternalError, InvalidArgumentError, UnavailableError


def test_concurrent_callers_get_their_own_rows_in_order():
    calls: list[int] = []
    lock = threading.Lock()

    def predict(x: np.ndarray) -> np.ndarray:
        with lock:
            calls.append(len(x))
        return x * 0.5 + 2

    with Batcher(predict, max_batch_size=16, num_batch_threads=1) as batcher:
        errors: list[str] = []
        start = threading.Barrier(8)

        def client(i: int) -> None:
            start.wait(10)
            for j in range(40):
                rows = 1 + (i + j) % 4
                x = np.arange(rows, dtype=np.float32).reshape(rows, 1) + 100 * i + j
                y = batcher(x)
                if y.shape != (rows, 1) or not np.allclose(y, x * 0.5 + 2):
                    errors.append(f"client {i} call {j}: {y!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sum(calls) == sum(1 + (i + j) % 4 for i in range(8) for j in range(40))
        assert max(calls) <= 16
        stats = batcher.statistics()
        assert stats.tasks == 320 and stats.rows == sum(calls) and stats.batches == len(calls)


def test_named_inputs_and_outputs():
    def fn(batch):
        return {"sum": batch["a"] + batch["b"], "first": batch["a"][:, :1]}

    with Batcher(fn) as batcher:
        out = batcher({"a": np.ones((3, 2)), "b": np.full((3, 2), 2.0)})
        assert out["sum"].tolist() == [[3.0, 3.0]] * 3 and out["first"].shape == (3, 1)


def test_errors_are_answered_and_the_batcher_keeps_working():
    def fn(x):
        if (x < 0).any():
            raise RuntimeError("negative input")
        return x

    with Batcher(fn, max_batch_size=4) as batcher:
        with pytest.raises(InternalError, match="negative input"):
            batcher(np.array([-1.0]))
        with pytest.raises(InvalidArgumentError, match="larger than maximum input batch size 4"):
            batcher(np.zeros((5, 1)))
        with pytest.raises(InvalidArgumentError, match="rank >= 1"):
            batcher(np.float32(3.0))
        assert batcher(np.array([1.0, 2.0])).tolist() == [1.0, 2.0]
    with pytest.raises(UnavailableError):
        batcher(np.array([1.0]))
