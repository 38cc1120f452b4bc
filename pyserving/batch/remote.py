"""Scoring batches on a running model server (pyserving or TensorFlow Serving), over gRPC or REST.

:func:`open_remote_model` returns a :class:`RemoteModel`: the ``BatchModel`` behind
``pyserving batch --server URL``. It asks the server for the signature once
(GetModelMetadata / ``GET .../metadata``), then sends every batch as one request::

    grpc://host[:8500]          PredictionService: Predict / Classify / Regress (tensorflow-serving-api stub)
    grpcs://host[:8500]         the same over TLS, checked against the system's root certificates
    http://host[:8501][/prefix] TF Serving's REST API: POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict
    https://host[:443][/prefix] with columnar bodies {"signature_name": s, "inputs": {name: tensor}}

Version choice: ``version`` or ``label`` (not both) goes into every request's model spec.
With neither, each request is answered by the version the server serves as latest at that
moment (a server that loads a new version mid-run answers later batches with it); pass
``version`` for a run scored by one version. ``served_version`` is the version that
answered the metadata request, shown in ``description``.

Concurrency contract (the pipeline relies on it):

* :meth:`RemoteModel.score` / :meth:`RemoteModel.score_examples` are thread-safe and block
  until the answer is in. At most ``max_in_flight`` calls of one model are in flight at
  any moment, counting calls from every thread and from :meth:`submit`; callers over the
  cap wait for a free slot (no fairness promise).
* :meth:`RemoteModel.submit` / :meth:`RemoteModel.submit_examples` run a call on the
  model's own worker threads and return a :class:`~concurrent.futures.Future`; they block
  only while ``max_in_flight`` calls are in flight. The future holds the result or the
  ``ServingError``, so a caller can handle each batch's failure on its own.
* :meth:`RemoteModel.score_many` keeps up to ``max_in_flight`` of an iterable's batches in
  flight and yields their results in input order; the first failure is raised from the
  iterator, and batches after it are not sent (ones already running finish unread).

Retries: a call answered UNAVAILABLE or RESOURCE_EXHAUSTED (REST: 503 / 429, or no
connection at all) is tried again up to ``retries`` more times, after waits that double
from ``backoff_s`` up to ``max_backoff_s``, each jittered to 50-100 % of its value; the
slot stays held while waiting, so a recovering server is not flooded. After the last try
the error is raised with its code, naming the server and the number of tries. A REST
keep-alive connection the server closed while idle is replaced once without a wait.

Errors (all :class:`ServingError`, translated here at one boundary)::

    InvalidArgumentError    the server refused the batch (bad shape, dtype, value): the
                            server's message; the pipeline splits the batch to find the row
    UnavailableError        the server cannot be reached or answers UNAVAILABLE, after retries
    ResourceExhaustedError  the server stayed overloaded, after retries
    DeadlineExceededError   no answer within ``timeout_s`` (not retried)
    NotFoundError, ...      any other status: its code and the server's message
    FailedPreconditionError the model is closed
    InvalidArgumentError    also: score_examples on a predict signature (as local models)
    CancelledError          close() interrupted a call waiting to retry

Returned arrays: gRPC answers decode without copies where possible, so arrays may be
read-only. Numeric inputs are cast to the signature's dtype when numpy's ``same_kind``
rule allows it (float64 -> float32), as the server would refuse them otherwise; a batch
of zero rows is answered here with empty outputs, without a request.

Lifecycle: :meth:`RemoteModel.close` (idempotent) wakes waiting callers (they get
FAILED_PRECONDITION), stops the worker threads and closes the channel / connections:
running gRPC calls end CANCELLED, running REST calls finish first. TensorFlow's protos are
imported on first use (gRPC, classify / regress over REST), never at import time.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import numpy as np

from pyserving.batch._remote_transports import Target, open_transport
from pyserving.batch.model import resolve_signature
from pyserving.servable.errors import (
    CancelledError,
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    ServingError,
)
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    SignatureSpec,
)
from pyserving.server.tensor_codec import numpy_dtype

__all__ = ["open_remote_model", "RemoteModel", "RemoteStatistics", "DEFAULT_PORTS"]

_log = logging.getLogger(__name__)

#: Port used when the URL names none (TF Serving's gRPC and REST defaults).
DEFAULT_PORTS = {"grpc": 8500, "grpcs": 8500, "http": 8501, "https": 443}
_RETRYABLE = frozenset({Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED})
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RemoteStatistics:
    """A snapshot of one model's calls (every field counts calls, not rows)."""

    in_flight: int  # calls holding a slot now (sending, waiting for the answer or to retry)
    waiting: int  # callers blocked until a slot frees
    peak_in_flight: int  # the most calls ever in flight at once (never above max_in_flight)
    calls: int  # calls finished, successfully or not
    failures: int  # calls that raised
    retries: int  # repeated tries after a retryable answer


def open_remote_model(
    url: str,
    model_name: str,
    *,
    signature: str | None = None,
    version: int | None = None,
    label: str | None = None,
    max_in_flight: int = 4,
    retries: int = 5,
    timeout_s: float = 60.0,
    backoff_s: float = 0.1,
    max_backoff_s: float = 5.0,
) -> RemoteModel:
    """Connect to the server at ``url`` and resolve ``model_name``'s signature.

    ``signature``: the signature key (default ``serving_default``, else the model's only
    signature: ``resolve_signature``'s rule, as for local models); ``version`` / ``label``:
    which version answers (see the module doc); ``max_in_flight``: calls in flight at most;
    ``retries``: tries after the first on UNAVAILABLE / RESOURCE_EXHAUSTED; ``timeout_s``:
    seconds one request may take; ``backoff_s`` / ``max_backoff_s``: the first and the
    longest wait between tries, in seconds. Blocks for the metadata request (with retries);
    raises InvalidArgumentError for bad arguments, NotFoundError for an unknown signature,
    and the server's error otherwise.
    """
    scheme, address, prefix = _parse_url(url)
    if not model_name:
        raise InvalidArgumentError("model_name must not be empty")
    if version is not None and label is not None:
        raise InvalidArgumentError(f"give version or label, not both; got version={version} label={label!r}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise InvalidArgumentError(f"version must be an int >= 0, got {version!r}")
    if label is not None and not label:
        raise InvalidArgumentError("label must not be empty")
    for name, value, least in (("max_in_flight", max_in_flight, 1), ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidArgumentError(f"{name} must be an int >= {least}, got {value!r}")
    for name, seconds in (("timeout_s", timeout_s), ("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
        if not seconds > 0:
            raise InvalidArgumentError(f"{name} must be > 0 seconds, got {seconds!r}")
    target = Target(model_name, version, label, signature or "")
    transport = open_transport(scheme, address, prefix, timeout_s)
    model = RemoteModel(
        transport, f"{scheme}://{address}{prefix}", target,
        max_in_flight=max_in_flight, retries=retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
    )
    try:
        model._resolve()
    except BaseException:
        model.close()
        raise
    return model


def _parse_url(url: str) -> tuple[str, str, str]:
    """(scheme, "host:port", path prefix without a trailing slash)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidArgumentError(
            f"server url must start with grpc://, grpcs://, http:// or https://, got {url!r}"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidArgumentError(f"server url has an invalid port: {url!r}") from None
    if not parts.hostname:
        raise InvalidArgumentError(f"server url names no host: {url!r}")
    prefix = parts.path.rstrip("/")
    if (prefix and scheme.startswith("grpc")) or parts.query or parts.fragment:
        raise InvalidArgumentError(f"server url may only have a path (REST only), no query or fragment: {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return scheme, f"{host}:{port}", prefix


class RemoteModel:
    """One model on a running server, as a ``BatchModel``. Build it with :func:`open_remote_model`.

    Attributes (fixed once open): ``description``, ``signature_name``, ``signature``,
    ``method``, ``preferred_batch_size`` (None: a server does not tell), ``served_version``.
    Threading, retries and errors: see the module doc.
    """

    def __init__(
        self,
        transport: Any,
        url: str,
        target: Target,
        *,
        max_in_flight: int,
        retries: int,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self._transport = transport
        self._url = url
        self._target = target
        self._max_in_flight = max_in_flight
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self.signature_name = target.signature_name
        self.signature = SignatureSpec(inputs={}, outputs={})
        self.method = ""
        self.preferred_batch_size: int | None = None
        self.served_version: int | None = None
        self.description = self._describe()
        # guards every counter below and the closed flag; waiters for a slot wait on it
        self._lock = threading.Condition()
        self._in_flight = self._waiting = self._peak = 0
        self._calls = self._failures = self._retried = 0
        self._closed = False
        self._closing = threading.Event()  # set by close(): interrupts backoff waits
        self._executor: ThreadPoolExecutor | None = None  # created on the first submit (under _lock)

    def _describe(self) -> str:
        target = self._target
        if target.version is not None:
            which = f"version {target.version}"
        elif target.version_label is not None:
            which = f"label {target.version_label}"
        else:
            which = "latest version"
        served = f" (version {self.served_version} when opened)" if self.served_version and target.version is None else ""
        signature = f" signature {target.signature_name}" if target.signature_name else ""
        return f"{self._url} model {target.name} {which}{served}{signature}"

    def _resolve(self) -> None:
        served, signatures = self._call(
            "GetModelMetadata", lambda: self._transport.metadata(self._target), holding_slot=False
        )
        where = f"model {self._target.name!r} at {self._url}"
        self.signature_name = resolve_signature(signatures, self._target.signature_name or None, where)
        self._target = replace(self._target, signature_name=self.signature_name)
        self.signature = self._transport.signature_spec(self.signature_name, signatures[self.signature_name])
        self.method = self.signature.method_name
        self.served_version = served
        self.description = self._describe()

    # -- BatchModel ------------------------------------------------------------------------
    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predict one batch (every input has rows on dim 0); one output per signature output."""
        return self._score(self._prepare(inputs), holding_slot=False)

    def score_examples(self, serialized: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Classify -> ``classes`` / ``scores`` ``[n, k]`` (those the signature has); regress -> ``outputs`` ``[n]``."""
        return self._score_examples(self._check_examples(serialized), holding_slot=False)

    def submit(self, inputs: Mapping[str, np.ndarray]) -> Future[dict[str, np.ndarray]]:
        """:meth:`score` on a worker thread; blocks only while ``max_in_flight`` calls run."""
        prepared = self._prepare(inputs)
        return self._submit(lambda: self._score(prepared, holding_slot=True))

    def submit_examples(self, serialized: Sequence[bytes]) -> Future[dict[str, np.ndarray]]:
        """:meth:`score_examples` on a worker thread; blocks only while ``max_in_flight`` calls run."""
        examples = self._check_examples(serialized)
        return self._submit(lambda: self._score_examples(examples, holding_slot=True))

    def score_many(self, batches: Iterable[Mapping[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """The results of ``batches`` in order, ``max_in_flight`` of them in flight (module doc)."""
        pending: deque[Future[dict[str, np.ndarray]]] = deque()
        try:
            for batch in batches:
                while len(pending) >= self._max_in_flight:
                    yield pending.popleft().result()
                pending.append(self.submit(batch))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def statistics(self) -> RemoteStatistics:
        with self._lock:
            return RemoteStatistics(
                self._in_flight, self._waiting, self._peak, self._calls, self._failures, self._retried
            )

    def close(self) -> None:
        """Release the connections and worker threads (idempotent; see the module doc)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            self._lock.notify_all()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._transport.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteModel({self.description})"

    # -- calls -------------------------------------------------------------------------------
    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = {}
        for name, value in inputs.items():
            array = np.asarray(value)
            spec = self.signature.inputs.get(name)
            if spec is not None and array.dtype.kind in "biufc":
                wanted = numpy_dtype(spec.dtype)
                if wanted != array.dtype and wanted.kind != "O" and np.can_cast(array.dtype, wanted, "same_kind"):
                    array = array.astype(wanted)
            prepared[name] = array
        return prepared

    def _check_examples(self, serialized: Sequence[bytes]) -> list[bytes]:
        if self.method not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise InvalidArgumentError(
                f"signature {self.signature_name} of {self.description} is a {self.method} signature; "
                "serialized tf.Examples need a classify or regress signature"
            )
        return [bytes(record) for record in serialized]

    def _score(self, inputs: dict[str, np.ndarray], holding_slot: bool) -> dict[str, np.ndarray]:
        if inputs and all(a.ndim >= 1 and a.shape[0] == 0 for a in inputs.values()):
            return {name: _empty(spec) for name, spec in self.signature.outputs.items()}
        return self._call(
            "Predict", lambda: self._transport.predict(self._target, inputs, self.signature), holding_slot
        )

    def _score_examples(self, examples: list[bytes], holding_slot: bool) -> dict[str, np.ndarray]:
        if self.method == REGRESS_METHOD:
            if not examples:
                return {"outputs": np.zeros(0, np.float32)}
            values = self._call("Regress", lambda: self._transport.regress(self._target, examples), holding_slot)
            return {"outputs": values}
        wanted = [key for key in ("classes", "scores") if key in self.signature.outputs] or ["classes", "scores"]
        if not examples:
            empty = {"classes": np.empty((0, 0), object), "scores": np.zeros((0, 0), np.float32)}
            return {key: empty[key] for key in wanted}
        classes, scores = self._call("Classify", lambda: self._transport.classify(self._target, examples), holding_slot)
        return {key: value for key, value in (("classes", classes), ("scores", scores)) if key in wanted}

    def _submit(self, call: Callable[[], _T]) -> Future[_T]:
        """Run ``call`` on a worker inside a slot taken here; the slot is freed when the future
        is done, also when it is cancelled before it ran (score_many, close)."""
        self._acquire()
        try:
            with self._lock:
                if self._closed:
                    raise FailedPreconditionError(f"{self.description} is closed")
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="pyserving-remote")
                executor = self._executor
            try:
                future = executor.submit(call)
            except RuntimeError as exc:  # close() shut the executor down meanwhile
                raise FailedPreconditionError(f"{self.description} is closed") from exc
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _done: self._release())
        return future

    def _acquire(self) -> None:
        with self._lock:
            self._waiting += 1
            try:
                while self._in_flight >= self._max_in_flight and not self._closed:
                    self._lock.wait()
            finally:
                self._waiting -= 1
            if self._closed:
                raise FailedPreconditionError(f"{self.description} is closed")
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify()

    def _call(self, what: str, request: Callable[[], _T], holding_slot: bool) -> _T:
        """``request()`` with the retry rules, inside a slot (taken here unless ``holding_slot``)."""
        if not holding_slot:
            self._acquire()
        failed = True
        try:
            result = self._with_retries(what, request)
            failed = False
            return result
        finally:
            with self._lock:
                self._calls += 1
                self._failures += failed
            if not holding_slot:
                self._release()

    def _with_retries(self, what: str, request: Callable[[], _T]) -> _T:
        attempt = 0
        while True:
            if self._closing.is_set():
                raise FailedPreconditionError(f"{self.description} is closed")
            try:
                return request()
            except ServingError as exc:
                if exc.code not in _RETRYABLE:
                    raise
                if attempt >= self._retries:
                    raise ServingError.from_code(
                        exc.code, f"{what} to {self._url} model {self._target.name!r} failed {attempt + 1} times "
                        f"({exc.code.name}); last error: {exc.message}",
                    ) from exc
                delay = min(self._max_backoff_s, self._backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                with self._lock:
                    self._retried += 1
                _log.warning(
                    "%s to %s model %r answered %s (%s); try %d of %d in %.2f s",
                    what, self._url, self._target.name, exc.code.name, exc.message, attempt + 1, self._retries + 1, delay,
                )
                if self._closing.wait(delay):
                    raise CancelledError(f"{what} to {self._url} was cancelled by close() while waiting to retry") from exc


def _empty(spec: Any) -> np.ndarray:
    """A zero-row array for an output ``spec`` (unknown inner dimensions become 0)."""
    inner = () if spec.shape is None or len(spec.shape) < 1 else tuple(d or 0 for d in spec.shape[1:])
    return np.zeros((0, *inner), dtype=numpy_dtype(spec.dtype))
