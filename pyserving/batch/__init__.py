"""Offline batch inference: score a whole dataset with the models the server serves.

    from pyserving.batch import BatchOptions, run

    summary = run(BatchOptions("/models/mlp", input="data.parquet", output="scores.parquet"))
    print(summary.describe())

or, the same from a shell: ``pyserving batch /models/mlp --input data.parquet --output
scores.parquet``. :func:`run` loads the model through pyserving's loaders and version policy
(:func:`open_local_model`), or talks to a running server (``server=``), or hands the job to
Ray (``ray=True``); it reads the input in chunks, scores them at the model's batch size and
writes them with a manifest that ``resume=True`` continues from (see
:mod:`pyserving.batch.pipeline`, :mod:`~pyserving.batch.readers`,
:mod:`~pyserving.batch.writers`).

Needs pyarrow and tqdm (``pip install 'pyserving[batch]'``); ``import pyserving`` does not
import this package. The names below import without pyarrow; :func:`run` needs it.
"""

from __future__ import annotations

import time
from typing import Any

from pyserving.batch.model import BatchModel, LocalModel, open_local_model
from pyserving.batch.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_ROWS,
    BadRowError,
    BatchOptions,
    BatchSummary,
)
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError

__all__ = [
    "BatchOptions",
    "BatchSummary",
    "BatchModel",
    "BadRowError",
    "LocalModel",
    "run",
    "open_local_model",
    "open_model",
    "INSTALL_HINT",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CHUNK_ROWS",
]

INSTALL_HINT = "pip install 'pyserving[batch]'"


def require_pyarrow() -> None:
    """Raise FAILED_PRECONDITION naming the install command when pyarrow or tqdm is missing."""
    import importlib.util

    missing = [m for m in ("pyarrow", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise FailedPreconditionError(f"batch inference needs {' and '.join(missing)}: {INSTALL_HINT}")


def open_model(options: BatchOptions) -> BatchModel:
    """The model ``options`` name: remote with ``server``, else loaded here."""
    if options.server:
        try:
            from pyserving.batch.remote import open_remote_model
        except ImportError as exc:
            raise FailedPreconditionError(f"--server needs pyserving.batch.remote, which is not installed: {exc}") from exc
        return open_remote_model(options.server, options.model_path, signature=options.signature,
                                 version=options.version, label=options.label)
    return open_local_model(options.model_path, signature=options.signature, version=options.version,
                            label=options.label, platform=options.platform, model_config=options.model_config)


def run(options: BatchOptions | None = None, /, *, model: BatchModel | None = None, **fields: Any) -> BatchSummary:
    """Run one batch job: ``run(BatchOptions(...))`` or ``run(model_path=..., input=..., output=...)``.

    ``model``: score with this already open model instead of opening ``options.model_path``
    (it is not closed). Blocks until the job ends; Ctrl-C stops it after the chunk being
    scored (``summary.interrupted``). Raises ``ServingError``: a bad option, input or model,
    an output in the way (FAILED_PRECONDITION / ALREADY_EXISTS), :class:`BadRowError` with
    ``fail_fast``.
    """
    if options is None:
        options = BatchOptions(**fields)
    elif fields:
        raise InvalidArgumentError(f"give BatchOptions or fields, not both (got fields {sorted(fields)})")
    if options.ray:
        try:
            from pyserving.integrations.ray import run_on_ray
        except ImportError as exc:
            raise FailedPreconditionError(f"--ray needs pyserving.integrations.ray and ray "
                                          f"(pip install 'pyserving[ray]'): {exc}") from exc
        return run_on_ray(options, options.ray_address)
    require_pyarrow()
    from pyserving.batch.job import run_job

    started = time.monotonic()
    owned = model is None
    model = open_model(options) if model is None else model
    try:
        return run_job(options, model, started)
    finally:
        if owned:
            model.close()
