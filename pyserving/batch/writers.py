"""Scored chunks to output files: :class:`OutputWriter` (Parquet or JSON Lines, file or folder).

Layout (:func:`output_layout`)
    * ``--output scores.parquet`` / ``.pq`` / ``.jsonl`` / ``.ndjson`` / ``.json``: one file.
      Each chunk is written as a part into a hidden staging folder next to it
      (``.scores.parquet.parts/``: ``part-00000.arrow`` Arrow IPC files for Parquet, which
      cost no encoding, or ``.jsonl``, plus ``manifest.json``) and appended to the file
      being built (``.scores.parquet.tmp``, one row group per chunk). At the end the file is
      put in place with ``os.replace`` and the staging folder removed. A resumed job rebuilds
      the file from the parts of the chunks done earlier, then goes on.
    * ``--output scores/`` (a trailing slash, an existing folder, or a name with no known
      extension): a folder of ``part-00000.parquet`` (or ``.jsonl``) files plus
      ``_manifest.json``, which stays (with ``"complete": true``). ``pyarrow.parquet.read_table``
      (and Spark, pandas, DuckDB) read the folder as one table: they skip ``_`` and ``.`` names.
    * Bad rows: ``<output>.errors.jsonl`` next to the output, one JSON object per line:
      ``{"row": 17, "id": 17, "reason": "..."}`` (a malformed CSV line: ``{"line": 9, ...}``).
      No file when no row failed.

Columns: ``--id-column`` first (the input's ids, or the row numbers as int64), then one
column per signature output named after it, rows in input order. A 1-D output is a plain
column; an output with more dimensions a (nested) list column; strings are binary in Parquet
and UTF-8 text (base64 ``{"b64": ...}`` when not UTF-8) in JSON Lines. Every Parquet part is
cast to the schema of the first one, so the parts read as one table.

A fresh job refuses to replace an existing output unless ``overwrite``; see
:mod:`~pyserving.batch.manifest` for the chunk protocol ``resume`` relies on. One thread
(the pipeline's writer) uses a writer.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from pyserving.batch.manifest import ChunkRecord, Manifest, write_atomically
from pyserving.batch.options import OUTPUT_FORMATS
from pyserving.servable.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from pyserving.servable.signature import DType, SignatureSpec

__all__ = ["OutputLayout", "output_layout", "OutputWriter", "build_columns", "signature_schema", "json_value"]

_log = logging.getLogger("pyserving.batch")
#: Scores and ids are nearly all distinct: dictionary encoding would cost 5x the CPU and grow the file.
PARQUET_OPTIONS: dict[str, Any] = {"use_dictionary": False}
_FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class OutputLayout:
    output: Path
    format: str
    single_file: bool

    @property
    def work_dir(self) -> Path:
        return self.output.with_name(f".{self.output.name}.parts") if self.single_file else self.output

    @property
    def manifest_path(self) -> Path:
        return self.work_dir / ("manifest.json" if self.single_file else "_manifest.json")

    @property
    def errors_path(self) -> Path:
        return self.output.with_name(self.output.name + ".errors.jsonl")

    def part_name(self, index: int) -> str:
        """Parquet folder parts are ``.parquet``; a Parquet file's staged parts are Arrow IPC."""
        ext = "arrow" if self.single_file and self.format == "parquet" else self.format
        return f"part-{index:05d}.{ext}"


def output_layout(output: str, fmt: str | None) -> OutputLayout:
    """Where and how ``output`` is written (see the module docstring)."""
    path = Path(os.path.abspath(output))
    ext_format = _FILE_FORMATS.get(path.suffix.lower())
    folder = output.endswith(("/", os.sep)) or path.is_dir() or ext_format is None
    if fmt is not None and fmt not in OUTPUT_FORMATS:
        raise InvalidArgumentError(f"output_format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    if not folder and fmt is not None and fmt != ext_format:
        raise InvalidArgumentError(f"--output-format {fmt} does not match the output file name {output}")
    return OutputLayout(path, fmt or ext_format or "parquet", not folder)


def _arrow_type(dtype: DType) -> pa.DataType:
    if dtype is DType.STRING:
        return pa.binary()
    return pa.from_numpy_dtype(np.dtype(dtype.numpy_name))


def signature_schema(signature: SignatureSpec, outputs: list[str], id_column: str,
                     id_type: pa.DataType = pa.int64()) -> pa.Schema:
    """The schema an empty output gets: the id column and each output by its declared type/rank."""
    fields = [pa.field(id_column, id_type)]
    for name in outputs:
        spec = signature.outputs.get(name)
        type_ = _arrow_type(spec.dtype) if spec is not None else pa.float32()
        rank = len(spec.shape) if spec is not None and spec.shape is not None else 1
        for _ in range(max(rank - 1, 0)):
            type_ = pa.list_(type_)
        fields.append(pa.field(name, type_))
    return pa.schema(fields)


def _to_arrow(array: np.ndarray) -> pa.Array:
    if array.ndim == 0:
        array = array.reshape(1)
    flat = array.reshape(-1)
    values = pa.array(flat, type=pa.binary()) if flat.dtype.kind in "OS" else pa.array(flat)
    for size in reversed(array.shape[1:]):
        offsets = np.arange(0, len(values) + 1, size, dtype=np.int32) if size else np.zeros(
            array.shape[0] + 1, np.int32)
        values = pa.ListArray.from_arrays(pa.array(offsets), values)
    return values


def build_columns(ids: pa.Array, outputs: Mapping[str, np.ndarray], id_column: str) -> pa.Table:
    """The output table of one chunk: the ids, then each output as a column."""
    columns = {id_column: ids}
    for name, array in outputs.items():
        if name == id_column:
            raise InvalidArgumentError(
                f"the signature has an output named {name!r}, like the id column; choose another --id-column"
            )
        columns[name] = _to_arrow(np.asarray(array))
    return pa.table(columns)


def json_value(value: Any) -> Any:
    """A JSON-able form of an id or output value (bytes as UTF-8, else ``{"b64": ...}``)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _jsonl(ids: pa.Array, outputs: Mapping[str, np.ndarray], id_column: str) -> bytes:
    """JSON Lines of one chunk; numbers keep their shortest form (float32 0.1 stays 0.1)."""
    import orjson

    columns: list[tuple[str, Any]] = [(id_column, [json_value(v) for v in ids.to_pylist()])]
    for name, array in outputs.items():
        array = np.ascontiguousarray(array)
        columns.append((name, [json_value(v) for v in array.tolist()] if array.dtype.kind in "OSU" else array))
    option = orjson.OPT_SERIALIZE_NUMPY
    return b"".join(orjson.dumps({name: values[i] for name, values in columns}, option=option) + b"\n"
                    for i in range(len(ids)))


class OutputWriter:
    """Owns the output of one job: parts, manifest, errors file (see the module docstring).

    Construction checks what is on disk: a fresh job refuses an existing output (unless
    ``overwrite``, which removes it); ``resume`` loads the manifest, refuses other
    ``options`` (naming them), removes parts it does not name and cuts the errors file back.
    """

    def __init__(self, layout: OutputLayout, options: dict[str, Any], chunk_rows: int, *,
                 resume: bool, overwrite: bool) -> None:
        self.layout = layout
        self.already_complete = False
        self.id_column = str(options.get("id_column", "id"))
        previous = self.existing_manifest(layout)
        if overwrite:
            self._remove_output()
            previous = None
        elif resume and previous is not None:
            diff = previous.differences(options)
            if diff:
                raise FailedPreconditionError(
                    f"cannot resume {layout.output}: the job there was started with other options ("
                    + "; ".join(diff) + "). Rerun with the same options, or pass --overwrite to start over"
                )
        elif resume and layout.single_file and layout.output.exists():
            self.already_complete = True
        elif not resume:
            self._refuse_existing(previous)
        if previous is None and not self.already_complete:
            if resume:
                _log.info("Nothing to resume at %s; starting from the first row", layout.output)
            layout.work_dir.mkdir(parents=True, exist_ok=True)
            previous = Manifest(options, chunk_rows)
            if layout.errors_path.exists():
                layout.errors_path.unlink()
            previous.save(layout.manifest_path)
        self.manifest = previous or Manifest(options, chunk_rows, complete=True)
        if previous is not None and not previous.complete:
            self._clean_leftovers()
        self._schema: pa.Schema | None = None
        self._final: Any = None  # the output file being built (file outputs): a ParquetWriter or a file
        self._chunks_before = [c for c in self.manifest.chunks if c.file]  # parts earlier runs completed
        if self.manifest.schema:
            self._schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.manifest.schema)))

    @staticmethod
    def existing_manifest(layout: OutputLayout) -> Manifest | None:
        return Manifest.load(layout.manifest_path) if layout.manifest_path.is_file() else None

    def _refuse_existing(self, previous: Manifest | None) -> None:
        out = self.layout.output
        if previous is not None and not previous.complete:
            raise FailedPreconditionError(
                f"an unfinished job ({len(previous.chunks)} chunks, {previous.rows_done:,} rows done) is in the way "
                f"at {self.layout.work_dir}: pass --resume to continue it, or --overwrite to start over"
            )
        if self.layout.single_file and out.exists() or not self.layout.single_file and out.is_dir() and any(
                out.iterdir()):
            raise AlreadyExistsError(f"output {out} already exists; pass --overwrite to replace it")

    def _remove_output(self) -> None:
        layout = self.layout
        if layout.single_file:
            shutil.rmtree(layout.work_dir, ignore_errors=True)
            if layout.output.is_dir():
                raise InvalidArgumentError(f"output {layout.output} is a folder; give a file name")
            layout.output.unlink(missing_ok=True)
        elif layout.output.is_dir():
            ours = [p for p in layout.output.iterdir() if p.name.startswith(("part-", ".part-", "_manifest",
                                                                              "._manifest"))]
            others = [p.name for p in layout.output.iterdir() if p not in ours]
            if others:
                raise FailedPreconditionError(
                    f"--overwrite: output folder {layout.output} holds files a batch job did not write "
                    f"({', '.join(sorted(others)[:5])}); remove them or choose another output"
                )
            for path in ours:
                path.unlink()
        layout.errors_path.unlink(missing_ok=True)

    def _clean_leftovers(self) -> None:
        named = {c.file for c in self.manifest.chunks if c.file}
        for path in self.layout.work_dir.iterdir():
            is_part = path.name.startswith("part-") or path.name.startswith(".part-")
            if is_part and path.name not in named:
                path.unlink()
        errors = self.layout.errors_path
        if errors.exists() and errors.stat().st_size > self.manifest.errors_bytes:
            with open(errors, "r+b") as file:
                file.truncate(self.manifest.errors_bytes)

    @property
    def start_row(self) -> int:
        return self.manifest.rows_done

    @property
    def next_index(self) -> int:
        return len(self.manifest.chunks)

    def write_chunk(self, start: int, end: int, ids: pa.Array, outputs: Mapping[str, np.ndarray],
                    errors: list[bytes]) -> None:
        """Commit chunk ``next_index`` (rows ``[start, end)``; ``ids`` and ``outputs`` hold its good
        rows, ``errors`` its errors-file lines): part, errors, then the manifest."""
        index = self.next_index
        name = None
        rows = len(ids)
        if rows:
            name = self.layout.part_name(index)
            path = self.layout.work_dir / name
            if self.layout.format == "jsonl":
                data = _jsonl(ids, outputs, self.id_column)
                write_atomically(path, data)
                self._append_final(data)
            else:
                table = self._conform(build_columns(ids, outputs, self.id_column))
                self._write_part(path, table)
                self._append_final(table)
        if errors:
            with open(self.layout.errors_path, "ab") as file:
                file.write(b"".join(errors))
                file.flush()
                os.fsync(file.fileno())
                self.manifest.errors_bytes = file.tell()
        self.manifest.chunks.append(ChunkRecord(index, start, end, rows, len(errors), name))
        self.manifest.save(self.layout.manifest_path)

    def _conform(self, table: pa.Table) -> pa.Table:
        """``table`` with the schema of the job's first part (recorded in the manifest)."""
        if self._schema is None:
            self._schema = table.schema
            self.manifest.schema = base64.b64encode(table.schema.serialize().to_pybytes()).decode("ascii")
            return table
        if table.schema == self._schema:
            return table
        try:
            return table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise FailedPreconditionError(
                f"chunk {self.next_index} has columns {table.schema} but earlier parts have {self._schema}: {exc}"
            ) from exc

    def _write_part(self, path: Path, table: pa.Table) -> None:
        """A Parquet part (folder output) or an Arrow IPC part (staging of a file output), atomically."""
        temp = path.with_name(f".{path.name}.tmp")
        if self.layout.single_file:
            with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as ipc:
                ipc.write_table(table)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, temp, **PARQUET_OPTIONS)
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temp, path)

    # -- the single output file, built as chunks arrive ---------------------------------
    @property
    def _final_temp(self) -> Path:
        return self.layout.output.with_name(f".{self.layout.output.name}.tmp")

    def _append_final(self, data: pa.Table | bytes) -> None:
        """Append a chunk to the output file being built (file outputs); the first call of a
        run first copies in the chunks earlier runs completed, from their parts."""
        if not self.layout.single_file:
            return
        if self._final is None:
            self._open_final(self._schema)
        if isinstance(data, bytes):
            self._final.write(data)
        else:
            self._final.write_table(data)

    def _open_final(self, schema: pa.Schema | None) -> None:
        if self.layout.format == "jsonl":
            self._final = open(self._final_temp, "wb")
        else:
            import pyarrow.parquet as pq

            self._final = pq.ParquetWriter(self._final_temp, schema, **PARQUET_OPTIONS)
        for chunk in self._chunks_before:
            part = self.layout.work_dir / chunk.file
            if self.layout.format == "jsonl":
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, self._final, 1 << 20)
            else:
                with pa.memory_map(str(part)) as source:
                    self._final.write_table(self._conform(pa.ipc.open_file(source).read_all()))

    def finish(self, empty_schema: pa.Schema) -> None:
        """Mark the job complete; for a file output, complete the file and put it in place."""
        if self.already_complete:
            return
        parts = [c for c in self.manifest.chunks if c.file]
        if not parts and not self.layout.single_file and self.layout.format == "parquet":
            self._write_part(self.layout.work_dir / self.layout.part_name(0), empty_schema.empty_table())
        self.manifest.complete = True
        self.manifest.save(self.layout.manifest_path)
        if self.layout.single_file:
            if self._final is None:
                self._open_final(self._schema or empty_schema)
            if not parts and self.layout.format == "parquet":
                self._final.write_table(empty_schema.empty_table())
            final, self._final = self._final, None
            final.close()
            os.replace(self._final_temp, self.layout.output)
            shutil.rmtree(self.layout.work_dir, ignore_errors=True)
        if self.manifest.errors_bytes == 0:
            self.layout.errors_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the output file being built when the job stops before ``finish`` (it is
        rebuilt from the parts by the run that resumes). Idempotent."""
        final, self._final = self._final, None
        if final is not None:
            final.close()
            self._final_temp.unlink(missing_ok=True)
