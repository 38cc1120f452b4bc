"""Input files streamed as blocks of rows: Parquet, CSV, JSON Lines, NumPy ``.npy``, TFRecord.

:func:`open_reader` picks the reader from ``--input-format`` or the file name
(``.parquet``/``.pq`` or a folder of them, ``.csv``, ``.jsonl``/``.ndjson``/``.json``,
``.npy``, ``.tfrecord``/``.tfrecords``/``.tfr``; CSV and JSON Lines may be compressed:
``.gz``, ``.bz2``, ``.zst``...). :meth:`Reader.blocks` yields :class:`Block`\\ s in input
order starting at a given row, so memory stays flat in the dataset's size: one block (a
few MiB, or ``block_rows`` rows) at a time.

Row numbers count every row the reader yields, bad ones included; a resumed job skips the
rows before its start row (Parquet by row-group metadata, ``.npy`` by index, the others by
reading past them).

Per format
    * Parquet: ``ParquetFile.iter_batches`` over the wanted columns only; a folder is read
      file after file in name order (hidden and ``_`` files skipped).
    * CSV: ``pyarrow.csv.open_csv``, one thread (so malformed lines are known by number);
      wanted input columns are read as text and converted per row (see
      :mod:`~pyserving.batch.columns`), so a bad cell spoils one row, not the file. A line
      with the wrong number of fields is skipped and reported (``line``, no row number).
    * JSON Lines: blocks of lines parsed by ``pyarrow.json``; a block that fails is parsed line
      by line, and a line that is not a JSON object becomes a bad row. Blank lines are skipped.
    * ``.npy``: ``np.load(mmap_mode="r")``; one column, named after the signature's only
      input (or ``--columns``). Object arrays are refused (they would need pickle).
    * TFRecord of ``tf.Example``: ``tf.data.TFRecordDataset``; one column (the records) as
      above; each record is parsed once to check it is a ``tf.Example`` (else a bad row) and
      to carry its ``--id-column`` feature through when the first record has one.

Threading: a reader is used by one thread at a time. Failures: a file that cannot be opened
or read raises ``ServingError`` (NOT_FOUND, INVALID_ARGUMENT, DATA_LOSS for a corrupt file).
"""

from __future__ import annotations

import abc
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from pyserving.batch.options import INPUT_FORMATS
from pyserving.servable.errors import DataLossError, InvalidArgumentError, NotFoundError, as_serving_error

__all__ = ["Block", "Reader", "detect_input_format", "open_reader"]

_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "jsonl", ".npy": "npy", ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfr": "tfrecord",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4", ".br")
BLOCK_BYTES = 4 << 20


@dataclass
class Block:
    """Rows ``[start, start + num_rows)``: ``columns`` maps a column name to a pyarrow Array,
    numpy array or list; ``reasons`` marks rows the reader already knows are bad (offset ->
    why); ``stray`` are problems that are no row (a malformed CSV line: ``{"line", "reason"}``)."""

    start: int
    num_rows: int
    columns: dict[str, Any]
    reasons: dict[int, str] = field(default_factory=dict)
    stray: list[dict[str, Any]] = field(default_factory=list)


def detect_input_format(path: str) -> str:
    """The format of ``path`` by its name (a folder: Parquet); INVALID_ARGUMENT when unknown."""
    if os.path.isdir(path):
        return "parquet"
    name = path.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    fmt = _EXTENSIONS.get(os.path.splitext(name)[1])
    if fmt is None:
        raise InvalidArgumentError(
            f"cannot tell the format of input {path} from its name; pass --input-format, one of {INPUT_FORMATS}"
        )
    return fmt


class Reader(abc.ABC):
    """One input; :attr:`columns` is None where unknown before reading (JSON Lines)."""

    format: str = ""
    columns: list[str] | None = None
    total_rows: int | None = None

    def __init__(self, path: str, block_rows: int) -> None:
        self.path = path
        self.block_rows = block_rows

    @abc.abstractmethod
    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        """Blocks from row ``start_row`` on, with the ``wanted`` columns the input has."""


class ParquetReader(Reader):
    format = "parquet"

    def __init__(self, path: str, block_rows: int) -> None:
        super().__init__(path, block_rows)
        import pyarrow.parquet as pq

        self._pq = pq
        if os.path.isdir(path):
            self.files = sorted(str(p) for p in Path(path).rglob("*") if p.is_file() and not any(
                part.startswith((".", "_")) for part in p.relative_to(path).parts))
        else:
            self.files = [path]
        metadata = [pq.read_metadata(f) for f in self.files]
        self.columns = list(pq.read_schema(self.files[0]).names) if self.files else []
        self._row_groups = [[m.row_group(i).num_rows for i in range(m.num_row_groups)] for m in metadata]
        self.total_rows = sum(m.num_rows for m in metadata)

    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        row = 0
        for file, groups in zip(self.files, self._row_groups):
            if row + sum(groups) <= start_row:
                row += sum(groups)
                continue
            first = 0
            while row + groups[first] <= start_row:
                row += groups[first]
                first += 1
            parquet = self._pq.ParquetFile(file, memory_map=True)
            present = [c for c in wanted if c in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=self.block_rows, row_groups=range(first, len(groups)),
                                              columns=present, use_threads=False):
                if row + batch.num_rows <= start_row:
                    row += batch.num_rows
                    continue
                if row < start_row:
                    batch, row = batch.slice(start_row - row), start_row
                yield Block(row, batch.num_rows, {c: batch.column(c) for c in present})
                row += batch.num_rows


class CsvReader(Reader):
    format = "csv"

    def __init__(self, path: str, block_rows: int, text_columns: Sequence[str] = ()) -> None:
        super().__init__(path, block_rows)
        import pyarrow.csv as csv

        self._csv = csv
        self._text_columns = list(text_columns)
        self._delimiter = "\t" if ".tsv" in path.lower() else ","
        try:
            with csv.open_csv(path, read_options=csv.ReadOptions(block_size=1 << 16),
                              parse_options=csv.ParseOptions(delimiter=self._delimiter,
                                                             invalid_row_handler=lambda _row: "skip")) as probe:
                self.columns = list(probe.schema.names)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" not in str(exc):
                raise InvalidArgumentError(f"cannot read CSV input {path}: {exc}") from exc
            self.columns = []

    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        if not self.columns:
            return
        csv = self._csv
        stray: list[dict[str, Any]] = []

        def malformed(row: Any) -> str:
            stray.append({"line": row.number, "reason": f"CSV line has {row.actual_columns} fields, the header "
                          f"{row.expected_columns}: {row.text[:80]!r}"})
            return "skip"

        present = [c for c in wanted if c in self.columns]
        text = {c: pa.string() for c in self._text_columns if c in present}
        reader = csv.open_csv(
            self.path,
            read_options=csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            parse_options=csv.ParseOptions(delimiter=self._delimiter, invalid_row_handler=malformed),
            convert_options=csv.ConvertOptions(include_columns=present, column_types=text),
        )
        row = 0
        with reader:
            for batch in _arrow_batches(reader, self.path):
                lost, stray[:] = list(stray), []
                if row + batch.num_rows <= start_row:
                    row += batch.num_rows
                    continue
                if row < start_row:  # its malformed lines went with an earlier, completed chunk
                    batch, row, lost = batch.slice(start_row - row), start_row, []
                for offset in range(0, batch.num_rows, self.block_rows):
                    part = batch.slice(offset, self.block_rows)
                    yield Block(row, part.num_rows, {c: part.column(c) for c in present}, stray=lost)
                    lost = []
                    row += part.num_rows
        if stray:  # malformed lines after the last good one
            yield Block(row, 0, {}, stray=list(stray))


def _arrow_batches(reader: Any, path: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InvalidArgumentError(f"cannot read input {path}: {exc}") from exc
        if batch.num_rows:
            yield batch


class JsonLinesReader(Reader):
    format = "jsonl"

    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        row, pending = 0, b""
        with pa.input_stream(self.path, compression="detect") as stream:
            while True:
                data = stream.read(BLOCK_BYTES)
                buffer = pending + data
                if data:
                    cut = buffer.rfind(b"\n")
                    if cut < 0:
                        pending = buffer
                        continue
                    buffer, pending = buffer[: cut + 1], buffer[cut + 1:]
                lines = [line for line in buffer.split(b"\n") if line.strip()]
                if row + len(lines) <= start_row:
                    row += len(lines)
                elif lines:
                    if row < start_row:
                        lines, row = lines[start_row - row:], start_row
                    for offset in range(0, len(lines), self.block_rows):
                        part = lines[offset: offset + self.block_rows]
                        yield self._parse(row, part, wanted)
                        row += len(part)
                if not data:
                    return

    def _parse(self, start: int, lines: list[bytes], wanted: Sequence[str]) -> Block:
        import pyarrow.json as pj

        payload = b"\n".join(lines)
        try:
            table = pj.read_json(io.BytesIO(payload), read_options=pj.ReadOptions(
                use_threads=False, block_size=max(len(payload) + 1, 1 << 16)))
            if table.num_rows == len(lines):
                return Block(start, len(lines), {c: table.column(c) for c in wanted if c in table.column_names})
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
        objects: list[dict[str, Any]] = []
        reasons: dict[int, str] = {}
        for i, line in enumerate(lines):
            try:
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError(f"a JSON {type(value).__name__}, not an object")
            except ValueError as exc:
                reasons[i] = f"line is not a JSON object: {exc}"
                value = {}
            objects.append(value)
        seen = {key for obj in objects for key in obj}
        columns = {c: [obj.get(c) for obj in objects] for c in wanted if c in seen}
        return Block(start, len(lines), columns, reasons)


class NumpyReader(Reader):
    format = "npy"

    def __init__(self, path: str, block_rows: int, column: str) -> None:
        super().__init__(path, block_rows)
        try:
            self._array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot read .npy input {path} (object arrays are not supported): {exc}") from exc
        if self._array.ndim == 0:
            raise InvalidArgumentError(f".npy input {path} holds a scalar; it needs rows on its first dimension")
        self.column = column
        self.columns = [column]
        self.total_rows = int(self._array.shape[0])

    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        for row in range(start_row, self.total_rows or 0, self.block_rows):
            part = np.array(self._array[row: row + self.block_rows])  # copied out of the mapping
            yield Block(row, len(part), {self.column: part})


class TfRecordReader(Reader):
    format = "tfrecord"

    def __init__(self, path: str, block_rows: int, column: str, id_column: str) -> None:
        super().__init__(path, block_rows)
        self.column, self.id_column = column, id_column
        self.columns = [column]

    def blocks(self, start_row: int, wanted: Sequence[str]) -> Iterator[Block]:
        import tensorflow as tf
        from tensorflow.core.example import example_pb2

        compression = "GZIP" if self.path.endswith(".gz") else ("ZLIB" if self.path.endswith(".zz") else "")
        dataset = tf.data.TFRecordDataset(self.path, compression_type=compression)
        row, with_ids = start_row, False
        try:  # the first record decides, for every run of the job, whether ids come from the records
            for first in dataset.take(1).as_numpy_iterator():
                with_ids = self.id_column in example_pb2.Example.FromString(first).features.feature
        except Exception:  # noqa: BLE001 - unreadable or not an Example: row numbers; the rows say why
            with_ids = False
        dataset = dataset.skip(start_row)
        iterator = iter(dataset.batch(self.block_rows).as_numpy_iterator())
        while True:
            try:
                records = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as exc:
                raise DataLossError(f"cannot read TFRecord input {self.path} after row {row}: {exc.message}") from exc
            reasons, ids = {}, []
            for i, record in enumerate(records):
                try:
                    example = example_pb2.Example.FromString(record)
                except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError; becomes the row's reason
                    reasons[i] = f"record is not a serialized tf.Example: {exc}"
                    ids.append(None)
                    continue
                ids.append(_feature_value(example, self.id_column) if with_ids else None)
            column = np.empty(len(records), dtype=object)
            column[:] = list(records)
            columns: dict[str, Any] = {self.column: column}
            if with_ids:
                columns[self.id_column] = ids
            yield Block(row, len(records), columns, reasons)
            row += len(records)


def _feature_value(example: Any, name: str) -> Any:
    feature = example.features.feature.get(name)
    if feature is None:
        return None
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def open_reader(path: str, fmt: str | None, *, block_rows: int, single_column: str | None,
                text_columns: Sequence[str] = (), id_column: str = "id") -> Reader:
    """The reader for ``path`` (``fmt`` None: from its name). ``single_column`` names the one
    column of ``.npy`` and TFRecord inputs; ``text_columns`` are CSV columns read as text."""
    if not os.path.exists(path):
        raise NotFoundError(f"input {path} does not exist")
    fmt = fmt or detect_input_format(path)
    try:
        if fmt == "parquet":
            return ParquetReader(path, block_rows)
        if fmt == "csv":
            return CsvReader(path, block_rows, text_columns)
        if fmt == "jsonl":
            return JsonLinesReader(path, block_rows)
        if fmt in ("npy", "tfrecord"):
            if single_column is None:
                raise InvalidArgumentError(
                    f"{fmt} input holds one column, but the signature has several inputs; use Parquet, CSV or "
                    "JSON Lines for those"
                )
            if fmt == "npy":
                return NumpyReader(path, block_rows, single_column)
            return TfRecordReader(path, block_rows, single_column, id_column)
    except OSError as exc:
        raise as_serving_error(exc, f"cannot open input {path}: ") from exc
    except pa.ArrowException as exc:
        raise InvalidArgumentError(f"cannot read {fmt} input {path}: {exc}") from exc
    raise InvalidArgumentError(f"input_format must be one of {INPUT_FORMATS}, got {fmt!r}")
