"""One local batch job wired together: options + model -> reader, writer, pipeline -> summary.

:func:`run_job` is what :func:`pyserving.batch.run` calls once it has a model. It resolves
the column mapping, the batch and chunk sizes (a resumed job keeps its recorded chunk
size), the output layout and the options the manifest records, then runs the pipeline on
the calling thread and finishes the output (assembly, manifest ``complete``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import pyarrow as pa

from pyserving.batch.columns import resolve_columns, uses_examples
from pyserving.batch.model import PROBE_BATCH_SIZES, BatchModel, LocalModel, probe_batch_size
from pyserving.batch.options import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS, BatchOptions, BatchSummary
from pyserving.batch.pipeline import PipelineSettings, run_pipeline
from pyserving.batch.readers import detect_input_format, open_reader
from pyserving.batch.writers import OutputWriter, output_layout, signature_schema
from pyserving.servable.errors import InvalidArgumentError, NotFoundError

__all__ = ["run_job", "job_options"]

_log = logging.getLogger("pyserving.batch")


def _input_identity(path: str) -> dict[str, Any]:
    """Path, size and modification time of the input (a folder: of its files)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise NotFoundError(f"input {path} does not exist")
    if os.path.isdir(path):
        stats = [os.stat(os.path.join(root, f)) for root, _dirs, files in os.walk(path) for f in files]
        return {"input": path, "input_bytes": sum(s.st_size for s in stats),
                "input_mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
    stat = os.stat(path)
    return {"input": path, "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}


def job_options(options: BatchOptions, model: BatchModel, mapping: dict[str, str], input_format: str,
                output_format: str, chunk_rows: int) -> dict[str, Any]:
    """What the manifest records; a resume must match it exactly."""
    return {
        "model": model.description,
        "signature": model.signature_name,
        **_input_identity(options.input),
        "input_format": input_format,
        "output_format": output_format,
        "columns": mapping,
        "id_column": options.id_column,
        "chunk_rows": chunk_rows,
    }


def run_job(options: BatchOptions, model: BatchModel, started: float | None = None) -> BatchSummary:
    """Score ``options.input`` with ``model`` into ``options.output`` (see the module docstring)."""
    started = time.monotonic() if started is None else started
    mapping = resolve_columns(model.signature, model.method, options.columns)
    if options.id_column in model.signature.outputs:
        raise InvalidArgumentError(
            f"--id-column {options.id_column!r} is also an output of signature {model.signature_name}; "
            "choose another id column name"
        )
    batch_size = options.batch_size or model.preferred_batch_size
    if batch_size is None and isinstance(model, LocalModel):
        batch_size = probe_batch_size(model)  # the size this model runs best at, on this machine
        if batch_size is not None:
            _log.info("Batch size %d: the fastest of %s rows per call for %s", batch_size,
                      "/".join(map(str, PROBE_BATCH_SIZES)), model.description)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    layout = output_layout(options.output, options.output_format)
    input_format = options.input_format or detect_input_format(options.input)
    chunk_rows = options.chunk_rows
    if chunk_rows is None and options.resume:
        previous = OutputWriter.existing_manifest(layout)
        chunk_rows = previous.chunk_rows if previous is not None else None
    if chunk_rows is None:
        chunk_rows = math.ceil(max(DEFAULT_CHUNK_ROWS, batch_size) / batch_size) * batch_size
    record = job_options(options, model, mapping, input_format, layout.format, chunk_rows)
    writer = OutputWriter(layout, record, chunk_rows, resume=options.resume, overwrite=options.overwrite)
    errors_path = str(layout.errors_path)
    if writer.already_complete:
        _log.info("Nothing to resume: %s is complete", layout.output)
        return BatchSummary(str(layout.output), errors_path if layout.errors_path.exists() else None,
                            model.description, model.signature_name, 0, 0, 0, 0, 0,
                            time.monotonic() - started)
    single = next(iter(mapping.values())) if len(mapping) == 1 else None
    reader = open_reader(options.input, input_format, block_rows=chunk_rows, single_column=single,
                         text_columns=list(mapping.values()), id_column=options.id_column)
    resumed_rows = writer.start_row
    if resumed_rows:
        _log.info("Resuming %s after %d chunks (%s rows)", layout.output, writer.next_index, f"{resumed_rows:,}")
    _log.info("Scoring %s with %s signature %s (%s), batches of %d rows, chunks of %d rows -> %s",
              options.input, model.description, model.signature_name,
              "serialized tf.Examples" if uses_examples(model.method) else
              ", ".join(f"{i} <- column {c}" for i, c in mapping.items()), batch_size, chunk_rows, layout.output)
    settings = PipelineSettings(
        mapping=mapping, id_column=options.id_column, batch_size=batch_size, chunk_rows=chunk_rows,
        fail_fast=options.fail_fast, concurrency=_concurrency(model),
        progress=options.progress,
    )
    try:
        result = run_pipeline(model, reader, writer, settings)
        if not result.interrupted:
            writer.finish(_empty_schema(model, options, reader))
    finally:
        writer.close()
    failed_total = writer.manifest.rows_failed
    return BatchSummary(
        output=str(layout.output),
        errors_path=errors_path if failed_total else None,
        model=model.description,
        signature=model.signature_name,
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        rows_failed=result.rows_failed,
        rows_resumed=resumed_rows,
        chunks_written=result.chunks_written,
        seconds=time.monotonic() - started,
        interrupted=result.interrupted,
    )


def _concurrency(model: BatchModel) -> int:
    """Model calls at once: the model's ``max_in_flight`` when it has one; else 1 for a model in
    this process (TensorFlow already uses every core per call), 4 for others (remote ones cap
    their own calls)."""
    declared = getattr(model, "max_in_flight", None)
    if isinstance(declared, int) and declared >= 1:
        return declared
    return 1 if isinstance(model, LocalModel) else 4


def _empty_schema(model: BatchModel, options: BatchOptions, reader: Any) -> pa.Schema:
    """The output schema when no row was scored: the signature's outputs, the input's id type."""
    id_type = pa.int64()
    files = getattr(reader, "files", None)
    if files:
        import pyarrow.parquet as pq

        schema = pq.read_schema(files[0])
        if options.id_column in schema.names:
            id_type = schema.field(options.id_column).type
    return signature_schema(model.signature, list(model.signature.outputs), options.id_column, id_type)
