"""Optional OpenTelemetry tracing of model requests (``--enable_tracing``; ``pip install 'pyserving[otel]'``).

A traced request is one span of kind SERVER with one child span per phase, in this order::

    POST /v1/models/{model}:predict   (REST)  |  tensorflow.serving.PredictionService/Predict  (gRPC)
    ├── decode      request -> arrays (REST: gunzip, JSON parse, conversion; gRPC: TensorProtos)
    ├── queue       waiting for the batch (REST predicts of a batching version; see Limits)
    ├── model run   the input checks and the model call
    └── encode      arrays -> the JSON answer / the response proto

A child starts when the one before it ends. Time of the request span that no child covers:
reading the body, waiting for a worker thread, resolving the model version. Classify, regress
and multi-inference get decode (the ``tf.Example`` records), model run and encode; metadata
and status requests get the request span alone. Health, metrics, admin and route-statistics
requests are not traced.

Attributes of the request span: ``pyserving.model`` and ``pyserving.model.version`` (the
model and version that answered, also through a route; the requested name when none did),
``pyserving.signature`` (the signature that ran), ``pyserving.api`` (TF Serving's API label,
as :class:`~pyserving.server.request_events.RequestEvent`), ``pyserving.entrypoint``
("REST" | "GRPC"), ``pyserving.status`` (canonical code name), plus OpenTelemetry's
``http.request.method`` / ``http.route`` / ``http.response.status_code`` (REST) or
``rpc.system`` / ``rpc.service`` / ``rpc.method`` / ``rpc.grpc.status_code`` (gRPC). A failed
request's span has status ERROR with the error message (every status but OK, 4xx included).

Parent: the W3C ``traceparent`` / ``tracestate`` of the REST headers or the gRPC metadata,
read by the global propagator (``OTEL_PROPAGATORS``; default tracecontext + baggage). Without
one, the request span starts a new trace.

Switch: the flag ``--enable_tracing`` (:attr:`ModelServerSettings.enable_tracing`), not the
presence of ``OTEL_*`` variables, because (1) those are often set for a whole pod or cluster
by an operator or sidecar, and a server must not change behaviour (and need an extra package)
because of a variable meant for another process; (2) with a flag, a missing SDK or exporter is
a clear error at startup instead of tracing that silently does nothing; (3) it matches
``--enable_batching`` and ``--enable_admin_api``. Everything else is OpenTelemetry's standard
environment (:func:`tracing_from_environment`): ``OTEL_TRACES_EXPORTER`` (``otlp``, the
default; ``console``; ``none``), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``grpc``, the
Python exporter's default, or ``http/protobuf``), ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` /
``HEADERS`` / ``CERTIFICATE`` / ``TIMEOUT`` (read by the exporter), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to "pyserving"),
``OTEL_TRACES_SAMPLER[_ARG]`` (default parentbased_always_on), ``OTEL_BSP_*`` (the batch span
processor), ``OTEL_SDK_DISABLED=true`` (tracing stays off, with a warning). A tracer provider
already installed in the process (``opentelemetry-instrument``, an embedding program) is used
as it is.

Cost: off, no request imports OpenTelemetry (the front ends import only this module's phase
names); each request reads one attribute (None) and tests a few ``None`` locals: the REST
worker job and the gRPC Predict of a tiny model measured the same as before, within noise
(17 and 21 us). On, spans are built when the request ends, from timestamps taken as the
request moves (a phase may begin on one thread and end on another; OpenTelemetry takes
explicit start and end times), and exported off the request's thread by the batch span
processor: the Python SDK costs about 10 us per span, so a traced predict costs about
60 us of span work (request span + 3 children) plus the processor thread's share of the CPU,
75 to 150 us per request on a 2-core machine. A request the sampler leaves out costs about
10 us (parsing ``traceparent``, the sampling decision) and is then served untraced; use
``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` to trace a fraction of busy traffic.

Threading: :class:`Tracing` is thread-safe. A :class:`RequestTrace` belongs to one request and
is handed from thread to thread with it (event loop -> worker -> loop, loop -> batch thread ->
loop), so its calls never overlap, except :meth:`RequestTrace.finish`, which may race (REST: the
loop answers 504 while the worker still runs): the first call wins, later ones do nothing.

Failure: tracing never fails a request: an exception while recording is logged and dropped.

Limits: the batching servable does not tell when a request's batch started, except through
``Ticket.started_at`` (a ``time.monotonic()`` value, read by
:meth:`PendingPredict.batch_started`) where the batch queue provides it; without it, and for
requests that wait for their batch on a thread (gRPC, routes), "model run" includes the wait
and there is no "queue" child. Spans that model code opens itself are not children of these
spans (no context is made current during the request).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from pyserving.servable.errors import Code, FailedPreconditionError, InvalidArgumentError
from pyserving.server.status import HTTP_STATUS

__all__ = [
    "Tracing", "RequestTrace", "tracing_from_environment", "DECODE", "QUEUE", "MODEL_RUN", "ENCODE",
]

_log = logging.getLogger(__name__)

#: The phase (child span) names.
DECODE, QUEUE, MODEL_RUN, ENCODE = "decode", "queue", "model run", "encode"

#: REST API label -> the route template naming the request span (``http.route``).
_REST_ROUTES = {
    "predict": "/v1/models/{model}:predict",
    "classify": "/v1/models/{model}:classify",
    "regress": "/v1/models/{model}:regress",
    "status": "/v1/models/{model}",
    "metadata": "/v1/models/{model}/metadata",
}
_MODEL_SERVICE_APIS = frozenset({"GetModelStatus", "HandleReloadConfigRequest"})
#: HTTP status -> the first canonical code answered with it (for answers built without an error).
_CODE_OF_HTTP = {status: code for code, status in reversed(list(HTTP_STATUS.items()))}
_DEFAULT_SERVICE_NAME = "pyserving"
_A = TypeVar("_A")
_R = TypeVar("_R")


class Tracing:
    """Starts the trace of each request; see the module docstring. One per server.

    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` (the SDK's in practice); with
    ``owned``, :meth:`shutdown` shuts it down (flushing its exporters). ``propagator``: reads
    the parent from headers / metadata (None: the global one). Raises ImportError when
    ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer_provider: Any, *, owned: bool = False, propagator: Any = None) -> None:
        from opentelemetry import propagate, trace

        from pyserving._version import __version__

        self._provider = tracer_provider
        self._owned = owned
        self._tracer = tracer_provider.get_tracer("pyserving", __version__)
        self._propagator = propagator if propagator is not None else propagate.get_global_textmap()
        self._server_kind = trace.SpanKind.SERVER
        self._in_context = trace.set_span_in_context
        self._error = lambda message: trace.Status(trace.StatusCode.ERROR, message)

    @property
    def tracer_provider(self) -> Any:
        return self._provider

    def start_rest(
        self, method: str, api: str, model: str, headers: Iterable[tuple[bytes, bytes]], arrived: float
    ) -> RequestTrace | None:
        """The trace of a REST request (``api``: "predict" ... "metadata") that arrived at
        ``arrived`` (a ``time.perf_counter()`` value); ``headers`` as ASGI gives them. None
        when the sampler leaves the request out (then it is served as if tracing were off)."""
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
        route = _REST_ROUTES.get(api, "/v1/models/{model}")
        attributes = {"http.request.method": method, "http.route": route}
        return self._start(f"{method} {route}", "REST", api, model, carrier, attributes, time.perf_counter() - arrived)

    def start_grpc(self, api: str, metadata: Iterable[tuple[str, Any]] | None) -> RequestTrace | None:
        """The trace of an RPC (``api``: the method name) with the call's invocation metadata;
        None when the sampler leaves it out."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}  # "-bin" values are bytes
        service = "tensorflow.serving." + ("ModelService" if api in _MODEL_SERVICE_APIS else "PredictionService")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": api}
        return self._start(f"{service}/{api}", "GRPC", api, "", carrier, attributes, 0.0)

    def _start(
        self,
        name: str,
        entrypoint: str,
        api: str,
        model: str,
        carrier: Mapping[str, str],
        attributes: dict[str, Any],
        elapsed_s: float,
    ) -> RequestTrace | None:
        try:
            parent = self._propagator.extract(carrier)
            epoch_ns, monotonic_ns = time.time_ns(), time.monotonic_ns()
            attributes["pyserving.entrypoint"] = entrypoint
            attributes["pyserving.api"] = api
            span = self._tracer.start_span(
                name, context=parent, kind=self._server_kind, attributes=attributes,
                start_time=epoch_ns - int(elapsed_s * 1e9),
            )
            if not span.is_recording():  # sampled out: nothing to record, nothing to end
                return None
        except Exception:  # noqa: BLE001 - tracing must never fail a request: serve it untraced
            _log.exception("Could not start the trace of a %s %s request; serving it untraced", entrypoint, api)
            return None
        return RequestTrace(self, span, epoch_ns - monotonic_ns, model, entrypoint == "REST")

    def shutdown(self) -> None:
        """Export what is pending and stop the exporters (only a provider this object owns)."""
        if self._owned:
            self._provider.shutdown()


class RequestTrace:
    """One request's span and phases; see the module docstring (threading: one thread at a
    time; :meth:`finish` once, the first call wins).

    ``model`` (the requested name until :meth:`finish` names the one that answered) and
    ``signature`` (set by the front end once the signature ran) are plain attributes.
    """

    __slots__ = ("_tracing", "_span", "_offset_ns", "_phases", "_finished", "_rest", "model", "signature")

    def __init__(self, tracing: Tracing, span: Any, offset_ns: int, model: str, rest: bool) -> None:
        self._tracing = tracing
        self._span = span
        self._offset_ns = offset_ns  # epoch ns - monotonic ns
        self._phases: list[tuple[str, int]] = []  # (phase, monotonic ns when it began)
        self._finished = threading.Lock()  # taken by the first finish(), never released
        self._rest = rest
        self.model = model
        self.signature = ""

    @property
    def span(self) -> Any:
        """The request's OpenTelemetry span (ended by :meth:`finish`)."""
        return self._span

    def mark(self, phase: str, at: float | None = None) -> None:
        """``phase`` begins now, or at ``at`` (a past ``time.monotonic()`` value, kept between
        the previous phase's start and now); the phase before it ends there. Marking the
        current phase again changes nothing."""
        phases = self._phases
        if phases and phases[-1][0] == phase:
            return
        now = time.monotonic_ns()
        when = now if at is None else min(now, int(at * 1e9))
        if phases and when < phases[-1][1]:
            when = phases[-1][1]
        phases.append((phase, when))

    def decoding(self, decode: Callable[[_A], _R], then: str = MODEL_RUN) -> Callable[[_A], _R]:
        """``decode`` marked as the decode phase, followed by ``then``."""

        def traced(signature: _A) -> _R:
            self.mark(DECODE)
            inputs = decode(signature)
            self.mark(then)
            return inputs

        return traced

    def ran(self, signature: str) -> None:
        """The model answered with ``signature``: the encode phase begins."""
        self.signature = signature
        self.mark(ENCODE)

    def batch_started(self, at: float | None) -> None:
        """The request waited in a batch queue (phase ``queue``) until ``at`` (a
        ``time.monotonic()`` value), then the batch ran it. ``at`` None (unknown): the queue
        phase is reported as the model run (which then includes the wait)."""
        phases = self._phases
        if at is not None:
            self.mark(MODEL_RUN, at)
        elif phases and phases[-1][0] == QUEUE:
            phases[-1] = (MODEL_RUN, phases[-1][1])

    def finish(self, status: str = "OK", message: str = "", *, model: str | None = None, version: int | None = None) -> None:
        """End the request: children for the phases, attributes, ERROR unless ``status`` is
        "OK" (a canonical code name). Only the first call counts. Never raises."""
        if not self._finished.acquire(blocking=False):
            return
        try:
            self._end(status, message, model if model is not None else self.model, version)
        except Exception:  # noqa: BLE001 - tracing must never fail a request
            _log.exception("Could not record the trace of a %s request for model %r", "REST" if self._rest else "gRPC", model)

    def settle(self, http_status: int) -> None:
        """REST: end the span with the answer's HTTP status if nothing finished it yet (an
        answer built without the worker: 504 after ``rest_api_timeout_in_ms``, 503 at shutdown)."""
        if self._finished.locked():
            return
        code = _CODE_OF_HTTP.get(http_status, Code.UNKNOWN)
        self.finish(code.name, f"answered HTTP {http_status} before the request finished")

    def _end(self, status: str, message: str, model: str, version: int | None) -> None:
        span = self._span
        end_ns = time.monotonic_ns()
        tracing, offset = self._tracing, self._offset_ns
        code = Code[status] if status in Code.__members__ else Code.UNKNOWN
        attributes: dict[str, Any] = {"pyserving.model": model, "pyserving.status": status}
        if version is not None:
            attributes["pyserving.model.version"] = version
        if self.signature:
            attributes["pyserving.signature"] = self.signature
        if self._rest:
            attributes["http.response.status_code"] = HTTP_STATUS.get(code, 500)
        else:
            attributes["rpc.grpc.status_code"] = int(code)
        span.set_attributes(attributes)
        if code is not Code.OK:
            span.set_status(tracing._error(message or status))
        phases = self._phases
        if phases:
            context = tracing._in_context(span)
            tracer = tracing._tracer
            for index, (phase, started) in enumerate(phases):
                ended = phases[index + 1][1] if index + 1 < len(phases) else end_ns
                child = tracer.start_span(phase, context=context, start_time=started + offset)
                child.end(end_time=ended + offset)
        span.end(end_time=end_ns + offset)


# -- the server's tracing, from OpenTelemetry's environment variables ----------------------------


def tracing_from_environment(*, set_global: bool = True) -> Tracing | None:
    """The server's :class:`Tracing` as the ``OTEL_*`` environment describes it (see the
    module docstring); None when ``OTEL_SDK_DISABLED`` is true.

    A tracer provider already installed globally is used (and not shut down by
    :meth:`Tracing.shutdown`); otherwise an SDK ``TracerProvider`` with a batch span
    processor per exporter is made and, with ``set_global``, installed globally (so spans
    that model code opens are exported too). Raises FailedPreconditionError when the
    SDK or the chosen exporter is not installed, InvalidArgumentError for an exporter or
    protocol it does not know. Call it once, at startup.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        _log.warning("--enable_tracing is set, but OTEL_SDK_DISABLED=true: requests are not traced")
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise _missing("OpenTelemetry's SDK", exc) from exc
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        _log.info("Tracing requests with the tracer provider already installed (%s)", type(current).__name__)
        return Tracing(current)
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters = [_exporter(name) for name in names if name != "none"]
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": _DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    _log.info(
        "Tracing requests: service %s, exporters %s",
        resource.attributes.get("service.name"), ", ".join(_describe(e) for e in exporters) or "none",
    )
    return Tracing(provider, owned=True)


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise InvalidArgumentError(
            f"OTEL_TRACES_EXPORTER must name otlp, console or none, got {name!r} (with --enable_tracing)"
        )
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip().lower()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
        else:
            raise InvalidArgumentError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {protocol!r} (with --enable_tracing)"
            )
    except ImportError as exc:
        raise _missing(f"the OTLP exporter ({protocol})", exc) from exc
    return OTLPSpanExporter()


def _describe(exporter: Any) -> str:
    endpoint = getattr(exporter, "_endpoint", None)
    return f"{type(exporter).__name__} to {endpoint}" if endpoint else type(exporter).__name__


def _missing(what: str, exc: ImportError) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"--enable_tracing needs {what}, which is not installed ({exc}); install it with: pip install 'pyserving[otel]'"
    )
