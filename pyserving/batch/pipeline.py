"""The batch job itself: read -> score -> write, overlapped, resumable: :func:`run_pipeline`.

Three threads joined by bounded queues (two chunks each), so reading and converting,
model calls and writing overlap while memory stays at a few chunks::

    reader  (batch-reader):  input blocks -> chunks of ``chunk_rows`` rows, converted to the
                             signature's tensors; bad rows (see pyserving.batch.columns) set aside
    compute (batch-compute): model calls of ``batch_size`` good rows (``concurrency`` calls
                             at once for models that allow it, e.g. remote ones)
    writer  (batch-writer):  chunk -> part file, errors file, manifest (pyserving.batch.writers)

The calling thread starts them and waits. Chunk ``i`` is always rows
``[i * chunk_rows, (i + 1) * chunk_rows)`` and chunks are written in order, so a resumed job
starts at the row after the last chunk the manifest records.

Bad rows never fail a batch: rows are validated before the call, and if a call still fails,
its rows are called one by one; the rows that fail alone are bad (reason: the model's
error). If every row of a batch of two or more fails alone, with some error other than
INVALID_ARGUMENT, the model (not the data) is taken to be broken and the job stops with
that error. Bad rows go to the errors file and the summary; with ``fail_fast`` the first
one stops the job with :class:`~pyserving.batch.options.BadRowError` naming it.

Stopping: Ctrl-C (KeyboardInterrupt in the calling thread, which handles it from the moment
the threads may start working) stops cleanly: the reader stops, the chunk being scored is
finished and written with those already scored, and the summary says ``interrupted``
(resume continues). A second Ctrl-C raises at once; what is written stays consistent
(writes are atomic). A failure in the reader or compute thread stops the stages before it,
while those after it finish what they hold (chunks scored before a bad row are written);
a failure in the writer stops everything. The failure is raised in the calling thread.
Blocked queue operations re-check an abort flag every 0.1 s, so no thread waits forever.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from pyserving.batch.columns import EXAMPLES_INPUT, example_spec, to_tensors, uses_examples
from pyserving.batch.model import BatchModel, row_failure, score_isolating_rows
from pyserving.batch.options import BadRowError
from pyserving.batch.progress import Progress
from pyserving.batch.readers import Block, Reader
from pyserving.batch.writers import OutputWriter, json_value
from pyserving.servable.errors import Code, ServingError

__all__ = ["PipelineSettings", "PipelineResult", "run_pipeline"]

_log = logging.getLogger("pyserving.batch")
_END = object()
_POLL_S = 0.1  # how often a blocked queue operation re-checks the abort flag


@dataclass(frozen=True)
class PipelineSettings:
    mapping: dict[str, str]  # signature input -> input column
    id_column: str
    batch_size: int
    chunk_rows: int
    fail_fast: bool = False
    concurrency: int = 1
    progress: bool | None = None
    queue_chunks: int = 2


@dataclass
class PipelineResult:
    rows_read: int = 0
    rows_written: int = 0
    rows_failed: int = 0
    chunks_written: int = 0
    interrupted: bool = False


@dataclass
class _Chunk:
    start: int
    end: int
    rows: np.ndarray  # row numbers of the good rows
    ids: pa.Array  # their ids
    inputs: dict[str, np.ndarray]  # their tensors
    bad: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class _Stopped(Exception):
    """The job is aborting; the thread that sees it just returns."""


def _slice(block: Block, offset: int, rows: int) -> Block:
    columns = {c: (v.slice(offset, rows) if isinstance(v, pa.Array | pa.ChunkedArray) else v[offset: offset + rows])
               for c, v in block.columns.items()}
    reasons = {i - offset: r for i, r in block.reasons.items() if offset <= i < offset + rows}
    return Block(block.start + offset, rows, columns, reasons, block.stray if offset == 0 else [])


def _ids(block: Block, id_column: str) -> pa.Array:
    values = block.columns.get(id_column)
    if values is None:
        return pa.array(np.arange(block.start, block.start + block.num_rows, dtype=np.int64))
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(list(values) if isinstance(values, np.ndarray)
                                                                 and values.dtype.kind == "O" else values)


def _concat(arrays: list[pa.Array]) -> pa.Array:
    if len(arrays) == 1:
        return arrays[0]
    first = arrays[0].type
    return pa.concat_arrays([a if a.type == first else a.cast(first) for a in arrays])


class _Job:
    def __init__(self, model: BatchModel, reader: Reader, writer: OutputWriter, settings: PipelineSettings) -> None:
        self.model, self.reader, self.writer, self.settings = model, reader, writer, settings
        self.examples = uses_examples(model.method)
        self.specs = {EXAMPLES_INPUT: example_spec()} if self.examples else dict(model.signature.inputs)
        self.abort = threading.Event()  # the writer failed, or a second Ctrl-C: everyone stops now
        self.stop = threading.Event()  # Ctrl-C or a failure upstream: no new chunks; write what is scored
        self.interrupted = False  # Ctrl-C was pressed (set by the calling thread)
        self.go = threading.Event()  # set by the calling thread once it handles Ctrl-C
        self.writer_done = threading.Event()  # the writer thread ended
        self.error: BaseException | None = None
        self._error_lock = threading.Lock()  # guards error
        self.scored: queue.Queue[Any] = queue.Queue(settings.queue_chunks)
        self.read: queue.Queue[Any] = queue.Queue(settings.queue_chunks)
        self.result = PipelineResult()
        self.progress: Progress | None = None

    # -- plumbing ---------------------------------------------------------------------
    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.abort.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self.abort.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def thread(self, name: str, body: Callable[[], None], downstream: queue.Queue[Any] | None) -> threading.Thread:
        """Run ``body``; then tell ``downstream`` the stream ended. A failure is kept for the calling
        thread and stops the stages upstream, while those downstream still finish what they hold
        (chunks scored before a bad row are written); a failing writer aborts everything."""
        def target() -> None:
            self.go.wait()
            try:
                body()
            except _Stopped:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                with self._error_lock:
                    if self.error is None:
                        self.error = exc
                self.stop.set()
                if downstream is None:
                    self.abort.set()
            if downstream is not None:
                try:
                    self.put(downstream, _END)
                except _Stopped:
                    pass

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    # -- reader -----------------------------------------------------------------------
    def read_chunks(self) -> None:
        s = self.settings
        start = self.writer.start_row
        wanted = list(dict.fromkeys([*s.mapping.values(), s.id_column]))
        pending: list[Block] = []
        chunk_start, filled, checked = start, 0, False
        for block in self.reader.blocks(start, wanted):
            if self.stop.is_set() or self.abort.is_set():
                return
            if not block.num_rows and block.start <= start and self.writer.next_index:
                continue  # trailing malformed lines a completed chunk already reported
            if not checked and len(block.reasons) < block.num_rows:
                self._check_columns(block)
                checked = True
            offset = 0
            while offset < block.num_rows or (offset == 0 and block.stray):
                take = min(block.num_rows - offset, s.chunk_rows - filled)
                pending.append(_slice(block, offset, take))
                offset, filled = offset + take, filled + take
                if filled == s.chunk_rows:
                    self.put(self.read, self._convert(chunk_start, pending))
                    chunk_start, filled, pending = chunk_start + filled, 0, []
                if take == 0:
                    break
        if pending:
            self.put(self.read, self._convert(chunk_start, pending))

    def _check_columns(self, block: Block) -> None:
        known = self.reader.columns
        missing = [c for c in self.settings.mapping.values() if c not in block.columns]
        if missing:
            have = f"its columns: {', '.join(known)}" if known else "see --columns"
            raise ServingError.from_code(Code.INVALID_ARGUMENT, (
                f"input {self.reader.path} has no column {', '.join(map(repr, missing))} for the signature's "
                f"inputs ({', '.join(f'{i} <- {c}' for i, c in self.settings.mapping.items())}); {have}"))

    def _convert(self, start: int, blocks: list[Block]) -> _Chunk:
        rows, ids, inputs, bad = [], [], [], []
        for block in blocks:
            bad.extend(block.stray)
            if not block.num_rows:
                continue
            tensors = to_tensors(block.columns, self.settings.mapping, self.specs, block.num_rows)
            block_ids = _ids(block, self.settings.id_column)
            reasons = dict(tensors.reasons)
            reasons.update(block.reasons)
            good = tensors.good.copy()
            arrays = tensors.arrays
            if block.reasons:
                keep = np.ones(block.num_rows, bool)
                keep[list(block.reasons)] = False
                arrays = {n: a[keep[good]] for n, a in arrays.items()}
                good &= keep
            for offset in sorted(reasons):
                record = {"row": block.start + offset, "id": json_value(block_ids[offset].as_py()),
                          "reason": reasons[offset]}
                if self.settings.fail_fast:
                    raise BadRowError(record["row"], record["id"], record["reason"])
                bad.append(record)
            rows.append(np.arange(block.start, block.start + block.num_rows)[good])
            ids.append(block_ids.filter(pa.array(good)) if not good.all() else block_ids)
            inputs.append(arrays)
        end = blocks[-1].start + blocks[-1].num_rows
        if not inputs:
            return _Chunk(start, end, np.zeros(0, np.int64), pa.array([], pa.int64()), {}, bad)
        merged = {n: (inputs[0][n] if len(inputs) == 1 else np.concatenate([i[n] for i in inputs]))
                  for n in inputs[0]}
        return _Chunk(start, end, np.concatenate(rows), _concat(ids), merged, bad)

    # -- compute ----------------------------------------------------------------------
    def compute(self) -> None:
        s = self.settings
        pool = ThreadPoolExecutor(s.concurrency, thread_name_prefix="batch-call") if s.concurrency > 1 else None
        try:
            while True:
                chunk = self.get(self.read)
                if chunk is _END or self.stop.is_set():
                    return
                self._score_chunk(chunk, pool)
                self.result.rows_read += chunk.end - chunk.start
                self.put(self.scored, chunk)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _score_chunk(self, chunk: _Chunk, pool: ThreadPoolExecutor | None) -> None:
        n, size = len(chunk.rows), self.settings.batch_size
        spans = [(b, min(b + size, n)) for b in range(0, n, size)]
        if pool is None:
            results: Iterator[tuple[dict[str, np.ndarray], np.ndarray, list[tuple[int, str]]]] = (
                self._score_batch(chunk, b, e) for b, e in spans)
        else:
            results = (f.result() for f in [pool.submit(self._score_batch, chunk, b, e) for b, e in spans])
        outputs: dict[str, list[np.ndarray]] = {}
        keep = np.ones(n, bool)
        if self.progress is not None:  # the rows set aside before scoring
            self.progress.update(chunk.end - chunk.start - n, sum(1 for r in chunk.bad if "row" in r))
        for (begin, end), (result, ok, failures) in zip(spans, results):
            if self.abort.is_set():
                raise _Stopped
            for name, value in result.items():
                outputs.setdefault(name, []).append(value)
            keep[begin:end] = ok
            for position, reason in failures:
                record = {"row": int(chunk.rows[position]), "id": json_value(chunk.ids[position].as_py()),
                          "reason": reason}
                if self.settings.fail_fast:
                    raise BadRowError(record["row"], record["id"], reason)
                chunk.bad.append(record)
            if self.progress is not None:
                self.progress.update(end - begin, int((~ok).sum()))
        chunk.bad.sort(key=lambda r: (r.get("row", -1), r.get("line", -1)))
        chunk.outputs = {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in outputs.items()}
        if not keep.all():
            chunk.ids = chunk.ids.filter(pa.array(keep))
        chunk.inputs = {}

    def _score_batch(self, chunk: _Chunk, begin: int, end: int
                     ) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[int, str]]]:
        """(outputs of the rows that succeeded, success mask, [(position, reason)] of the others)."""
        inputs = {k: v[begin:end] for k, v in chunk.inputs.items()}
        scores = score_isolating_rows(self.model, inputs, end - begin, EXAMPLES_INPUT if self.examples else None)
        errors = scores.row_errors
        if not scores.ok.any() and end - begin > 1 and any(e.code != Code.INVALID_ARGUMENT for e in errors.values()):
            first = scores.first_error
            raise ServingError.from_code(first.code, f"{self.model.description} failed on every row of a batch "
                                         f"(rows {int(chunk.rows[begin])}..{int(chunk.rows[end - 1])}): "
                                         f"{first.message}") from scores.batch_error
        return scores.outputs, scores.ok, [(begin + i, row_failure(e)) for i, e in sorted(errors.items())]

    # -- writer -----------------------------------------------------------------------
    def write(self) -> None:
        try:
            self._write_all()
        finally:
            self.writer_done.set()

    def _write_all(self) -> None:
        import orjson

        while True:
            chunk = self.get(self.scored)
            if chunk is _END:
                return
            lines = [orjson.dumps(record) + b"\n" for record in chunk.bad]
            self.writer.write_chunk(chunk.start, chunk.end, chunk.ids, chunk.outputs, lines)
            self.result.rows_written += len(chunk.ids)
            self.result.rows_failed += len(chunk.bad)
            self.result.chunks_written += 1


def run_pipeline(model: BatchModel, reader: Reader, writer: OutputWriter, settings: PipelineSettings
                 ) -> PipelineResult:
    """Run the job on the calling thread (see the module docstring); returns what it did."""
    job = _Job(model, reader, writer, settings)
    job.progress = Progress(reader.total_rows, writer.start_row, bar=settings.progress)
    threads = [job.thread("batch-reader", job.read_chunks, job.read),
               job.thread("batch-compute", job.compute, job.scored)]
    job.thread("batch-writer", job.write, None)
    interrupts = 0
    try:
        job.go.set()  # only now may the threads work: a Ctrl-C from here on lands in the handler below
        while True:
            try:
                # An Event, not Thread.join: a join interrupted by Ctrl-C can mark a live thread
                # stopped (CPython bpo-45274's fix misfires while the thread runs).
                if job.writer_done.wait(0.2):
                    break
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > 1:
                    job.abort.set()
                    raise
                job.interrupted = True
                job.stop.set()
                _log.warning("Stopping after the chunk being scored (Ctrl-C again to quit at once); "
                             "rerun with --resume to continue")
    finally:
        job.abort.set()  # the writer is done: release a reader blocked on a full queue after Ctrl-C
        for thread in threads:
            thread.join(60.0)
        job.progress.close()
    if job.error is not None:
        raise job.error
    job.result.interrupted = job.interrupted
    return job.result

