"""TF Serving's ``BatchingParameters``: :class:`BatchingParameters` and its text format.

The text format is TF Serving's (``--batching_parameters_file``, the per-model
``batching_params.pbtxt``), parsed with our copy of its message
(:mod:`pyserving.protos.batching_pb2`: same field names, numbers and wrapper types)::

    max_batch_size { value: 128 }
    batch_timeout_micros { value: 0 }
    max_enqueued_batches { value: 1000000 }
    num_batch_threads { value: 8 }
    allowed_batch_sizes: 32
    allowed_batch_sizes: 128
    pad_variable_length_inputs: true

A field the file leaves out takes TF Serving's default (the dataclass defaults below).
Errors are ``InvalidArgumentError`` naming the file and the rule ("Last entry in
allowed_batch_sizes must match max_batch_size; last entry was 64; expected 128"); a file
that cannot be read is NOT_FOUND / PERMISSION_DENIED. Pure functions, any thread; protobuf
is imported when a file is parsed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyserving.servable.batcher import QueueOptions
from pyserving.servable.errors import InvalidArgumentError, ServingError, as_serving_error

__all__ = [
    "BatchingParameters",
    "PER_MODEL_FILENAME",
    "parse_batching_parameters",
    "read_batching_parameters",
    "schedulable_cpus",
]

#: The per-model file TF Serving reads from a version directory with
#: ``--enable_per_model_batching_parameters``.
PER_MODEL_FILENAME = "batching_params.pbtxt"

_WRAPPED = (
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)


def schedulable_cpus() -> int:
    """CPUs this process may run on (TF Serving's default ``num_batch_threads``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class BatchingParameters:
    """Batching settings; defaults are TF Serving's (``shared_batch_scheduler.h``).

    Sizes are rows (dimension 0), times microseconds.

    * ``max_batch_size`` (1000): the largest request accepted ("Task size N is larger than
      maximum input batch size M" beyond it); also the largest batch unless splitting.
    * ``batch_timeout_micros`` (0): how long a batch may wait to fill while its model is busy.
    * ``max_enqueued_batches`` (10): queue bound per queue, in batches.
    * ``num_batch_threads`` (schedulable CPUs): threads running batches, shared by all models.
    * ``thread_pool_name`` ("batch_threads"): names those threads.
    * ``allowed_batch_sizes`` (none): batches are padded up to the next one; increasing,
      the last equal to ``max_batch_size``.
    * ``pad_variable_length_inputs`` (false): pad non-batch dimensions to the batch's largest.
    * ``enable_large_batch_splitting`` (false): split requests across batches.
    * ``max_execution_batch_size`` (None = ``max_batch_size``): rows per batch when splitting.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=schedulable_cpus)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        threads = self.num_batch_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidArgumentError(f"num_batch_threads must be an int >= 1, got {threads!r}")
        if not isinstance(self.thread_pool_name, str) or not self.thread_pool_name:
            raise InvalidArgumentError(f"thread_pool_name must be a non-empty string, got {self.thread_pool_name!r}")
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        self.queue_options()  # validates the queue fields with TF Serving's rules

    def queue_options(self) -> QueueOptions:
        """The per-queue part of these parameters."""
        return QueueOptions(
            max_batch_size=self.max_batch_size,
            batch_timeout_micros=self.batch_timeout_micros,
            max_enqueued_batches=self.max_enqueued_batches,
            allowed_batch_sizes=self.allowed_batch_sizes,
            enable_large_batch_splitting=self.enable_large_batch_splitting,
            max_execution_batch_size=self.max_execution_batch_size,
        )

    def describe(self) -> str:
        """One line for logs."""
        o = self.queue_options()
        text = (
            f"max_batch_size={self.max_batch_size} batch_timeout_micros={self.batch_timeout_micros} "
            f"max_enqueued_batches={self.max_enqueued_batches}"
        )
        if self.allowed_batch_sizes:
            text += f" allowed_batch_sizes={list(self.allowed_batch_sizes)}"
        if self.pad_variable_length_inputs:
            text += " pad_variable_length_inputs=true"
        if self.enable_large_batch_splitting:
            text += f" enable_large_batch_splitting=true max_execution_batch_size={o.execution_limit}"
        return text


def _from_message(message: Any, source: str) -> BatchingParameters:
    kwargs: dict[str, Any] = {name: getattr(message, name).value for name in _WRAPPED if message.HasField(name)}
    if message.allowed_batch_sizes:
        kwargs["allowed_batch_sizes"] = tuple(message.allowed_batch_sizes)
    if message.pad_variable_length_inputs:
        kwargs["pad_variable_length_inputs"] = True
    try:
        return BatchingParameters(**kwargs)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"Invalid batching parameters in {source}: {exc.message}") from exc


def parse_batching_parameters(text: str, source: str = "<text>") -> BatchingParameters:
    """Parse a text ``BatchingParameters``; ``source`` names it in error messages."""
    from google.protobuf import text_format

    from pyserving.protos import batching_pb2

    message = batching_pb2.BatchingParameters()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise InvalidArgumentError(f"Cannot parse batching parameters in {source}: {exc}") from exc
    return _from_message(message, source)


def read_batching_parameters(path: str | os.PathLike[str]) -> BatchingParameters:
    """Read and parse the text ``BatchingParameters`` file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error: ServingError = as_serving_error(exc, f"Cannot read batching parameters file {os.fspath(path)}: ")
        raise error from exc
    return parse_batching_parameters(text, os.fspath(path))
