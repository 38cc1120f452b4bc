""":class:`Batcher`: dynamic batching for any servable's own batch function.

A servable that can compute many rows at once (a model's ``predict(x)`` over a batch)
wraps that function in a ``Batcher``; concurrent callers then share model calls::

    # in a python-platform model.py
    from pyserving import Batcher

    class Model:
        def __init__(self):
            self.batcher = Batcher(self._predict_batch, max_batch_size=32)

        def _predict_batch(self, x):           # x: [rows, ...] numpy array
            return x * 0.5 + 2                 # -> [rows, ...]

        def predict(self, x):                  # called from many request threads
            return self.batcher(x)             # only this caller's rows come back

        def close(self):                       # called at unload
            self.batcher.close()

    def create_servable(version_dir):
        return Model()

``fn`` takes one numpy array, or a mapping of name -> array (all with the same number of
rows), whose dimension 0 concatenates the callers' rows in arrival order, and returns the
same kind of structure with one output row per input row. Calls with equal dtypes and
non-batch shapes share a batch; others run in batches of their own.

Threading contract: ``__call__`` may be called from any number of threads and blocks until
its rows are computed. ``fn`` runs on the :class:`BatchScheduler`'s threads or on a
caller's thread (an idle batcher runs a lone call at once, on the caller's thread), never
with a lock held, and possibly concurrently with itself when ``num_batch_threads`` > 1.
Errors: an exception from ``fn`` fails exactly the calls of that batch (a ``ServingError``
keeps its code; others become INTERNAL); a full queue answers UNAVAILABLE at once; a call
larger than ``max_batch_size`` is INVALID_ARGUMENT; a ``deadline`` (``time.monotonic()``)
that passed before the batch ran is DEADLINE_EXCEEDED. ``close()`` lets queued calls finish,
then stops the threads; calls after it are UNAVAILABLE.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from pyserving.loaders.batching_tensors import batch_key, concat_inputs, merge_outputs, rows_of, split_outputs
from pyserving.servable.batch_queue import Batch, QueueOptions
from pyserving.servable.batch_statistics import QueueStatistics
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.errors import InvalidArgumentError

__all__ = ["Batcher"]

_SINGLE = "\0array"  # the key under which a bare array travels through the queue


class Batcher:
    """Batches concurrent calls of ``fn`` (see the module docstring).

    ``max_batch_size``: most rows per call of ``fn`` and per caller (default 32).
    ``batch_timeout_s``: how long a batch may wait to fill while ``fn`` is busy (default 0:
    batches grow only while every thread is busy). ``max_enqueued_batches``: waiting batches
    before calls are refused UNAVAILABLE (default 64). ``num_batch_threads``: concurrent
    calls of ``fn`` (default 1). ``scheduler``: share another scheduler's threads instead.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        max_batch_size: int = 32,
        batch_timeout_s: float = 0.0,
        max_enqueued_batches: int = 64,
        num_batch_threads: int = 1,
        name: str = "batcher",
        scheduler: BatchScheduler | None = None,
    ) -> None:
        if batch_timeout_s < 0:
            raise InvalidArgumentError(f"batch_timeout_s must be >= 0, got {batch_timeout_s}")
        self._fn = fn
        self._scheduler = scheduler or BatchScheduler(num_batch_threads, name=name)
        self._queue = self._scheduler.add_queue(
            name,
            QueueOptions(
                max_batch_size=max_batch_size,
                batch_timeout_micros=int(batch_timeout_s * 1e6),
                max_enqueued_batches=max_enqueued_batches,
            ),
            self._process,
            merge=merge_outputs,
        )

    def __call__(self, inputs: Any, *, deadline: float | None = None) -> Any:
        """``fn``'s rows for ``inputs`` (an array, or a mapping of name -> array)."""
        import numpy as np

        single = not isinstance(inputs, Mapping)
        named = {_SINGLE: inputs} if single else dict(inputs)
        named = {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in named.items()}
        rows = rows_of(named)
        if rows is None:
            raise InvalidArgumentError(
                "Batcher inputs must be arrays of rank >= 1 sharing their first dimension; got shapes "
                + ", ".join(f"{k if k != _SINGLE else 'input'}: {list(v.shape)}" for k, v in named.items())
            )
        outputs = self._queue.run(named, rows, key=batch_key(named, (), False), deadline=deadline)
        return outputs[_SINGLE] if single else outputs

    def _process(self, batch: Batch[dict[str, Any]]) -> list[dict[str, Any]]:
        parts = [(task.payload, task.offset, task.size) for task in batch.tasks]
        merged = concat_inputs(parts, batch.padded_size, False)
        single = _SINGLE in merged
        result = self._fn(merged[_SINGLE] if single else merged)
        outputs = {_SINGLE: result} if single else dict(result)
        return split_outputs(outputs, [task.size for task in batch.tasks], batch.padded_size)

    def statistics(self) -> QueueStatistics:
        """Batches run, rows, batch sizes and queue delays so far."""
        return self._queue.statistics()

    def close(self) -> None:
        """Let queued calls finish, then release the threads. Idempotent."""
        self._queue.close()

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
