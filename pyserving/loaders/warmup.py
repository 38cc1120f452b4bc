"""SavedModel warmup: replaying logged requests while a version loads (TF Serving's model warmup).

A version directory may hold ``assets.extra/tf_serving_warmup_requests``: a TFRecord file of
``tensorflow.serving.PredictionLog`` protos. :func:`run_warmup` reads it and replays every
record against the freshly loaded servable, each ``num_request_iterations`` times, so the
first real request after a swap does not pay for TensorFlow's lazy initialisation (kernel
set-up, memory pools, the servable's compiled callables). The loaders call it inside
``load()``: the version becomes AVAILABLE only after its warmup succeeded, and any warmup
error fails the load (the manager then keeps serving the previous version).

Records (only ``request`` is used; the logged ``model_spec`` name and version are ignored,
its ``signature_name`` is honoured, empty meaning ``serving_default``):

* ``predict_log``: ``servable.run(signature, inputs, output_filter)``, inputs converted with
  ``tf.make_ndarray``;
* ``classify_log`` / ``regress_log``: ``servable.classify`` / ``servable.regress`` on the
  request's serialized ``tf.Example`` s (context + example for ``example_list_with_context``,
  exactly as the gRPC server builds them);
* ``multi_inference_log``: each task in order (classify or regress), on the same examples;
* anything else (``predict_streamed_log``, ``session_run_log``, no log type) fails with
  UNIMPLEMENTED ``Unsupported log_type for warmup: <field name>``.

Failures (TF Serving's codes and messages):

* no file: INFO ``No warmup data file found at <path>``; not an error, nothing is replayed;
* more than :data:`MAX_WARMUP_RECORDS` records: INVALID_ARGUMENT ``Number of warmup records
  exceeds the maximum (1000) at <path>``;
* a record that is not a ``PredictionLog``: INVALID_ARGUMENT ``Failed to parse warmup record:
  ...``; a file that is not a TFRecord file (bad length or checksum, truncated): DATA_LOSS
  ``<reader message>. Please verify your warmup data is in TFRecord format.``;
* a replayed request that fails: its own code, its message prefixed with the record's number
  and the file (``Warmup request 2 of 5 (predict_log) in <path> failed: ...``).

Differences from TF Serving: the whole file is read and parsed before the first replay (TF
Serving replays while it reads), so a bad record or a 1001st record fails the load without
running the model; warmup runs on the load thread alone (``num_model_warmup_threads`` = 1) and
``enable_all_batch_sizes_warmup`` does not exist.

Metrics: after every warmup that found a file, the observer set with
:func:`set_warmup_observer` is called once as ``observer(model_path, status, latency_s,
records)``: the version directory, ``"OK"`` or the failure's canonical code name, the seconds
from opening the file to the last replay, and the records read. The server wires it to
``:tensorflow:serving:model_warmup_latency`` / ``model_warmup_records_read``. An observer's
exception is logged and ignored.

Threading: :func:`run_warmup` blocks the calling (load) thread for the whole replay; the
servable must be safe to call from it (every ``InferenceServable`` is). Loads of different
versions may warm up at once. The observer may be called from several load threads at once;
:func:`set_warmup_observer` may be called from any thread. TensorFlow is imported only when
a warmup file exists (it is loaded already whenever a SavedModel is).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pyserving.servable.errors import (
    Code,
    DataLossError,
    InvalidArgumentError,
    ServingError,
    UnimplementedError,
    as_serving_error,
)
from pyserving.servable.signature import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD

__all__ = [
    "WARMUP_DIRECTORY",
    "WARMUP_FILENAME",
    "MAX_WARMUP_RECORDS",
    "WarmupOptions",
    "WarmupResult",
    "WarmupObserver",
    "warmup_path",
    "set_warmup_observer",
    "read_warmup_records",
    "replay_record",
    "run_warmup",
    "serialized_examples",
]

_log = logging.getLogger(__name__)

WARMUP_DIRECTORY = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
#: TF Serving's limit on the records of one warmup file.
MAX_WARMUP_RECORDS = 1000
_SUPPORTED = ("predict_log", "classify_log", "regress_log", "multi_inference_log")

#: ``observer(model_path, status, latency_s, records)``; see the module docstring.
WarmupObserver = Callable[[str, str, float, int], None]


@dataclass(frozen=True, slots=True)
class WarmupOptions:
    """How to warm a version up. ``num_request_iterations``: times each record is replayed
    (>= 1, default 1; ``--num_request_iterations_for_warmup`` when > 0)."""

    num_request_iterations: int = 1

    def __post_init__(self) -> None:
        value = self.num_request_iterations
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"num_request_iterations must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class WarmupResult:
    """One finished warmup: the file, the records replayed, the iterations of each, and the
    seconds from opening the file to the end of the last replay."""

    path: str
    records: int
    iterations: int
    latency_s: float


_observer_lock = threading.Lock()  # guards _observer
_observer: WarmupObserver | None = None


def set_warmup_observer(observer: WarmupObserver | None) -> WarmupObserver | None:
    """Install ``observer`` (None removes it); returns the one it replaces."""
    global _observer
    with _observer_lock:
        previous, _observer = _observer, observer
    return previous


def _notify(model_path: str, status: str, latency_s: float, records: int) -> None:
    with _observer_lock:
        observer = _observer
    if observer is None:
        return
    try:
        observer(model_path, status, latency_s, records)
    except Exception:  # noqa: BLE001 - metrics must never fail a load
        _log.exception("The warmup observer failed for %s", model_path)


def warmup_path(version_dir: str | os.PathLike[str]) -> Path:
    """``<version_dir>/assets.extra/tf_serving_warmup_requests``."""
    return Path(version_dir) / WARMUP_DIRECTORY / WARMUP_FILENAME


def run_warmup(
    servable: Any,
    version_dir: str | os.PathLike[str],
    options: WarmupOptions = WarmupOptions(),
    *,
    name: str = "",
) -> WarmupResult | None:
    """Replay ``version_dir``'s warmup file against ``servable``; see the module docstring.

    Returns None when there is no warmup file, the :class:`WarmupResult` otherwise; raises
    ServingError when warmup fails. ``name`` (e.g. the servable id) names the version in the
    log line.
    """
    path = warmup_path(version_dir)
    if not path.is_file():
        _log.info("No warmup data file found at %s", path)
        return None
    start = time.monotonic()
    records: list[Any] = []
    try:
        records = read_warmup_records(path)
        for index, log in enumerate(records, 1):
            for _ in range(options.num_request_iterations):
                replay_record(servable, log, context=f"Warmup request {index} of {len(records)}", path=path)
    except BaseException as exc:
        code = exc.code.name if isinstance(exc, ServingError) else Code.UNKNOWN.name
        _notify(os.fspath(version_dir), code, time.monotonic() - start, len(records))
        raise
    result = WarmupResult(str(path), len(records), options.num_request_iterations, time.monotonic() - start)
    _notify(os.fspath(version_dir), Code.OK.name, result.latency_s, result.records)
    _log.info(
        "Warmed up %s: %d warmup records, %d iteration(s) each, in %.3f s (%s)",
        name or os.fspath(version_dir), result.records, result.iterations, result.latency_s, path,
    )
    return result


def read_warmup_records(path: str | os.PathLike[str]) -> list[Any]:
    """The ``PredictionLog`` records of a warmup file, parsed and checked against the limit.

    Raises INVALID_ARGUMENT (too many records, a record that does not parse), DATA_LOSS (not
    a TFRecord file) or the reader's own error (e.g. NOT_FOUND, PERMISSION_DENIED).
    """
    from google.protobuf import message
    from tensorflow_serving.apis import prediction_log_pb2

    parse = prediction_log_pb2.PredictionLog.FromString
    records: list[Any] = []
    for index, data in enumerate(_tf_records(os.fspath(path)), 1):
        if index > MAX_WARMUP_RECORDS:
            raise InvalidArgumentError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {os.fspath(path)}"
            )
        try:
            records.append(parse(data))
        except message.DecodeError as exc:
            raise InvalidArgumentError(
                f"Failed to parse warmup record: record {index} ({len(data)} bytes) of {os.fspath(path)} "
                f"is not a tensorflow.serving.PredictionLog ({exc})"
            ) from exc
    return records


def _tf_records(path: str) -> Iterator[bytes]:
    """The raw records of a TFRecord file; TensorFlow's read errors become ServingErrors."""
    import tensorflow as tf

    with _quiet_deprecation():
        iterator = tf.compat.v1.io.tf_record_iterator(path)
    try:
        yield from iterator
    except tf.errors.DataLossError as exc:
        raise DataLossError(f"{exc.message}. Please verify your warmup data is in TFRecord format.") from exc
    except tf.errors.OpError as exc:
        raise ServingError.from_code(Code(exc.error_code), f"Cannot read warmup data at {path}: {exc.message}") from exc


def replay_record(servable: Any, log: Any, *, context: str = "Warmup request", path: Any = "") -> None:
    """Run one ``PredictionLog``'s request against ``servable`` once, discarding the answer.

    Raises UNIMPLEMENTED for an unsupported log type; a failure of the request keeps its
    code, with ``"{context} (<log type>) in {path} failed: "`` before its message.
    """
    kind = log.WhichOneof("log_type")
    if kind not in _SUPPORTED:
        raise UnimplementedError(f"Unsupported log_type for warmup: {kind or 'LOG_TYPE_NOT_SET'}")
    request = getattr(log, kind).request
    try:
        if kind == "predict_log":
            _predict(servable, request)
        elif kind == "multi_inference_log":
            _multi_inference(servable, request)
        else:
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            method = servable.classify if kind == "classify_log" else servable.regress
            method(signature, serialized_examples(request.input))
    except Exception as exc:
        where = f" in {os.fspath(path)}" if path else ""
        raise as_serving_error(exc, f"{context} ({kind}){where} failed: ") from exc


def _predict(servable: Any, request: Any) -> None:
    import tensorflow as tf

    inputs = {}
    for alias, tensor in request.inputs.items():
        try:
            inputs[alias] = tf.make_ndarray(tensor)
        except Exception as exc:  # noqa: BLE001 - any malformed TensorProto
            raise InvalidArgumentError(f"input {alias!r} is not a valid TensorProto: {exc}") from exc
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    servable.run(signature, inputs, tuple(request.output_filter))


def _multi_inference(servable: Any, request: Any) -> None:
    """The tasks in order; the checks of the servers' MultiInference, minus model names."""
    if not request.tasks:
        raise InvalidArgumentError("MultiInferenceRequest has no tasks")
    examples = serialized_examples(request.input)
    seen: set[str] = set()
    for task in request.tasks:
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise InvalidArgumentError(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise UnimplementedError(f"Unsupported signature method_name: {task.method_name}")
    for task in request.tasks:
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        method = servable.classify if task.method_name == CLASSIFY_METHOD else servable.regress
        method(signature, examples)


def serialized_examples(input_proto: Any) -> Sequence[bytes]:
    """A ``tensorflow.serving.Input``'s records as the model is fed them (the gRPC server's rule:
    for ``example_list_with_context`` each record is the serialized context, then the example)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [example.SerializeToString() for example in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + example.SerializeToString() for example in with_context.examples]
    return []


def _quiet_deprecation() -> Any:
    """Silence TF's notice that ``tf_record_iterator`` is deprecated (it reads plain records
    with clean error messages; ``tf.data`` wraps them in op traces)."""
    try:
        from tensorflow.python.util import deprecation
    except ImportError:  # pragma: no cover - private module moved
        return contextlib.nullcontext()
    return deprecation.silence()
