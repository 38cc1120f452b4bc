"""The gRPC servicers: TF Serving's PredictionService and ModelService over a DataPlane.

Import them from :mod:`grpc_server`, which registers them and runs the server.

A thin layer over :class:`~pyserving.server.data_plane.DataPlane`: every RPC parses its
request proto, makes one data-plane call and encodes the result. Errors are answered in
one place (:func:`_rpc`): a :class:`ServingError` becomes the gRPC status of the same
code with the message cut to 1024 characters (``status.grpc_message``); any other
exception is logged with its traceback and answered INTERNAL. No input can crash the
server.

The servicers are plain classes (not subclasses of the generated base classes) so that
importing this module loads neither TensorFlow nor its protos; they are imported once,
when a servicer is built (which may therefore take a while and raise ImportError).

Deadlines: an RPC whose client deadline has already passed when it starts running (it
waited in the thread pool) is answered DEADLINE_EXCEEDED without touching the model.
Predict hands the deadline to the data plane (as a ``time.monotonic()`` value), so a
request that waits for a batch past its deadline is dropped before the model runs it.
A model call already running when its deadline passes runs to the end; gRPC drops its
answer (TF Serving turns the deadline into a session timeout, which Python cannot do).

Tracing: with the data plane's :class:`~pyserving.server.tracing.Tracing` (``--enable_tracing``)
every RPC of a model (not HandleReloadConfigRequest) gets a span whose parent is the
``traceparent`` of its metadata; Predict, Classify, Regress and MultiInference mark their
decode / model run / encode phases. Off, an RPC reads one attribute more.

Threading and ownership: the servicers keep no per-request state and are safe to call
from any number of gRPC worker threads at once. They hold, never own, the DataPlane and
the ``reload_config`` callable, which runs on the RPC's worker thread; concurrent
ReloadConfig RPCs call it concurrently (nothing here serializes them).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import grpc

from pyserving.loaders.warmup import serialized_examples
from pyserving.servable.errors import Code, DeadlineExceededError, InvalidArgumentError, ServingError
from pyserving.server.api_protos import (
    classification_response,
    fill_classification,
    fill_regression,
    fill_spec,
    metadata_response,
    predict_response,
    regression_response,
    spec_from_proto,
    status_response,
)
from pyserving.server.data_plane import ClassifyResult, DataPlane, ModelSpec, RegressResult
from pyserving.server.request_events import RequestEvent, RequestObserver, notify
from pyserving.server.status import grpc_message, to_serving_error
from pyserving.server.tracing import DECODE, MODEL_RUN

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.server.tracing import RequestTrace

__all__ = ["PredictionServiceServicer", "ModelServiceServicer", "ReloadConfig"]

_log = logging.getLogger("pyserving.server.grpc_server")  # one logger for the whole gRPC front end

ReloadConfig = Callable[[Any], None]
_F = TypeVar("_F", bound=Callable[..., Any])


#: Code numbers equal gRPC's, so this is a renaming, not a second error table.
_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def _rpc(method: _F) -> _F:
    """Wrap one RPC: deadline check first, then every failure becomes exactly one gRPC status."""
    name = method.__name__

    observed = name in _OBSERVED_APIS
    phased = name in _PHASED_APIS  # the method takes the trace and marks its phases

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        observers = self._observers if observed else ()
        tracing = self._tracing if observed else None
        trace = None if tracing is None else tracing.start_grpc(name, context.invocation_metadata())
        started = time.perf_counter() if observers else 0.0
        remaining = context.time_remaining()  # no deadline: a very large number (or None)
        if remaining is not None and remaining <= 0:
            error: ServingError = DeadlineExceededError(
                f"{name}: the client's deadline passed before the request started running"
            )
        else:
            try:
                if trace is not None and phased:
                    response = method(self, request, context, trace)
                else:
                    response = method(self, request, context)
                if observers:
                    notify(observers, _event(name, request, response, None, started))
                if trace is not None:
                    model, version = _answered_by(name, request, response)
                    trace.finish(model=model, version=version)
                return response
            except ServingError as exc:
                error = exc
            except Exception as exc:  # a bug: report it, keep serving
                _log.exception("%s failed with an unexpected error; answering INTERNAL", name)
                error = to_serving_error(exc)
        if observers:
            notify(observers, _event(name, request, None, error, started))
        if trace is not None:
            trace.finish(error.code.name, error.message, model=_answered_by(name, request, None)[0])
        code = _GRPC_CODES.get(int(error.code), grpc.StatusCode.UNKNOWN)
        if code is grpc.StatusCode.OK:  # an error must never read as success
            code = grpc.StatusCode.UNKNOWN
        context.abort(code, grpc_message(error.message))

    return handler  # type: ignore[return-value]


#: The RPCs reported to request observers (metrics, request logging).
_OBSERVED_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata", "GetModelStatus"})
#: Requests the request log may keep (the others have no PredictionLog record type).
_LOGGED_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference"})
#: RPCs whose method takes the request's trace (``trace=``) and marks decode / model run / encode.
_PHASED_APIS = _LOGGED_APIS


def _answered_by(api: str, request: Any, response: Any) -> tuple[str, int | None]:
    """(model, version) that answered; without a response, (the requested model, None)."""
    spec = None
    if response is not None:
        if api == "MultiInference":
            spec = response.results[0].model_spec if response.results else None
        elif api != "GetModelStatus":
            spec = response.model_spec
    if spec is not None:
        return spec.name, spec.version.value
    tasks = getattr(request, "tasks", None)
    asked = tasks[0].model_spec if tasks else getattr(request, "model_spec", None)
    return (asked.name if asked is not None else ""), None


def _event(api: str, request: Any, response: Any, error: ServingError | None, started: float) -> RequestEvent:
    """The observers' view of one finished RPC (the model and version that answered)."""
    model, version = _answered_by(api, request, response)
    logged = api in _LOGGED_APIS
    return RequestEvent(
        model=model,
        version=version,
        api=api,
        entrypoint="GRPC",
        status="OK" if error is None else error.code.name,
        latency_s=time.perf_counter() - started,
        request=(lambda: request) if logged else None,
        response=(lambda: response) if logged and response is not None else None,
    )


#: A remaining time above this (about 31 years) means the client set no deadline.
_NO_DEADLINE_S = 1e9


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The RPC's deadline as a ``time.monotonic()`` value; None when the client set none."""
    remaining = context.time_remaining()
    if remaining is None or math.isinf(remaining) or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


def _spec(request: Any, data_plane: DataPlane | None = None, context: grpc.ServicerContext | None = None) -> ModelSpec:
    """The request's ModelSpec; for a route name, with the call's metadata as its headers
    (a route's rules and segment key read them)."""
    if not request.HasField("model_spec"):
        raise InvalidArgumentError("Missing ModelSpec")
    spec = spec_from_proto(request.model_spec)
    if data_plane is not None and context is not None and data_plane.is_route(spec.name):
        spec = _with_metadata(spec, context)
    return spec


def _with_metadata(spec: ModelSpec, context: grpc.ServicerContext) -> ModelSpec:
    metadata = context.invocation_metadata() or ()
    headers = {key.lower(): value for key, value in metadata if isinstance(value, str)}  # "-bin" keys are bytes
    return dataclasses.replace(spec, headers=headers)


def _decoded_examples(input_proto: Any, trace: RequestTrace | None) -> list[bytes]:
    """:func:`~pyserving.loaders.warmup.serialized_examples`, marked as the decode phase of ``trace`` (the model run follows)."""
    if trace is None:
        return serialized_examples(input_proto)
    trace.mark(DECODE)
    examples = serialized_examples(input_proto)
    trace.mark(MODEL_RUN)
    return examples


class PredictionServiceServicer:
    """``tensorflow.serving.PredictionService`` over a :class:`DataPlane`.

    ``tensor_content_outputs`` (``--enable_serialization_as_tensor_content``) encodes
    Predict outputs as packed ``tensor_content`` instead of typed ``*_val`` fields.
    """

    def __init__(
        self,
        data_plane: DataPlane,
        *,
        tensor_content_outputs: bool = False,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        from tensorflow_serving.apis import inference_pb2

        from pyserving.server import tensor_codec

        self._data_plane = data_plane
        self._observers = tuple(observers)
        self._tracing = data_plane.tracing  # None: requests are not traced
        self._tensor_content = tensor_content_outputs
        self._to_numpy = tensor_codec.to_numpy
        self._multi_inference_response = inference_pb2.MultiInferenceResponse

    @_rpc
    def Predict(self, request: Any, context: grpc.ServicerContext, trace: RequestTrace | None = None) -> Any:
        spec = _spec(request, self._data_plane, context)
        inputs = request.inputs
        to_numpy = self._to_numpy

        def decode(signature: Any) -> dict[str, Any]:
            return {name: to_numpy(tensor) for name, tensor in inputs.items()}

        result = self._data_plane.predict(
            spec, decode if trace is None else trace.decoding(decode), tuple(request.output_filter), _deadline(context)
        )
        if trace is not None:
            trace.ran(result.signature_name)
        return predict_response(result, tensor_content=self._tensor_content)

    @_rpc
    def Classify(self, request: Any, context: grpc.ServicerContext, trace: RequestTrace | None = None) -> Any:
        spec = _spec(request, self._data_plane, context)
        examples = _decoded_examples(request.input, trace)
        result = self._data_plane.classify(spec, examples)
        if trace is not None:
            trace.ran(result.signature_name)
        return classification_response(result)

    @_rpc
    def Regress(self, request: Any, context: grpc.ServicerContext, trace: RequestTrace | None = None) -> Any:
        spec = _spec(request, self._data_plane, context)
        examples = _decoded_examples(request.input, trace)
        result = self._data_plane.regress(spec, examples)
        if trace is not None:
            trace.ran(result.signature_name)
        return regression_response(result)

    @_rpc
    def MultiInference(self, request: Any, context: grpc.ServicerContext, trace: RequestTrace | None = None) -> Any:
        # As TF Serving: a task without a model_spec has the empty spec (no "Missing ModelSpec").
        tasks = [(spec_from_proto(task.model_spec), task.method_name) for task in request.tasks]
        if tasks and self._data_plane.is_route(tasks[0][0].name):
            tasks = [(_with_metadata(spec, context), method) for spec, method in tasks]
        examples = _decoded_examples(request.input, trace)
        results = self._data_plane.multi_inference(tasks, examples)
        if trace is not None:
            trace.ran(",".join(result.signature_name for result in results))
        response = self._multi_inference_response()
        for result in results:
            entry = response.results.add()
            fill_spec(entry.model_spec, result)
            if isinstance(result, ClassifyResult):
                fill_classification(entry.classification_result, result)
            elif isinstance(result, RegressResult):
                fill_regression(entry.regression_result, result)
        return response

    @_rpc
    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = _spec(request, self._data_plane, context)
        result = self._data_plane.metadata(spec, tuple(request.metadata_field))
        return metadata_response(result.id, result.signature_def_map)


class ModelServiceServicer:
    """``tensorflow.serving.ModelService``: model status and config reload.

    ``reload_config(config)`` receives the request's ``ModelServerConfig`` (always a
    ``model_config_list``; anything else is refused here, as TF Serving does), blocks
    until the reload is done and raises ``ServingError`` on failure. The outcome is the
    RPC status; on success the response's ``status`` is OK. (On failure gRPC sends no
    response body, so the ``status`` field can only ever carry OK to a client.)
    ``metric_names``: pyserving keeps no TF monitoring counters, so every requested
    metric is answered with ``int64_value_increase: 0``.
    """

    def __init__(
        self, data_plane: DataPlane, reload_config: ReloadConfig, observers: Sequence[RequestObserver] = ()
    ) -> None:
        from tensorflow_serving.apis import model_management_pb2

        self._data_plane = data_plane
        self._observers = tuple(observers)
        self._tracing = data_plane.tracing  # None: requests are not traced
        self._reload_config = reload_config
        self._reload_response = model_management_pb2.ReloadConfigResponse

    @_rpc
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return status_response(self._data_plane.status(_spec(request, self._data_plane, context)))

    @_rpc
    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise InvalidArgumentError(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        for index, entry in enumerate(config.model_config_list.config):
            _log.info(
                "Reload config entry %d: name=%s base_path=%s platform=%s",
                index, entry.name, entry.base_path, entry.model_platform,
            )
        try:
            self._reload_config(config)
        except ServingError as exc:
            _log.error("ReloadConfig failed: %s", exc.message)
            raise
        response = self._reload_response()
        response.status.error_code = int(Code.OK)
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=0)
        return response
