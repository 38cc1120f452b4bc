"""What a batch job is asked to do (:class:`BatchOptions`) and what it did (:class:`BatchSummary`).

Both are frozen dataclasses, validated at construction: a bad value raises
``InvalidArgumentError`` naming the field, the rule and the value. Nothing here reads a
file or imports pyarrow; :func:`pyserving.batch.run` does the work.

Errors raised by a batch job (all :class:`~pyserving.servable.errors.ServingError`)::

    ServingError
    ├── InvalidArgumentError
    │   └── BadRowError          --fail-fast met a bad row (row number, id, reason)
    ├── FailedPreconditionError  output exists / resume with other options / nothing to resume
    └── (any other code)         the model or the input failed as a whole
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pyserving.servable.errors import InvalidArgumentError

__all__ = [
    "BatchOptions",
    "BatchSummary",
    "BadRowError",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_ROWS",
    "parse_columns",
]

INPUT_FORMATS = ("parquet", "csv", "jsonl", "npy", "tfrecord")
OUTPUT_FORMATS = ("parquet", "jsonl")
#: Rows per model call when neither --batch-size nor the model says otherwise.
DEFAULT_BATCH_SIZE = 256
#: Rows per chunk (the unit written atomically and recorded in the manifest), at least one batch.
DEFAULT_CHUNK_ROWS = 8192


def parse_columns(text: str | Mapping[str, str] | None) -> str | dict[str, str] | None:
    """``--columns``: ``"x"`` (the column for a signature's only input) or
    ``"input=column,input2=column2"`` (a mapping); a mapping is returned as a dict."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        mapping = dict(text)
    else:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError(f"columns must be 'column' or 'input=column,...', got {text!r}")
        if "=" not in text:
            return text.strip()
        mapping = {}
        for part in text.split(","):
            name, eq, column = part.partition("=")
            if not eq or not name.strip() or not column.strip():
                raise InvalidArgumentError(
                    f"columns must be 'column' or 'input=column,...'; the part {part!r} of {text!r} is not "
                    "'input=column'"
                )
            if name.strip() in mapping:
                raise InvalidArgumentError(f"columns names input {name.strip()!r} twice in {text!r}")
            mapping[name.strip()] = column.strip()
    for name, column in mapping.items():
        if not isinstance(name, str) or not isinstance(column, str) or not name or not column:
            raise InvalidArgumentError(f"columns must map input names to column names, got {name!r}: {column!r}")
    return mapping


def _positive(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class BatchOptions:
    """One offline scoring job; see ``pyserving batch --help`` for the user-facing words.

    ``model_path``: a base path with numbered versions, or one model folder (SavedModel or
    ``model.py``); with ``server`` it is the model *name* on that server.
    ``batch_size``: rows per model call; None: the model's preferred size, else (a local
    model) the fastest of 256/512/1024/2048 rows measured at start, else 256.
    ``chunk_rows``: rows per output part and manifest entry; None: 8192 rounded up to a
    multiple of the batch size (a resumed job keeps the chunk size it started with).
    ``columns``: ``"col"`` or ``{"input": "col"}`` (also ``"input=col,..."``); None: by name.
    ``progress``: True/False forces the tqdm bar on/off; None: on when stderr is a terminal.
    ``model_config``: a ModelServerConfig text file whose ``version_labels`` give ``label``.
    ``extra``: runner-specific settings (the Ray runner reads ``ray_actors``,
    ``ray_cpus_per_actor``, ``ray_gpus_per_actor``); the local runner ignores it.
    """

    model_path: str
    input: str
    output: str
    signature: str | None = None
    version: int | None = None
    label: str | None = None
    batch_size: int | None = None
    chunk_rows: int | None = None
    columns: str | Mapping[str, str] | None = None
    id_column: str = "id"
    resume: bool = False
    overwrite: bool = False
    fail_fast: bool = False
    server: str | None = None
    ray: bool = False
    ray_address: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    model_config: str | None = None
    platform: str | None = None
    progress: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model_path", "input", "output"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
        if self.version is not None and (isinstance(self.version, bool) or not isinstance(self.version, int)
                                         or self.version < 0):
            raise InvalidArgumentError(f"version must be an int >= 0, got {self.version!r}")
        if self.version is not None and self.label is not None:
            raise InvalidArgumentError(
                f"give version or label, not both (got version {self.version} and label {self.label!r})"
            )
        _positive("batch_size", self.batch_size)
        _positive("chunk_rows", self.chunk_rows)
        if not isinstance(self.id_column, str) or not self.id_column:
            raise InvalidArgumentError(f"id_column must be a non-empty string, got {self.id_column!r}")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise InvalidArgumentError(f"input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.output_format is not None and self.output_format not in OUTPUT_FORMATS:
            raise InvalidArgumentError(
                f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}"
            )
        if self.resume and self.overwrite:
            raise InvalidArgumentError("give resume or overwrite, not both")
        if self.ray_address is not None and not self.ray:
            object.__setattr__(self, "ray", True)
        object.__setattr__(self, "columns", parse_columns(self.columns))


@dataclass(frozen=True)
class BatchSummary:
    """What a finished (or interrupted) job did.

    ``rows_read``: rows of the input seen by this run (rows skipped by ``resume`` excluded);
    ``rows_written`` / ``rows_failed``: rows scored and written / rows sent to the errors
    file by this run; ``rows_resumed``: rows an earlier run had completed; ``interrupted``:
    stopped by Ctrl-C after a completed chunk (``resume`` continues); ``errors_path``: None
    when no row failed in any run.
    """

    output: str
    errors_path: str | None
    model: str
    signature: str
    rows_read: int
    rows_written: int
    rows_failed: int
    rows_resumed: int
    chunks_written: int
    seconds: float
    interrupted: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for the user."""
        verb = "Interrupted after scoring" if self.interrupted else "Scored"
        text = (f"{verb} {self.rows_written:,} rows with {self.model} signature {self.signature} in "
                f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s) -> {self.output}")
        if self.rows_resumed:
            text += f" (continuing after {self.rows_resumed:,} rows done earlier)"
        if self.rows_failed:
            text += f"; {self.rows_failed:,} bad rows -> {self.errors_path}"
        return text


class BadRowError(InvalidArgumentError):
    """A bad row stopped a ``fail_fast`` job: ``row`` (0-based input row number), ``row_id``."""

    def __init__(self, row: int | None, row_id: Any, reason: str) -> None:
        where = f"row {row}" if row is not None else "a row"
        super().__init__(f"{where} (id {row_id!r}) is bad: {reason}")
        self.row = row
        self.row_id = row_id
        self.reason = reason
