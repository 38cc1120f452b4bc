"""Request logging: sampled requests and their responses as ``PredictionLog`` TFRecord files.

TF Serving's ``logging_config`` (reference §9), made to work. :class:`RequestLoggers` is one
:class:`~pyserving.server.request_events.RequestObserver` for the whole server. Each request
of a model whose :class:`~pyserving.server.model_config.ModelEntry` has ``logging`` set, that
answered OK, is kept with probability ``sampling_rate`` (one uniform draw) and written with
its response as one ``tensorflow.serving.PredictionLog``: ``predict_log`` / ``classify_log``
/ ``regress_log`` / ``multi_inference_log`` by API (REST requests as their gRPC equivalent),
and ``log_metadata``: ``model_spec`` (name, version that answered, signature name), the
logger's ``sampling_config``, ``timestamp_secs`` of the answer.

Only requests that answered OK are logged: a ``PredictionLog`` has no status, warmup replays
every record (a logged failure would fail the load of a model warmed up with the log), and
TF Serving's ``RequestLogger::Log`` likewise takes a request *and* its response. Metadata
and status calls have no record type and are never logged.

Files: ``<filename_prefix>.<UTC opening time YYYYmmddTHHMMSSZ>.<n, 5 digits>.tfrecord``;
existing names are skipped (a restart never overwrites a log); the folder is created. The
next file is started before a record would take the current one past ``max_file_bytes``
(64 MiB) or ``max_file_records`` (no limit); a record larger than the limit gets a file of
its own. Files are flushed whenever the writer has emptied its queue. Each file is read by
``tf.data.TFRecordDataset`` and is warmup data as it stands (copy up to 1000 records to
``<version>/assets.extra/tf_serving_warmup_requests``).

Threading and cost:

* :meth:`~RequestLoggers.observe` (request thread): a dict lookup, a status check, one
  random draw; for a sampled request an append to a bounded queue under a short lock. It
  builds no proto, imports no TensorFlow, never blocks and never raises. When the queue
  (``queue_size`` records for the whole server) is full the record is dropped and counted.
* One writer thread (started by the first :meth:`~RequestLoggers.configure` naming a logged
  model) calls ``event.request()`` / ``event.response()`` (safe later, see request_events),
  serialises and writes in queue order with ``tf.io.TFRecordWriter`` (imported there).
* :meth:`~RequestLoggers.configure` (at start and after every reload) swaps the model ->
  logger map at once. A logger is its (frozen) config, so identical configs share one, also
  across reloads; files are shared by ``filename_prefix``. A record queued before the swap is written under the config
  it was sampled with, so a reload loses nothing; files of prefixes no longer configured are
  closed once the records queued before the swap are written.
* :meth:`~RequestLoggers.close` (the server's stop): stops accepting, writes what is queued,
  closes the files, waiting at most ``timeout_s``.

Counters (:meth:`~RequestLoggers.statistics`), as TF Serving's
``:tensorflow:serving:request_log_count{model_name, status_code}``: one per sampled request:
``OK`` written; ``RESOURCE_EXHAUSTED`` dropped, queue full; ``UNAVAILABLE`` arrived during
:meth:`close`; else the failure's code (a builder that raised: INTERNAL unless it raised a
ServingError; a file error: NOT_FOUND, PERMISSION_DENIED, ...). Unsampled and failed
requests are not counted. Failures never reach a request; a model's first failure after a
success is logged as an error.

Testing: ``start_thread=False`` runs without the thread (:meth:`~RequestLoggers.step` writes
on the caller's thread); ``open_file``, ``random`` and ``clock`` are injectable.
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from pyserving.servable.errors import Code, InvalidArgumentError, ServingError, as_serving_error
from pyserving.server.model_config import ModelEntry, RequestLoggingConfig
from pyserving.server.request_events import RequestEvent

__all__ = [
    "RequestLoggers",
    "RequestLogStatistics",
    "RecordFile",
    "tfrecord_file",
    "LOG_TYPES",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_MAX_FILE_BYTES",
]

_log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
#: TFRecord framing around each record: length (8), its CRC (4), the data's CRC (4).
_FRAMING_BYTES = 16

#: PredictionLog field by request API (gRPC and REST labels of request_events).
LOG_TYPES: Mapping[str, str] = {
    "Predict": "predict_log",
    "Classify": "classify_log",
    "Regress": "regress_log",
    "MultiInference": "multi_inference_log",
    "predict": "predict_log",
    "classify": "classify_log",
    "regress": "regress_log",
}


class RecordFile(Protocol):
    """An open log file (writer thread only): ``tf.io.TFRecordWriter``'s three methods."""

    def write(self, record: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def tfrecord_file(path: str) -> RecordFile:
    """Create ``path`` as a TFRecord file (TensorFlow's writer, imported here)."""
    import tensorflow as tf

    return tf.io.TFRecordWriter(path)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RequestLogStatistics:
    """A snapshot of :class:`RequestLoggers`' counters (see the module docstring)."""

    log_counts: Mapping[tuple[str, str], int]  # (model_name, status_code) -> sampled requests
    written: Mapping[str, int]  # model -> records written
    dropped: Mapping[str, int]  # model -> records dropped because the queue was full
    failed: Mapping[str, int]  # model -> records that could not be built or written
    queued: int  # records waiting for the writer now
    queue_size: int  # the queue's capacity
    open_files: tuple[str, ...] = field(default=())  # paths of the files open now
    files_opened: int = 0  # files created since construction


@dataclass(slots=True)
class _Item:
    config: RequestLoggingConfig  # the config it was sampled under
    event: RequestEvent
    log_type: str
    timestamp_s: float


@dataclass(slots=True)
class _OpenFile:
    path: str
    file: RecordFile
    size_bytes: int = 0
    records: int = 0


class RequestLoggers:
    """The server's request loggers: one observer, one bounded queue, one writer thread.

    ``queue_size``: records waiting for the writer, for all models together (>= 1).
    ``max_file_bytes`` (>= 1) / ``max_file_records`` (>= 1 or None): when to start a new file.
    ``open_file``: creates a file (default :func:`tfrecord_file`). ``random``: a uniform draw
    in [0, 1). ``clock``: wall-clock seconds, for timestamps and file names.
    ``start_thread=False``: no writer thread; call :meth:`step` (tests).
    """

    def __init__(
        self,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_file_records: int | None = None,
        open_file: Callable[[str], RecordFile] = tfrecord_file,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.time,
        start_thread: bool = True,
    ) -> None:
        for name, value in (("queue_size", queue_size), ("max_file_bytes", max_file_bytes),
                            ("max_file_records", max_file_records)):
            if (value is not None or name != "max_file_records") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                extra = " or None" if name == "max_file_records" else ""
                raise InvalidArgumentError(f"{name} must be an int >= 1{extra}, got {value!r}")
        self._queue_size = queue_size
        self._max_bytes = max_file_bytes
        self._max_records = max_file_records
        self._open_file = open_file
        self._random = random
        self._clock = clock
        self._use_thread = start_thread
        # Replaced whole by configure(); observe() reads the reference without a lock.
        self._by_model: Mapping[str, RequestLoggingConfig] = {}
        # _cond's lock guards: _queue, _accepted, _generation, _prefixes, _synced, _closing,
        # _dead, _thread and every counter below. Never held while a file is touched.
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Item] = deque()
        self._accepted = 0  # records ever queued
        self._generation = 0  # configure() calls
        self._prefixes: frozenset[str] = frozenset()  # the prefixes configured now
        self._synced = (0, 0)  # (_accepted, _generation) written, flushed and settled
        self._closing = False
        self._dead = False
        self._thread: threading.Thread | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._dropped: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._open_paths: dict[str, str] = {}  # prefix -> path
        self._files_opened = 0
        # Writer side (the writer thread, or step()'s caller): open files, next numbers,
        # models whose last record failed (their next failure is not logged again).
        self._files: dict[str, _OpenFile] = {}
        self._next_number: dict[str, int] = {}
        self._failing: set[str] = set()
        self._step_lock = threading.Lock()  # serialises step() callers without a thread
        self._configure_lock = threading.Lock()  # serialises configure() calls

    # -- control ----------------------------------------------------------------------------

    def configure(self, models: Sequence[ModelEntry]) -> None:
        """Log the requests of ``models`` that have ``logging`` set, from now on; the others
        (and models not listed) are no longer logged. Call at start and after every reload
        (from any thread; calls are serialised). Ignored after :meth:`close`."""
        with self._configure_lock:
            self._configure(models)

    def _configure(self, models: Sequence[ModelEntry]) -> None:
        # A logger is its config: models with equal configs share its files (by prefix).
        by_model = {entry.name: entry.logging for entry in models if entry.logging is not None}
        start = False
        with self._cond:
            if self._closing:
                return
            self._by_model = by_model
            self._prefixes = frozenset(config.filename_prefix for config in by_model.values())
            self._generation += 1
            if by_model and self._use_thread and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pyserving-request-log", daemon=True)
                start = True
            self._cond.notify_all()
        if start:
            assert self._thread is not None
            self._thread.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued and every configure() made before this call is
        written, flushed and settled; False when ``timeout_s`` passed first or the writer died."""
        if self._thread is None:
            self.step()
            return True
        with self._cond:
            target = (self._accepted, self._generation)
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: self._dead or (self._synced[0] >= target[0] and self._synced[1] >= target[1]), timeout_s
            )
            return bool(done) and not self._dead

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop accepting records, write the queued ones and close every file. Idempotent.

        Returns False (and logs a warning) when the writer did not finish within ``timeout_s``;
        it then goes on in the background as a daemon thread."""
        with self._cond:
            self._closing = True
            self._by_model = {}
            thread = self._thread
            self._cond.notify_all()
        if thread is None:
            self.step()
            with self._step_lock:
                self._close_files(set(self._files))
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            with self._cond:
                left = len(self._queue)
            _log.warning(
                "The request log writer did not finish within %.1f s; %d queued record(s) may not be written "
                "and the open log files may end in a partial record.", timeout_s, left,
            )
            return False
        return True

    def statistics(self) -> RequestLogStatistics:
        with self._cond:
            return RequestLogStatistics(
                log_counts=dict(self._counts),
                written={model: n for (model, status), n in self._counts.items() if status == "OK"},
                dropped=dict(self._dropped),
                failed=dict(self._failed),
                queued=len(self._queue),
                queue_size=self._queue_size,
                open_files=tuple(sorted(self._open_paths.values())),
                files_opened=self._files_opened,
            )

    # -- request path -------------------------------------------------------------------------

    def observe(self, event: RequestEvent) -> None:
        """Sample ``event`` and queue it for the writer (see the module docstring)."""
        try:
            config = self._by_model.get(event.model)
            if config is None or event.status != "OK" or event.request is None:
                return
            log_type = LOG_TYPES.get(event.api)
            if log_type is None or not self._random() < config.sampling_rate:
                return
            item = _Item(config, event, log_type, self._clock())
            with self._cond:
                if self._closing:
                    self._count(event.model, Code.UNAVAILABLE.name)
                elif len(self._queue) >= self._queue_size:
                    self._count(event.model, Code.RESOURCE_EXHAUSTED.name)
                    self._dropped[event.model] = self._dropped.get(event.model, 0) + 1
                else:
                    self._queue.append(item)
                    self._accepted += 1
                    self._cond.notify()
        except Exception:  # noqa: BLE001 - logging must never fail a request
            _log.exception("Request logging failed for a request of model %r; the request is not logged", event.model)

    def _count(self, model: str, status: str) -> None:
        """Caller holds _cond."""
        key = (model, status)
        self._counts[key] = self._counts.get(key, 0) + 1

    # -- writer -------------------------------------------------------------------------------

    def step(self) -> int:
        """Write every queued record, flush the files, close those of prefixes no longer
        configured; return the records handled. For ``start_thread=False`` only."""
        if self._use_thread and self._thread is not None:
            raise RuntimeError("step() is for a RequestLoggers built with start_thread=False")
        with self._step_lock:
            return self._drain()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._queue or self._closing or self._synced[1] != self._generation):
                        self._cond.wait()
                    closing = self._closing
                self._drain()
                if closing:
                    with self._cond:
                        if not self._queue:
                            break
            self._close_files(set(self._files))
        except BaseException:
            _log.critical("The request log writer stopped after an unexpected error; requests are no longer "
                          "logged", exc_info=True)
            with self._cond:
                self._dead = True
                self._closing = True
                self._cond.notify_all()

    def _drain(self) -> int:
        """Write what is queued now, then flush and settle the files; return the count."""
        with self._cond:
            batch = list(self._queue)
            self._queue.clear()
            synced = (self._accepted, self._generation)
            prefixes = self._prefixes
        for item in batch:
            self._write(item)
        stale = {prefix for prefix in self._files if prefix not in prefixes}
        self._close_files(stale)
        for prefix, open_file in list(self._files.items()):
            try:
                open_file.file.flush()
            except Exception as exc:  # noqa: BLE001 - a broken file is replaced by the next record
                _log.error("Could not flush request log file %s: %s; starting a new file", open_file.path, exc)
                self._close_files({prefix})
        with self._cond:
            self._synced = synced
            self._cond.notify_all()
        return len(batch)

    def _write(self, item: _Item) -> None:
        model = item.event.model
        try:
            data = self._record(item)
        except Exception as exc:  # noqa: BLE001 - a builder's failure costs one record
            code = exc.code if isinstance(exc, ServingError) else Code.INTERNAL
            self._failure(model, code, f"its request or response could not be built: {exc!r}")
            return
        prefix = item.config.filename_prefix
        try:
            self._append(prefix, data)
        except Exception as exc:  # noqa: BLE001 - a file's failure costs one record
            self._close_files({prefix})
            self._failure(model, _code_of(exc), f"writing under {prefix} failed: {exc}")
            return
        self._failing.discard(model)
        with self._cond:
            self._count(model, Code.OK.name)

    def _failure(self, model: str, code: Code, why: str) -> None:
        if model not in self._failing:
            self._failing.add(model)
            _log.error(
                "A sampled request of model %s was not logged (%s): %s. Further failures are counted in "
                "request_log_count{status_code!=OK} and logged again after the next success.", model, code.name, why,
            )
        with self._cond:
            self._count(model, code.name)
            self._failed[model] = self._failed.get(model, 0) + 1

    def _record(self, item: _Item) -> bytes:
        """The serialised PredictionLog of ``item`` (builds the protos)."""
        from tensorflow_serving.apis import prediction_log_pb2

        event = item.event
        assert event.request is not None
        request = event.request()
        response = event.response() if event.response is not None else None
        log = prediction_log_pb2.PredictionLog()
        body = getattr(log, item.log_type)
        body.request.CopyFrom(request)
        if response is not None:
            body.response.CopyFrom(response)
        metadata = log.log_metadata
        metadata.model_spec.name = event.model
        if event.version is not None:
            metadata.model_spec.version.value = event.version
        metadata.model_spec.signature_name = _signature_name(request, response)
        metadata.sampling_config.sampling_rate = item.config.sampling_rate
        metadata.timestamp_secs = int(item.timestamp_s)
        return log.SerializeToString()  # type: ignore[no-any-return]

    def _append(self, prefix: str, data: bytes) -> None:
        size = len(data) + _FRAMING_BYTES
        current = self._files.get(prefix)
        if current is not None and current.records and (
            current.size_bytes + size > self._max_bytes
            or (self._max_records is not None and current.records >= self._max_records)
        ):
            self._close_files({prefix})
            current = None
        if current is None:
            current = self._new_file(prefix)
        current.file.write(data)
        current.size_bytes += size
        current.records += 1

    def _new_file(self, prefix: str) -> _OpenFile:
        folder = os.path.dirname(prefix)
        os.makedirs(folder, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        number = self._next_number.get(prefix, 0)
        path = f"{prefix}.{stamp}.{number:05d}.tfrecord"
        while os.path.exists(path):
            number += 1
            path = f"{prefix}.{stamp}.{number:05d}.tfrecord"
        self._next_number[prefix] = number + 1
        opened = _OpenFile(path, self._open_file(path))
        self._files[prefix] = opened
        with self._cond:
            self._open_paths[prefix] = path
            self._files_opened += 1
        _log.info("Request log: writing %s", path)
        return opened

    def _close_files(self, prefixes: set[str]) -> None:
        for prefix in prefixes:
            opened = self._files.pop(prefix, None)
            if opened is None:
                continue
            with self._cond:
                self._open_paths.pop(prefix, None)
            try:
                opened.file.close()
            except Exception as exc:  # noqa: BLE001 - nothing more to do for this file
                _log.error("Could not close request log file %s: %s; its last records may be lost",
                           opened.path, exc)


def _signature_name(request: Any, response: Any) -> str:
    """The signature that answered: the response's, else the request's ('' for MultiInference)."""
    for message in (response, request):
        spec = getattr(message, "model_spec", None)
        if spec is not None and spec.signature_name:
            return str(spec.signature_name)
    return ""


def _code_of(exc: BaseException) -> Code:
    """A file error's canonical code (TensorFlow's OpError carries one)."""
    error_code = getattr(exc, "error_code", None)
    if isinstance(error_code, int) and not isinstance(exc, ServingError):
        try:
            return Code(error_code)
        except ValueError:
            pass
    return as_serving_error(exc).code
