"""The REST front end: TF Serving's HTTP/JSON API as a bare ASGI application on uvicorn.

Surface (TF Serving's ``http_rest_api_handler.cc``; paths case-insensitive, names and
labels ``[^/:]+`` and percent-decoded; the query string is part of the matched path, so
``...:predict?x=1`` is malformed, as in TF Serving)::

    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]              -> model status
    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]/metadata     -> model metadata
    POST /v1/models/{name}[/versions/{v} | /labels/{l}]:predict|classify|regress

pyserving's extensions (TF Serving answers 400 "Malformed request" for them), answered on
the event loop, so a probe is never queued behind busy model calls::

    GET  /v1/health/live    -> 200 {"status": "live"} while the server serves
    GET  /v1/health/ready   -> 200 {"status": "ready"}, or
                               503 {"status": "not ready", "reason": "..."} (models without an
                               AVAILABLE version, or "shutting down"; see ``readiness``)

Routes (``--routing_config_file``) are called like models (``/v1/models/{route}:predict``
and every other model endpoint); their rules and segment key read the request headers.
Predict, classify, regress and metadata answers carry ``x-pyserving-model`` and
``x-pyserving-model-version``: the model and version that answered (useful through a route).
Also pyserving's::

    GET  /v1/routes                  -> {"routes": [statistics, ...]}
    GET  /v1/routes/{name}           -> one route's per-arm statistics (404 for no such route)
    GET  <monitoring path>           -> Prometheus text (``--monitoring_config_file``; default
                                        /monitoring/prometheus/metrics), rendered on the loop
    *    /v1/admin/...               -> the admin API (``admin_api``; run on the loop's default
                                        executor, never a model worker); 404 when it is off

``GET /v1/models`` is 400 "Missing model name in request."; any other ``/v1/...`` path or
method is 400 "Malformed request: <METHOD> <path>" (the verb and ``metadata`` compare
case-sensitively, so ``:Predict`` is malformed and ``/METADATA`` is a status request); a
version beyond int64 is 400 "Failed to convert version: V to numeric."; a path outside
``/v1/`` is a plain HTML 404. API answers are ``application/json``; errors are
``{"error": message}`` with the status of ``status.http_status`` (the one mapping).

Bodies: a ``Content-Encoding`` containing ``gzip`` is decompressed. A body (also once
decompressed) over ``max_body_bytes`` gets 413 naming the limit; a declared
``Content-Length`` over it is refused before the body is read. JSON rules: ``rest_json``.

Threading: the server runs in its own thread with its own event loop (uvloop where installed;
uvicorn with the httptools parser, chosen by ``benchmarks/bench_http_stack.py``). Routing and body reading
run on the loop; JSON decoding, the data-plane call and JSON encoding of one request run
as ONE job on a ``ThreadPoolExecutor`` of ``num_threads`` (``rest_api_num_threads``), so a
slow model never stalls other connections. Exception: a predict of a batching model whose
body is at most 256 KiB is decoded and queued on the loop, awaited without any thread
waiting for its batch, and encoded on the loop (``DataPlane.start_predict``); so batches
are not limited by the worker count and a request costs two thread hops instead of four
(the tiny model at 32 clients: 1.2x the requests/s at two thirds of the server CPU per
request). Routes and bigger bodies take the worker path. ``num_threads=0`` runs jobs inline on the loop:
for a sub-millisecond model 1.6x the requests/s at 1 client and 1.25x at 16 (see the
benchmark), but one slow call (or the first metadata request, which imports TensorFlow's
protos) stalls every connection, and no timeout applies. HTTP/1.1 runs one request per
connection at a time, so the executor queue is bounded by the open connections.

Timeout: a request not answered ``timeout_ms`` after its job was queued gets 504
(DEADLINE_EXCEEDED). A queued job then never runs; a predict whose deadline (arrival +
``timeout_ms``) passes while it waits for a batch is dropped before the model runs it; a
running model call cannot be interrupted (TF Serving makes the timeout a session timeout;
Python cannot) and finishes in the background, its answer dropped.

Failure: no input crashes the server. A ServingError becomes its HTTP status; anything
else is logged with its traceback and answered 500 with its type and message.

Tracing: with the data plane's :class:`~pyserving.server.tracing.Tracing` (``--enable_tracing``)
every model request (predict, classify, regress, status, metadata) gets a span whose parent
is its ``traceparent`` header, with decode / queue / model run / encode children; the worker
(or the loop, for a queued predict or an answer given without the worker: 504, shutdown)
ends it. Off, a request reads one attribute more.

Sockets, the server thread, and reading / gunzipping bodies: ``rest_runner`` (``handle.port``
is the real port, also for port 0; TCP_NODELAY is set, so small answers never wait for
Nagle + delayed ACK).
No gRPC, no TensorFlow here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence
from urllib.parse import unquote_to_bytes

import orjson

from pyserving.servable.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnavailableError,
)
from pyserving.servable.ids import ServableId
from pyserving.server import api_protos, rest_json
from pyserving.server.data_plane import DataPlane, ModelSpec, PredictResult
from pyserving.server.readiness import Readiness
from pyserving.server.request_events import RequestEvent, RequestObserver, notify
from pyserving.server.rest_runner import (
    DEFAULT_MAX_BODY_BYTES,
    BodyTooLarge,
    Disconnected,
    RestServerHandle,
    RestServerOptions,
    gunzip_body,
    read_body,
    serve_in_thread,
)
from pyserving.server.status import http_status, to_serving_error
from pyserving.server.tracing import DECODE, MODEL_RUN, QUEUE

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.server.admin_api import AdminApi
    from pyserving.server.tracing import RequestTrace

__all__ = [
    "RestServerOptions", "RestServerHandle", "RestApplication", "start_rest_server", "route", "DEFAULT_MAX_BODY_BYTES",
]

_log = logging.getLogger(__name__)


# -- routing ---------------------------------------------------------------------------------

_PREDICTION_RE = re.compile(
    rb"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.IGNORECASE
)
_STATUS_RE = re.compile(
    rb"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.IGNORECASE
)
_PREDICT, _CLASSIFY, _REGRESS, _STATUS, _METADATA = range(5)
_VERBS = {b"predict": _PREDICT, b"classify": _CLASSIFY, b"regress": _REGRESS}  # case-sensitive, as TF Serving


def _spec(name: bytes | None, version: bytes | None, label: bytes | None) -> ModelSpec:
    number = None
    if version is not None:
        number = int(version)
        if number >= 1 << 63:
            raise InvalidArgumentError(f"Failed to convert version: {version.decode()} to numeric.")
    return ModelSpec(
        name=unquote_to_bytes(name).decode("utf-8", "replace") if name else "",
        version=number,
        version_label=None if label is None else unquote_to_bytes(label).decode("utf-8", "replace"),
    )


def route(method: str, target: bytes) -> tuple[int, ModelSpec]:
    """(request kind, model spec) of an API request, or InvalidArgumentError (400).

    ``target`` is the raw, undecoded path, with ``?query`` appended when there is one.
    """
    if method == "POST":
        match = _PREDICTION_RE.fullmatch(target)
        if match is not None and match.group(4) in _VERBS:
            return _VERBS[match.group(4)], _spec(match.group(1), match.group(2), match.group(3))
    elif method == "GET":
        match = _STATUS_RE.fullmatch(target)
        if match is not None:
            spec = _spec(match.group(1), match.group(2), match.group(3))
            if not spec.name:
                raise InvalidArgumentError("Missing model name in request.")
            return (_METADATA if match.group(4) == b"metadata" else _STATUS), spec
    raise InvalidArgumentError(f"Malformed request: {method} {target.decode('latin-1')}")


# -- one request's work: in a worker thread, or inline ------------------------------------------

#: (HTTP status, JSON body) or (HTTP status, JSON body, extra response headers)
_Reply = tuple[int, bytes] | tuple[int, bytes, list[tuple[bytes, bytes]]]


def _answered_by(served: ServableId) -> list[tuple[bytes, bytes]]:
    """The headers naming the model and version that answered (also through a route)."""
    return [(b"x-pyserving-model", served.name.encode("utf-8")), (b"x-pyserving-model-version", b"%d" % served.version)]


def _too_large(limit: int, size: int | None = None) -> _Reply:
    what = "Request body" if size is None else f"Request body of {size} bytes"
    return 413, rest_json.encode_error(f"{what} is larger than the limit of {limit} bytes (max_body_bytes)")


def _error_reply(error: ServingError) -> _Reply:
    return http_status(error.code), rest_json.encode_error(error.message)


class _PredictDecoder:
    """``decode(signature)`` for the data plane; remembers the request's format."""

    __slots__ = ("doc", "row_format")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.row_format = True

    def __call__(self, signature: Any) -> Any:
        inputs, self.row_format = rest_json.predict_inputs(self.doc, signature)
        return inputs


def _with_signature(spec: ModelSpec, doc: dict[str, Any]) -> ModelSpec:
    name = rest_json.request_signature_name(doc)
    return replace(spec, signature_name=name) if name else spec


def _proto_dict(message: Any) -> dict[str, Any]:
    """TF Serving's print options: field names kept, defaults printed, int64 as strings,
    enums by name."""
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


#: A worker method's answer: JSON body, the version that answered (None: not one version),
#: and (request proto builder, response proto builder) for request logging (None: not logged).
_Answer = tuple[bytes, "ServableId | None", "tuple[Callable[[], Any], Callable[[], Any]] | None"]
_API_NAMES = ("predict", "classify", "regress", "status", "metadata")  # TF Serving's REST API labels


class _Worker:
    """(kind, spec, body) -> (HTTP status, JSON bytes[, headers]). Never raises.

    ``observers`` get a :class:`RequestEvent` per request (none: nothing is built)."""

    def __init__(self, data_plane: DataPlane, max_body_bytes: int, observers: Sequence[RequestObserver] = ()) -> None:
        self._data_plane = data_plane
        self._limit = max_body_bytes
        self._observers = tuple(observers)
        self._run = (self._predict, self._classify, self._regress, self._status, self._metadata)

    def __call__(
        self,
        kind: int,
        spec: ModelSpec,
        body: bytes,
        gzipped: bool,
        deadline: float | None = None,
        arrived: float | None = None,
        trace: RequestTrace | None = None,
    ) -> _Reply:
        """``deadline``: ``time.monotonic()`` value after which a predict is not run (None:
        none); ``arrived``: ``time.perf_counter()`` when the request arrived (for observers);
        ``trace``: the request's trace (None: not traced), finished here."""
        try:
            if trace is not None and kind < _STATUS:
                trace.mark(DECODE)
            payload = gunzip_body(body, self._limit) if gzipped else body
            if kind == _PREDICT:
                answer = self._predict(spec, payload, deadline, trace)
            elif kind < _STATUS:
                answer = self._run[kind](spec, payload, trace)
            else:
                answer = self._run[kind](spec, payload)
        except BaseException as exc:
            return self.failed(kind, spec, exc, arrived, trace)
        return self.answered(kind, spec, answer, arrived, trace)

    def answered(
        self, kind: int, spec: ModelSpec, answer: _Answer, arrived: float | None, trace: RequestTrace | None = None
    ) -> _Reply:
        """The reply of an answered request (observers told, the trace finished)."""
        body, served, logged = answer
        if self._observers:
            self._report(kind, spec, served, None, arrived, logged)
        if trace is not None:
            if served is None:
                trace.finish()
            else:
                trace.finish(model=served.name, version=served.version)
        return (200, body) if served is None else (200, body, _answered_by(served))

    def failed(
        self, kind: int, spec: ModelSpec, exc: BaseException, arrived: float | None, trace: RequestTrace | None = None
    ) -> _Reply:
        """The reply of a request that raised ``exc`` (observers told, the trace finished).
        Never raises."""
        if isinstance(exc, BodyTooLarge):
            error: ServingError = InvalidArgumentError("request body too large")
            reply = _too_large(self._limit)
        elif isinstance(exc, ServingError):
            error = exc
            reply = _error_reply(exc)
        else:  # a bug (or a servable's sys.exit): report it, keep serving
            _log.error(
                "REST request for model %r failed with an unexpected error; answering 500", spec.name,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            error = to_serving_error(exc)
            reply = _error_reply(error)
        if self._observers:
            self._report(kind, spec, None, error, arrived, None)
        if trace is not None:
            trace.finish(error.code.name, error.message)
        return reply

    def _report(
        self,
        kind: int,
        spec: ModelSpec,
        served: ServableId | None,
        error: ServingError | None,
        arrived: float | None,
        logged: tuple[Callable[[], Any], Callable[[], Any]] | None,
    ) -> None:
        notify(self._observers, RequestEvent(
            model=served.name if served is not None else spec.name,
            version=served.version if served is not None else None,
            api=_API_NAMES[kind],
            entrypoint="REST",
            status="OK" if error is None else error.code.name,
            latency_s=time.perf_counter() - arrived if arrived is not None else 0.0,
            request=logged[0] if logged is not None else None,
            response=logged[1] if logged is not None else None,
        ))

    def _predict(
        self, spec: ModelSpec, body: bytes, deadline: float | None = None, trace: RequestTrace | None = None
    ) -> _Answer:
        doc = rest_json.parse_json_body(body)
        decoder = _PredictDecoder(doc)
        spec = _with_signature(spec, doc)
        decode = decoder if trace is None else trace.decoding(decoder, MODEL_RUN)
        return self.predict_answer(spec, self._data_plane.predict(spec, decode, deadline=deadline), decoder, trace)

    def predict_answer(
        self, spec: ModelSpec, result: PredictResult, decoder: _PredictDecoder, trace: RequestTrace | None = None
    ) -> _Answer:
        if trace is not None:
            trace.ran(result.signature_name)
        answer = rest_json.encode_predict_response(result.outputs, decoder.row_format, result.signature)
        if not self._observers:
            return answer, result.id, None
        return answer, result.id, (
            lambda: api_protos.predict_request(spec, result.inputs), lambda: api_protos.predict_response(result)
        )

    def start_predict(
        self, spec: ModelSpec, body: bytes, gzipped: bool, deadline: float | None, trace: RequestTrace | None = None
    ) -> Any:
        """On the event loop: queue a predict on a batching version without a waiting thread.
        Returns (pending, spec, decoder), or None when the version does not batch (then the
        request goes to a worker as usual). Raises like ``_predict``."""
        if trace is not None:
            trace.mark(DECODE)
        payload = gunzip_body(body, self._limit) if gzipped else body
        doc = rest_json.parse_json_body(payload)
        decoder = _PredictDecoder(doc)
        spec = _with_signature(spec, doc)
        decode = decoder if trace is None else trace.decoding(decoder, QUEUE)
        pending = self._data_plane.start_predict(spec, decode, (), deadline)
        return None if pending is None else (pending, spec, decoder)

    def _examples(self, spec: ModelSpec, body: bytes) -> tuple[ModelSpec, list[bytes]]:
        """With a ``context``, each record is context + example serialized back to back
        (TF Serving's merge: the example's features win)."""
        doc = rest_json.parse_json_body(body)
        examples, context = rest_json.examples_from_json(doc)
        return _with_signature(spec, doc), [context + e for e in examples] if context else examples

    def _classify(self, spec: ModelSpec, body: bytes, trace: RequestTrace | None = None) -> _Answer:
        spec, examples = self._examples(spec, body)
        if trace is not None:
            trace.mark(MODEL_RUN)
        result = self._data_plane.classify(spec, examples)
        if trace is not None:
            trace.ran(result.signature_name)
        answer = rest_json.encode_classify_response(result.classes, result.scores)
        return answer, result.id, (
            lambda: api_protos.classification_request(spec, examples),
            lambda: api_protos.classification_response(result),
        )

    def _regress(self, spec: ModelSpec, body: bytes, trace: RequestTrace | None = None) -> _Answer:
        spec, examples = self._examples(spec, body)
        if trace is not None:
            trace.mark(MODEL_RUN)
        result = self._data_plane.regress(spec, examples)
        if trace is not None:
            trace.ran(result.signature_name)
        return rest_json.encode_regress_response(result.values), result.id, (
            lambda: api_protos.regression_request(spec, examples), lambda: api_protos.regression_response(result)
        )

    def _status(self, spec: ModelSpec, body: bytes) -> _Answer:
        states = self._data_plane.status(spec)
        return orjson.dumps(_proto_dict(api_protos.status_response(states)), option=orjson.OPT_INDENT_2), None, None

    def _metadata(self, spec: ModelSpec, body: bytes) -> _Answer:
        from tensorflow_serving.apis import get_model_metadata_pb2

        result = self._data_plane.metadata(spec)
        response = api_protos.metadata_response(result.id, result.signature_def_map)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        # As TF Serving: the parts are printed separately, so the Any carries no "@type".
        doc = {"model_spec": _proto_dict(response.model_spec), "metadata": {"signature_def": _proto_dict(defs)}}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2), result.id, None


# -- the ASGI application ----------------------------------------------------------------------

_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]
_CORS_ORIGIN_RE = re.compile(rb"https?://")
_JSON = b"application/json"
_NOT_FOUND = b"<html><title>404 Not Found</title><body><h1>Not Found</h1></body></html>"
_LIVE_PATH, _READY_PATH = b"/v1/health/live", b"/v1/health/ready"
_ADMIN_PREFIX, _ROUTES_PREFIX = b"/v1/admin", b"/v1/routes"
_ROUTE_STATS_RE = re.compile(rb"/v1/routes(?:/([^/:?]+))?")
_ADMIN_OFF = rest_json.encode_error(
    "The admin API is off; start the server with --enable_admin_api to manage models and routes"
)
_LIVE = orjson.dumps({"status": "live"})
_READY = orjson.dumps({"status": "ready"})
_PREFLIGHT_OK = (0, b"")
#: Predict bodies of batching models up to this size are decoded on the event loop (no worker
#: thread waits for the batch); larger ones go to a worker, so one big body never stalls the loop.
_LOOP_DECODE_LIMIT = 256 * 1024
_Send = Callable[[dict[str, Any]], Awaitable[None]]
_Receive = Callable[[], Awaitable[dict[str, Any]]]


class RestApplication:
    """The ASGI 3 application; runs on one event loop. Jobs go to ``executor`` (None: inline).
    ``readiness`` answers ``/v1/health/ready`` (None: always ready). ``admin`` answers
    ``/v1/admin/...`` (None: 404, the admin API is off)."""

    def __init__(
        self,
        data_plane: DataPlane,
        options: RestServerOptions,
        executor: ThreadPoolExecutor | None,
        readiness: Readiness | None = None,
        admin: AdminApi | None = None,
        observers: Sequence[RequestObserver] = (),
        metrics: tuple[str, Callable[[], tuple[bytes, str]]] | None = None,
    ) -> None:
        self._data_plane = data_plane
        self._metrics_path = metrics[0].encode("utf-8") if metrics is not None else None
        self._render_metrics = metrics[1] if metrics is not None else None
        self._admin = admin
        self._work = _Worker(data_plane, options.max_body_bytes, observers)
        self._tracing = data_plane.tracing  # None: requests are not traced
        self._readiness = readiness
        self._executor = executor
        self._timeout_s = options.timeout_ms / 1000.0
        self._limit = options.max_body_bytes
        self._cors = options.enable_cors
        self._extra_headers = _CORS_HEADERS if options.enable_cors else []

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs with lifespan and websockets off
        method: str = scope["method"]
        target: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        if target[:4].lower() != b"/v1/":
            if method == "GET" and self._metrics_path is not None and target.split(b"?", 1)[0] == self._metrics_path:
                page, content_type = self._render_metrics()  # type: ignore[misc]
                return await self._send(send, 200, page, content_type.encode("ascii"))
            return await self._send(send, 404, _NOT_FOUND, b"text/html")
        if method == "GET" and target[:11].lower() == b"/v1/health/":
            health = self._health(target.lower())
            if health is not None:
                return await self._send(send, *health, _JSON)
        if target[:9] == _ADMIN_PREFIX and target[9:10] in (b"", b"/", b"?"):
            return await self._answer_admin(method, target, scope["headers"], receive, send)
        if method == "GET" and target[:10] == _ROUTES_PREFIX:
            stats = self._route_statistics(target)
            if stats is not None:
                return await self._send(send, *stats, _JSON)
        try:
            reply = await self._answer(method, target, scope["headers"], receive)
        except Disconnected:
            return None
        except Exception as exc:  # a bug in this module: still one JSON answer
            _log.exception("REST request %s %r failed unexpectedly; answering 500", method, target)
            reply = _error_reply(to_serving_error(exc))
        if reply[0] == 0:
            return await self._send(send, 200, b"", None)  # accepted CORS preflight
        return await self._send(send, reply[0], reply[1], _JSON, reply[2] if len(reply) > 2 else ())

    def _route_statistics(self, target: bytes) -> _Reply | None:
        """``GET /v1/routes/{name}`` (one route's statistics) and ``GET /v1/routes`` (all)."""
        match = _ROUTE_STATS_RE.fullmatch(target)
        if match is None:
            return None
        router = self._data_plane.router
        try:
            if match.group(1) is None:
                names = sorted(router.route_names()) if router is not None else []
                return 200, orjson.dumps({"routes": [router.statistics(n) for n in names]})  # type: ignore[union-attr]
            name = unquote_to_bytes(match.group(1)).decode("utf-8", "replace")
            if router is None or not router.is_route(name):
                raise NotFoundError(f"No route named {name}")
            return 200, orjson.dumps(router.statistics(name))
        except ServingError as exc:
            return _error_reply(exc)

    async def _answer_admin(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], receive: _Receive, send: _Send
    ) -> None:
        """The management API, on a thread of the loop's default executor: a change may
        block for as long as a model loads, and must not occupy a model worker."""
        if self._admin is None:
            return await self._send(send, 404, _ADMIN_OFF, _JSON)
        try:
            body = await read_body(receive, self._limit)
        except Disconnected:
            return None
        if body is None:
            return await self._send(send, *_too_large(self._limit), _JSON)
        names = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        reply = await asyncio.get_running_loop().run_in_executor(
            None, self._admin.handle, method, target.decode("latin-1"), names, body
        )
        await self._send(send, reply.status, reply.body, None, list(reply.headers))

    def _health(self, path: bytes) -> _Reply | None:
        if path == _LIVE_PATH:
            return 200, _LIVE
        if path != _READY_PATH:
            return None
        status = self._readiness.status() if self._readiness is not None else None
        if status is None or status.ready:
            return 200, _READY
        return 503, orjson.dumps({"status": "not ready", "reason": status.reason})

    async def _answer(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], receive: _Receive
    ) -> _Reply:
        arrived = time.perf_counter()
        declared, gzipped, preflight = None, False, method == "OPTIONS" and self._cors
        for name, value in headers:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"content-encoding":
                gzipped = b"gzip" in value
            elif preflight and name == b"origin" and _CORS_ORIGIN_RE.match(value):
                return _PREFLIGHT_OK
        if preflight:
            return _error_reply(InvalidArgumentError("Origin header is missing in CORS preflight"))
        try:
            kind, spec = route(method, target)
        except ServingError as exc:
            return _error_reply(exc)
        if self._data_plane.is_route(spec.name):  # its rules and segment key read the headers
            spec = replace(spec, headers={n.decode("latin-1"): v.decode("latin-1") for n, v in headers})
        body = b""
        if kind < _STATUS:
            if declared is not None and declared > self._limit:
                return _too_large(self._limit, declared)
            body = await read_body(receive, self._limit)
            if body is None:
                return _too_large(self._limit)
        trace = None
        tracing = self._tracing
        if tracing is not None:
            trace = tracing.start_rest(method, _API_NAMES[kind], spec.name, headers, arrived)
        if self._executor is None:
            return self._work(kind, spec, body, gzipped, None, arrived, trace)
        if kind == _PREDICT and len(body) <= _LOOP_DECODE_LIMIT and self._data_plane.batches(spec):
            reply = await self._predict_queued(spec, body, gzipped, arrived, trace)
            if reply is not None:
                return reply
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Reply] = loop.create_future()
        deadline = time.monotonic() + self._timeout_s if self._timeout_s else None
        job = self._executor.submit(self._work, kind, spec, body, gzipped, deadline, arrived, trace)
        job.add_done_callback(lambda done: _notify(loop, waiter, done))
        if not self._timeout_s:
            reply = await waiter
        else:
            timer = loop.call_later(self._timeout_s, _expire, waiter, job, self._timeout_s)
            try:
                reply = await waiter
            finally:
                timer.cancel()
        if trace is not None:
            trace.settle(reply[0])  # 504 or shutdown: answered without the worker
        return reply

    async def _predict_queued(
        self, spec: ModelSpec, body: bytes, gzipped: bool, arrived: float, trace: RequestTrace | None = None
    ) -> _Reply | None:
        """A predict of a batching version, without a worker thread: decoded and queued on the
        loop, awaited, encoded on the loop (the batch thread only computes). None: the
        version does not batch after all (it changed since :meth:`DataPlane.batches`)."""
        work = self._work
        deadline = time.monotonic() + self._timeout_s if self._timeout_s else None
        try:
            started = work.start_predict(spec, body, gzipped, deadline, trace)
        except BaseException as exc:
            return work.failed(_PREDICT, spec, exc, arrived, trace)
        if started is None:
            return None
        pending, spec, decoder = started
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        pending.add_done_callback(lambda _pending: _wake(loop, answered))
        timer = loop.call_later(self._timeout_s, _set_done, answered) if self._timeout_s else None
        try:
            await answered
        finally:  # also when the server stops and cancels this request
            if timer is not None:
                timer.cancel()
            if not pending.done():
                pending.give_up()  # not started: never runs; running: finishes unseen
        if not pending.done():
            return work.failed(_PREDICT, spec, _timed_out(self._timeout_s), arrived, trace)
        if trace is not None:
            trace.batch_started(pending.batch_started())
        try:
            return work.answered(
                _PREDICT, spec, work.predict_answer(spec, pending.result(), decoder, trace), arrived, trace
            )
        except BaseException as exc:
            return work.failed(_PREDICT, spec, exc, arrived, trace)

    async def _send(
        self,
        send: _Send,
        status: int,
        payload: bytes,
        content_type: bytes | None,
        extra: list[tuple[bytes, bytes]] | tuple[()] = (),
    ) -> None:
        headers = [(b"content-length", b"%d" % len(payload)), *self._extra_headers, *extra]
        if content_type is not None:
            headers.append((b"content-type", content_type))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _notify(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[_Reply], done: Future[_Reply]) -> None:
    """Runs in the worker thread (or here, for a cancelled job)."""
    try:
        loop.call_soon_threadsafe(_settle, waiter, done)
    except RuntimeError:
        pass  # the loop is closed: the server stopped and nobody waits for this answer


def _wake(loop: asyncio.AbstractEventLoop, answered: asyncio.Future[None]) -> None:
    """Runs on a batch thread once a queued predict is answered."""
    try:
        loop.call_soon_threadsafe(_set_done, answered)
    except RuntimeError:
        pass  # the loop is closed: the server stopped and nobody waits for this answer


def _set_done(answered: asyncio.Future[None]) -> None:
    if not answered.done():
        answered.set_result(None)


def _timed_out(timeout_s: float) -> DeadlineExceededError:
    return DeadlineExceededError(
        f"Request did not finish within {timeout_s * 1000:.0f} ms (rest_api_timeout_in_ms); "
        "a model call already running finishes in the background"
    )


def _settle(waiter: asyncio.Future[_Reply], done: Future[_Reply]) -> None:
    if waiter.done():
        return  # answered 504 already (or the request task is gone)
    if done.cancelled():
        waiter.set_result(_error_reply(UnavailableError("The REST server is shutting down")))
    else:
        waiter.set_result(done.result())  # _Worker never raises


def _expire(waiter: asyncio.Future[_Reply], job: Future[_Reply], timeout_s: float) -> None:
    if waiter.done():
        return
    job.cancel()  # still queued: it never runs; running: it finishes unseen
    waiter.set_result(_error_reply(_timed_out(timeout_s)))


# -- starting ------------------------------------------------------------------------------------


def start_rest_server(
    data_plane: DataPlane,
    options: RestServerOptions | None = None,
    readiness: Readiness | None = None,
    admin: AdminApi | None = None,
    observers: Sequence[RequestObserver] = (),
    metrics: tuple[str, Callable[[], tuple[bytes, str]]] | None = None,
) -> RestServerHandle:
    """Bind, start the server thread, and return once it accepts connections.

    ``readiness`` answers ``GET /v1/health/ready`` (None: always ready); ``admin`` serves
    ``/v1/admin/...`` (None: the admin API is off); ``observers`` receive every finished
    model request (metrics, request logging); ``metrics`` = (path, render): ``GET path``
    answers ``render()``'s Prometheus page (None: no metrics endpoint). Raises UnavailableError when the port cannot
    be bound or the server does not start.
    """
    options = options or RestServerOptions()
    return serve_in_thread(
        options,
        lambda executor: RestApplication(data_plane, options, executor, readiness, admin, observers, metrics),
    )
