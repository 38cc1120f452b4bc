"""The batch job of :func:`pyserving.integrations.ray.run_on_ray` (implementation module).

Reading with Ray Data, scoring on an actor pool of :class:`~pyserving.integrations.ray.Predictor`,
and writing on the driver with the local job's writer; see :mod:`pyserving.integrations.ray`
for the contract (what differs from a local run, threading, failures).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pyserving.batch.options import BadRowError, BatchOptions, BatchSummary
from pyserving.integrations.ray import ERROR_COLUMN, INSTALL_HINT, Predictor
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, ServingError, as_serving_error

__all__ = ["run_on_ray"]


# -- run_on_ray: the batch job on a Ray cluster ------------------------------------------------------


def _describe_model(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Runs on a Ray worker: what the driver needs to know about the model (it need not load it)."""
    from pyserving.batch.model import open_local_model

    model = open_local_model(**kwargs)
    try:
        sid = getattr(model, "servable_id", None)
        return {"description": model.description, "signature_name": model.signature_name,
                "signature": model.signature, "method": model.method,
                "preferred_batch_size": model.preferred_batch_size, "version": sid.version if sid else None}
    finally:
        model.close()


def _tfrecord_datasource(path: str, column: str, id_column: str) -> Any:
    """A Ray datasource of a TFRecord file's (or folder's) raw records in ``column``."""
    from ray.data.datasource import FileBasedDatasource

    class TfRecordRecords(FileBasedDatasource):
        def _read_stream(self, f: Any, path: str) -> Any:
            import pyarrow as pa

            records: list[bytes] = []
            with_ids: bool | None = None
            while True:
                header = f.read(12)
                if len(header) < 12:
                    if header:
                        raise ValueError(f"TFRecord file {path} ends inside a record header")
                    break
                length = int.from_bytes(header[:8], "little")
                data = f.read(length + 4)
                if len(data) < length + 4:
                    raise ValueError(f"TFRecord file {path} ends inside a record of {length} bytes")
                records.append(data[:length])
                if with_ids is None:
                    with_ids = _example_id(records[0], id_column) is not None
                if len(records) == 4096:
                    yield _records_table(pa, records, column, id_column if with_ids else None)
                    records = []
            if records:
                yield _records_table(pa, records, column, id_column if with_ids else None)

    return TfRecordRecords(path, file_extensions=None)


def _example_id(record: bytes, id_column: str) -> Any:
    from tensorflow.core.example import example_pb2

    try:
        feature = example_pb2.Example.FromString(record).features.feature.get(id_column)
    except Exception:  # noqa: BLE001 - not a tf.Example: no id; the model call says why the row is bad
        return None
    kind = feature.WhichOneof("kind") if feature is not None else None
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    return values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else values[0]


def _records_table(pa: Any, records: list[bytes], column: str, id_column: str | None) -> Any:
    columns = {column: pa.array(records, pa.binary())}
    if id_column is not None:
        columns[id_column] = pa.array([_example_id(r, id_column) for r in records])
    return pa.table(columns)


def _read_dataset(ray: Any, fmt: str, path: str, mapping: dict[str, str], id_column: str) -> Any:
    data = ray.data
    if fmt == "parquet":
        return data.read_parquet(path, file_extensions=None)
    if fmt == "csv":
        import pyarrow as pa
        from pyarrow import csv

        text = csv.ConvertOptions(column_types={c: pa.string() for c in mapping.values()})
        return data.read_csv(path, file_extensions=None, convert_options=text)
    if fmt == "jsonl":
        return data.read_json(path, file_extensions=None)
    if len(mapping) != 1:
        raise InvalidArgumentError(f"{fmt} input holds one column, but the signature has several inputs; use "
                                   "Parquet, CSV or JSON Lines for those")
    if fmt == "npy":
        return data.read_numpy(path, file_extensions=None).rename_columns({"data": next(iter(mapping.values()))})
    return data.read_datasource(_tfrecord_datasource(path, next(iter(mapping.values())), id_column))


def _numpy(column: Any) -> np.ndarray:
    """An output column back to numpy (fixed-size lists become dimensions)."""
    import pyarrow as pa

    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows, shape = len(values), []
    while pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size)
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False).reshape(rows, *shape)


def _unwrap(exc: BaseException) -> ServingError:
    """The ServingError a Ray error carries: the exception a task raised (``cause``), else the last
    pyserving error named in the worker's traceback text (Ray Data keeps only that), else a translation."""
    import re

    from pyserving.servable import errors

    seen: BaseException = exc
    while isinstance(getattr(seen, "cause", None), BaseException):
        seen = seen.cause  # type: ignore[attr-defined]
        if isinstance(seen, ServingError) and type(seen).__module__.startswith("pyserving"):
            return seen
    found = re.findall(r"^pyserving\.servable\.errors\.(\w+): (.*)$", str(exc), re.MULTILINE)
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, ServingError) and cls is not ServingError:
            return cls(message)
        return ServingError(message)
    return as_serving_error(seen, "the Ray job failed: ")


class _Driver:
    """Cuts the scored rows, arriving in input order, into chunks and writes them (driver thread only)."""

    def __init__(self, writer: Any, options: BatchOptions, progress: Any) -> None:
        self.writer, self.options, self.progress = writer, options, progress
        self.row = 0  # input row number of the next row to arrive
        self.pending: list[Any] = []
        self.filled = 0
        self.rows_written = self.rows_failed = self.chunks_written = 0

    def add(self, table: Any) -> None:
        start = self.writer.start_row
        if self.row < start:  # rows an earlier run wrote (resume)
            skip = min(start - self.row, table.num_rows)
            table, self.row = table.slice(skip), self.row + skip
        self.row += table.num_rows
        if table.num_rows:
            self.pending.append(table)
            self.filled += table.num_rows
        while self.filled >= self.writer.manifest.chunk_rows:
            self.flush(self.writer.manifest.chunk_rows)

    def flush(self, rows: int | None = None) -> None:
        import pyarrow as pa

        if not self.filled:
            return
        table = pa.concat_tables(self.pending)
        rows = self.filled if rows is None else rows
        rest = table.slice(rows)
        self.pending, self.filled = ([rest] if rest.num_rows else []), rest.num_rows
        self._write(table.slice(0, rows))

    def _write(self, chunk: Any) -> None:
        import orjson
        import pyarrow as pa

        from pyserving.batch.writers import json_value

        start, n, id_column = self.writer.start_row, chunk.num_rows, self.options.id_column
        reasons = chunk.column(ERROR_COLUMN).to_numpy(zero_copy_only=False)
        good = reasons == ""
        ids = (chunk.column(id_column).combine_chunks() if id_column in chunk.column_names
               else pa.array(np.arange(start, start + n, dtype=np.int64)))
        lines = []
        for i in map(int, np.flatnonzero(~good)):
            record = {"row": start + i, "id": json_value(ids[i].as_py()), "reason": str(reasons[i])}
            if self.options.fail_fast:
                raise BadRowError(record["row"], record["id"], record["reason"])
            lines.append(orjson.dumps(record) + b"\n")
        outputs = {name: _numpy(chunk.column(name))[good] for name in chunk.column_names
                   if name not in (ERROR_COLUMN, id_column)}
        self.writer.write_chunk(start, start + n, ids if good.all() else ids.filter(pa.array(good)), outputs, lines)
        self.rows_written += n - len(lines)
        self.rows_failed += len(lines)
        self.chunks_written += 1
        self.progress.update(n, len(lines))


def run_on_ray(options: BatchOptions, address: str | None = None) -> BatchSummary:
    """Run ``options`` as a Ray job (see the module docstring); blocks until it ends.

    ``address``: a Ray cluster (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); None:
    the Ray already initialised in this process, else a new local one. A Ray started here is
    shut down at the end. Ctrl-C stops after the last complete chunk (``summary.interrupted``).
    """
    try:
        import ray
    except ImportError as exc:
        raise FailedPreconditionError(f"--ray needs ray: {INSTALL_HINT}") from exc
    if options.server:
        raise InvalidArgumentError(f"--server {options.server} and --ray are two ways to score; choose one")
    started = time.monotonic()
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=address, **({"include_dashboard": False} if address is None else {}))
    context = ray.data.DataContext.get_current()
    preserve_order = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        return _run(ray, options, started)
    except ray.exceptions.RayError as exc:
        raise _unwrap(exc) from exc
    finally:
        context.execution_options.preserve_order = preserve_order
        if own_ray:
            ray.shutdown()


def _chunk_rows(options: BatchOptions, layout: Any, batch_size: int) -> int:
    """The local job's rule: ``chunk_rows``, else a resumed job's, else 8192 rounded up to batches."""
    from pyserving.batch.options import DEFAULT_CHUNK_ROWS
    from pyserving.batch.writers import OutputWriter

    if options.chunk_rows is None and options.resume:
        previous = OutputWriter.existing_manifest(layout)
        if previous is not None:
            return previous.chunk_rows
    return options.chunk_rows or -(-max(DEFAULT_CHUNK_ROWS, batch_size) // batch_size) * batch_size


def _run(ray: Any, options: BatchOptions, started: float) -> BatchSummary:
    import logging
    import os
    from types import SimpleNamespace

    from pyserving.batch.columns import resolve_columns
    from pyserving.batch.job import job_options
    from pyserving.batch.options import DEFAULT_BATCH_SIZE
    from pyserving.batch.progress import Progress
    from pyserving.batch.readers import detect_input_format
    from pyserving.batch.writers import OutputWriter, output_layout, signature_schema

    log = logging.getLogger("pyserving.batch")
    extra = dict(options.extra)
    cpus, gpus = float(extra.get("ray_cpus_per_actor", 1)), float(extra.get("ray_gpus_per_actor", 0))
    model_kwargs = {"signature": options.signature, "version": options.version, "label": options.label,
                    "platform": options.platform, "model_config": options.model_config}
    describe = ray.remote(_describe_model).options(num_cpus=cpus, num_gpus=gpus)
    model = SimpleNamespace(**ray.get(describe.remote({"model_path": options.model_path, **model_kwargs})))
    if options.label is None and model.version is not None:  # every actor loads the version chosen here
        model_kwargs["version"] = model.version
    model_kwargs["signature"] = model.signature_name
    mapping = resolve_columns(model.signature, model.method, options.columns)
    batch_size = options.batch_size or model.preferred_batch_size or DEFAULT_BATCH_SIZE
    layout = output_layout(options.output, options.output_format)
    remote_input = "://" in options.input
    fmt = options.input_format or detect_input_format(options.input)
    chunk_rows = _chunk_rows(options, layout, batch_size)
    record = ({"model": model.description, "signature": model.signature_name, "input": options.input,
               "input_format": fmt, "output_format": layout.format, "columns": mapping,
               "id_column": options.id_column, "chunk_rows": chunk_rows} if remote_input
              else job_options(options, model, mapping, fmt, layout.format, chunk_rows))  # type: ignore[arg-type]
    writer = OutputWriter(layout, record, chunk_rows, resume=options.resume, overwrite=options.overwrite)
    resumed = writer.start_row
    driver = _Driver(writer, options, Progress(None, resumed, bar=options.progress))
    interrupted = False
    if writer.already_complete:
        log.info("Nothing to resume: %s is complete", layout.output)
    else:
        try:
            ds = _read_dataset(ray, fmt, options.input if remote_input else os.path.abspath(options.input),
                               mapping, options.id_column)
            schema = ds.schema()
        except (OSError, ValueError, ImportError) as exc:
            raise as_serving_error(exc, f"cannot read {fmt} input {options.input}: ") from exc
        missing = [c for c in mapping.values() if c not in schema.names]
        if missing:
            raise InvalidArgumentError(
                f"input {options.input} has no column {', '.join(map(repr, missing))} for the signature's inputs "
                f"({', '.join(f'{i} <- {c}' for i, c in mapping.items())}); its columns: {', '.join(schema.names)}")
        has_ids = options.id_column in schema.names
        ds = ds.select_columns(list(dict.fromkeys([*mapping.values(), *([options.id_column] if has_ids else [])])))
        # one CPU stays free for Ray Data's list/read tasks: actors holding every CPU would starve them
        free = ray.cluster_resources().get("CPU", 1) - 1
        actors = int(extra.get("ray_actors") or max(1, int(free // max(cpus, 1e-3))))
        predictor = {"model_path": options.model_path, **model_kwargs, "columns": mapping,
                     "id_column": options.id_column, "keep_columns": [options.id_column], "error_column": ERROR_COLUMN}
        scored = ds.map_batches(Predictor, fn_constructor_kwargs=predictor, batch_size=batch_size,
                                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                num_cpus=cpus, **({"num_gpus": gpus} if gpus else {}))
        log.info("Scoring %s with %s signature %s on Ray (%d actors, batches of %d rows, chunks of %d rows) -> %s",
                 options.input, model.description, model.signature_name, actors, batch_size, chunk_rows,
                 layout.output)
        try:
            for table in scored.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
                driver.add(table)
            driver.flush()
        except KeyboardInterrupt:
            interrupted = True
            log.warning("Stopped after %s rows; rerun with --resume to continue", f"{writer.start_row:,}")
        finally:
            driver.progress.close()
        if not interrupted:
            id_type = [schema.base_schema.field(options.id_column).type] if has_ids else []
            writer.finish(signature_schema(model.signature, list(model.signature.outputs), options.id_column,
                                           *id_type))
    failed = writer.manifest.rows_failed
    return BatchSummary(
        output=str(layout.output), errors_path=str(layout.errors_path) if failed else None,
        model=model.description, signature=model.signature_name, rows_read=max(driver.row - resumed, 0),
        rows_written=driver.rows_written, rows_failed=driver.rows_failed, rows_resumed=resumed,
        chunks_written=driver.chunks_written, seconds=time.monotonic() - started, interrupted=interrupted)
