"""Ray Data integration: score datasets with pyserving's models on a Ray cluster.

Two entry points (``pip install 'pyserving[ray]'``; importing this module imports ray only
inside :func:`run_on_ray`, so :class:`Predictor` also works without Ray)::

    import ray
    from pyserving.integrations.ray import Predictor

    ds = ray.data.read_parquet("s3://bucket/features/")
    scored = ds.map_batches(Predictor, fn_constructor_kwargs={"model_path": "/models/mlp"},
                            batch_size=256, batch_format="pyarrow", concurrency=4)

* :class:`Predictor` — a callable class for ``Dataset.map_batches``. Each actor loads the
  model once, in ``__init__``, through :func:`pyserving.batch.open_local_model` (the
  platform registry, the version scan and policy the server uses), so ``model_path`` must be
  readable on every node. Each call converts the mapped columns with the local pipeline's
  rules (:mod:`pyserving.batch.columns`), makes ONE model call for the batch (the
  ``batch_size`` of ``map_batches`` is the rows per call) and returns the batch in the format
  it came in (pyarrow Table, dict of numpy arrays or pandas DataFrame) with one column per
  output added. Bad rows raise ``InvalidArgumentError`` (naming the id and the reason), which
  fails the Ray task; with ``error_column`` they stay in the batch instead, with zeros as
  outputs (empty bytes for strings) and their reason in that column (``""`` for good rows).
* :func:`run_on_ray` — what ``pyserving.batch.run(ray=True)`` / ``pyserving batch --ray
  [--ray-address ADDR]`` runs: the same job as the local pipeline, with reading and scoring
  spread over Ray actors and the output written by the driver with the local job's writer
  (:class:`~pyserving.batch.writers.OutputWriter`): the same files, chunks, manifest,
  errors file, ids (the ``--id-column`` carried through, else row numbers) and row order
  (``preserve_order`` is switched on for the job). Only the ids and outputs travel back to
  the driver, so the output — not the input — passes through one machine.

Under Ray (differences from the local job)
    * ``resume`` continues after the last chunk the manifest records without duplicating or
      losing rows, but Ray Data cannot start mid-dataset: the rows done earlier are read and
      scored again, then dropped by the driver.
    * Bad rows go to the errors file as locally; rows the Ray readers themselves reject (a
      malformed CSV line or JSON Lines record) fail the job instead: Ray's readers are
      all-or-nothing per file.
    * Inputs are read by Ray's readers (``read_parquet`` / ``read_csv`` / ``read_json`` /
      ``read_numpy``; TFRecord by a small reader of raw records, the id feature taken when the
      first record of each file has it). Paths must be visible to every node (a shared
      folder, or ``s3://`` / ``gs://`` URLs); the output is written where the driver runs.
    * ``BatchOptions.extra`` tunes the actors: ``ray_actors`` (default: the cluster's CPUs
      but one, divided by ``ray_cpus_per_actor``, default 1), ``ray_gpus_per_actor`` (default
      0). Leave Ray Data a CPU for its read tasks: actors holding every CPU starve them and
      the job waits forever.

Threading: a Predictor is called by one thread at a time (Ray's actor contract); it is not
thread-safe itself. Failures: every error :func:`run_on_ray` raises is a ``ServingError``;
errors raised inside Ray workers are unwrapped to the ``ServingError`` they carry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from pyserving.batch.options import BatchOptions, BatchSummary, parse_columns
from pyserving.servable.errors import (
    Code,
    InternalError,
    InvalidArgumentError,
    ServingError,
)
from pyserving.servable.signature import TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["Predictor", "run_on_ray", "ERROR_COLUMN", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'pyserving[ray]'"
#: The column :func:`run_on_ray` asks its predictors to put bad rows' reasons in.
ERROR_COLUMN = "__pyserving_error__"


def _format_of(batch: Any) -> str:
    module = type(batch).__module__.split(".")[0]
    if module == "pyarrow" and hasattr(batch, "schema"):
        return "pyarrow"
    if module == "pandas" and hasattr(batch, "columns"):
        return "pandas"
    if isinstance(batch, Mapping):
        return "numpy"
    raise InvalidArgumentError(
        f"Predictor takes a pyarrow Table, a dict of numpy arrays or a pandas DataFrame, got {type(batch).__name__}"
    )


def _stack(values: np.ndarray) -> Any:
    """An object array of per-row arrays as one array; anything else as a list (row by row)."""
    if len(values) and all(isinstance(v, (np.ndarray, list)) for v in values):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:  # ragged: row-by-row conversion reports which rows
            pass
    return list(values)


def _column(batch: Any, fmt: str, name: str) -> Any:
    """One column as to_tensors takes it: a pyarrow Array, a numpy array or a list."""
    if fmt == "pyarrow":
        import pyarrow as pa

        column = batch.column(name).combine_chunks()
        if isinstance(column.type, pa.ExtensionType):  # Ray's tensor columns
            return np.asarray(column.to_numpy(zero_copy_only=False))
        return column
    values = batch[name].to_numpy() if fmt == "pandas" else np.asarray(batch[name])
    return _stack(values) if values.dtype.kind == "O" else values


def _blank(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """What a bad row's output holds: zeros, or empty bytes for strings."""
    return np.full(shape, b"", dtype=object) if dtype.kind == "O" else np.zeros(shape, dtype=dtype)


def _filled(spec: TensorSpec | None, rows: int) -> np.ndarray:
    """The blank output when no row produced one (every row of the batch was bad)."""
    shape = tuple(d if d is not None and d >= 0 else 0 for d in (spec.shape or (None,))[1:]) if spec else ()
    try:
        dtype = np.dtype(spec.dtype.numpy_name) if spec else np.dtype(np.float32)
    except TypeError:
        dtype = np.dtype(np.float32)
    return _blank((rows, *shape), dtype)


def _to_arrow(array: np.ndarray) -> pa.Array:
    """A numpy output as an Arrow column: fixed-size lists for each dimension after the first."""
    import pyarrow as pa

    flat = array.reshape(-1)
    values = pa.array(flat, type=pa.binary()) if flat.dtype.kind in "OS" else pa.array(flat)
    for size in reversed(array.shape[1:]):
        values = pa.FixedSizeListArray.from_arrays(values, size)
    return values


class Predictor:
    """Scores batches for ``ray.data.Dataset.map_batches`` (see the module docstring).

    ``model_path``, ``signature``, ``version``, ``label``, ``platform``, ``model_config``: as
    for :func:`pyserving.batch.open_local_model`. ``columns``: ``"col"`` or ``{"input":
    "col"}`` (the ``--columns`` rules); classify/regress signatures read serialized
    ``tf.Example`` from the column ``inputs`` unless ``columns`` names another.
    ``id_column``: named in bad-row errors when the batch has it. ``keep_columns``: the input
    columns to return (None: all). ``error_column``: see the module docstring.
    """

    def __init__(self, model_path: str, *, signature: str | None = None, version: int | None = None,
                 label: str | None = None, columns: str | Mapping[str, str] | None = None,
                 id_column: str = "id", platform: str | None = None, model_config: str | None = None,
                 keep_columns: Sequence[str] | None = None, error_column: str | None = None) -> None:
        from pyserving.batch.columns import EXAMPLES_INPUT, example_spec, resolve_columns, uses_examples
        from pyserving.batch.model import open_local_model

        self.model = open_local_model(model_path, signature=signature, version=version, label=label,
                                      platform=platform, model_config=model_config)
        try:
            self.mapping = resolve_columns(self.model.signature, self.model.method, parse_columns(columns))
        except BaseException:
            self.model.close()
            raise
        self.examples = uses_examples(self.model.method)
        self.specs = {EXAMPLES_INPUT: example_spec()} if self.examples else dict(self.model.signature.inputs)
        self.id_column = id_column
        self.keep_columns = None if keep_columns is None else list(keep_columns)
        self.error_column = error_column

    def __call__(self, batch: Any) -> Any:
        from pyserving.batch.columns import to_tensors

        fmt = _format_of(batch)
        names = list(batch.column_names if fmt == "pyarrow" else batch.keys() if fmt == "numpy" else batch.columns)
        missing = [c for c in self.mapping.values() if c not in names]
        if missing:
            raise InvalidArgumentError(
                f"the batch has no column {', '.join(map(repr, missing))} for the signature's inputs "
                f"({', '.join(f'{i} <- {c}' for i, c in self.mapping.items())}); its columns: {', '.join(names)}"
            )
        rows = batch.num_rows if fmt == "pyarrow" else len(batch) if fmt == "pandas" else (
            len(next(iter(batch.values()))) if batch else 0)
        columns = {c: _column(batch, fmt, c) for c in set(self.mapping.values())}
        tensors = to_tensors(columns, self.mapping, self.specs, rows)
        reasons = dict(tensors.reasons)
        good = np.flatnonzero(tensors.good)
        produced, ok, failures = self._score(tensors.arrays, good)
        reasons.update(failures)
        if reasons and self.error_column is None:
            row = min(reasons)
            raise InvalidArgumentError(f"row {row} of the batch{self._id_text(batch, fmt, names, row)} is bad: "
                                       f"{reasons[row]}")
        outputs: dict[str, np.ndarray] = {}
        names_out = list(produced) or list(self.model.signature.outputs)
        for name in names_out:
            if name in names and (self.keep_columns is None or name in self.keep_columns):
                raise InvalidArgumentError(f"the model's output {name!r} would replace the input column of that "
                                           "name; rename the column")
            value = produced.get(name)
            if value is not None and len(value) == rows:  # no bad row: the model's array as it is
                outputs[name] = value
                continue
            full = _filled(self.model.signature.outputs.get(name), rows) if value is None else _blank(
                (rows, *value.shape[1:]), value.dtype)
            if value is not None:
                full[good[ok]] = value
            outputs[name] = full
        if self.error_column is not None:
            errors = np.array([reasons.get(i, "") for i in range(rows)], dtype=object)
            outputs[self.error_column] = errors
        return self._attach(batch, fmt, names, outputs)

    def _id_text(self, batch: Any, fmt: str, names: list[str], row: int) -> str:
        if self.id_column not in names:
            return ""
        value = batch.column(self.id_column)[row].as_py() if fmt == "pyarrow" else batch[self.id_column][row]
        return f" (id {value!r})"

    def _score(self, inputs: Mapping[str, np.ndarray], rows: np.ndarray
               ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
        """(outputs of the rows that succeeded, their mask over ``rows``, {batch row: reason}).

        A failed call is retried row by row; rows that fail alone are bad. When every row
        fails alone with an error other than INVALID_ARGUMENT, the model is broken: raise.
        """
        from pyserving.batch.columns import EXAMPLES_INPUT
        from pyserving.batch.model import row_failure, score_isolating_rows

        n = len(rows)
        if n == 0:
            return {}, np.zeros(0, bool), {}
        scores = score_isolating_rows(self.model, inputs, n, EXAMPLES_INPUT if self.examples else None,
                                      fatal=InternalError)
        codes = [e.code for e in scores.row_errors.values()]
        if not scores.ok.any() and any(c != Code.INVALID_ARGUMENT for c in codes or [scores.first_error.code]):
            first = scores.first_error
            raise ServingError.from_code(first.code, f"{self.model.description} failed on every row of a batch "
                                         f"of {n}: {first.message}") from scores.batch_error
        return scores.outputs, scores.ok, {int(rows[i]): row_failure(e) for i, e in scores.row_errors.items()}

    def _attach(self, batch: Any, fmt: str, names: list[str], outputs: dict[str, np.ndarray]) -> Any:
        keep = names if self.keep_columns is None else [c for c in names if c in self.keep_columns]
        if fmt == "pyarrow":
            import pyarrow as pa

            table = batch.select(keep)
            for name, value in outputs.items():
                column = pa.array(list(value), pa.string()) if name == self.error_column else _to_arrow(value)
                table = table.append_column(name, column)
            return table
        if fmt == "numpy":
            return {**{c: batch[c] for c in keep}, **outputs}
        frame = batch[keep]
        return frame.assign(**{n: (list(v) if v.ndim > 1 else v) for n, v in outputs.items()})

    def close(self) -> None:
        """Unload the model (idempotent); the Predictor cannot score afterwards."""
        self.model.close()


def run_on_ray(options: BatchOptions, address: str | None = None) -> BatchSummary:
    """Run ``options`` as a Ray job (see the module docstring and
    :mod:`pyserving.integrations._ray_job`); blocks until it ends."""
    from pyserving.integrations._ray_job import run_on_ray as run

    return run(options, address)
