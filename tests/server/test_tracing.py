"""OpenTelemetry tracing of model requests (:mod:`pyserving.server.tracing`).

Traced requests are exported to the SDK's in-memory exporter (a synchronous span processor,
so a request's spans are there once its answer is): REST over real HTTP against an
in-process server, gRPC through the servicers (with a fake ServicerContext) and once
through a real gRPC server, all over a real :class:`DataPlane` with a StaticServingCore.
Checked: one request span with decode / (queue) / model run / encode children that follow
one another inside it, its attributes, a W3C ``traceparent`` making it a child of the
caller's span, errors marking it, the 504 answered without the worker, and — in a
subprocess — that with tracing off a request never imports OpenTelemetry. Also the
configuration from ``OTEL_*`` variables and the ``--enable_tracing`` flag.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
import requests

pytest.importorskip("opentelemetry.sdk", reason="the tracing tests need opentelemetry-sdk (pip install 'pyserving[otel]')")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from pyserving.loaders.batching import BatchingServable  # noqa: E402
from pyserving.loaders.batching_params import BatchingParameters  # noqa: E402
from pyserving.servable.batcher import BatchScheduler, Ticket  # noqa: E402
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError  # noqa: E402
from pyserving.servable.ids import ServableId  # noqa: E402
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec  # noqa: E402
from pyserving.server.data_plane import DataPlane  # noqa: E402
from pyserving.server.rest_server import RestServerHandle, RestServerOptions, start_rest_server  # noqa: E402
from pyserving.server.tracing import Tracing, tracing_from_environment  # noqa: E402
from pyserving.testing import HalfPlusTwoServable, StaticServingCore  # noqa: E402

pytestmark = pytest.mark.slow  # starts servers; gRPC and classify import TensorFlow's protos

WAIT_S = 30.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

# -- the models -------------------------------------------------------------------------------

_VEC = TensorSpec(DType.FLOAT, (None,))
_GATED = {"gated": SignatureSpec({"x": _VEC}, {"y": _VEC}), "boom": SignatureSpec({"x": _VEC}, {"y": _VEC})}


class Half(HalfPlusTwoServable):
    """HalfPlusTwo plus "boom" (raises) and "gated" (waits for ``gate``; ``entered`` set then)."""

    def __init__(self) -> None:
        super().__init__(extra_signatures=_GATED)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def compute(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature_name == "boom":
            raise RuntimeError("kaput")
        if signature_name == "gated":
            self.entered.set()
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
            return {"y": self.half_plus(inputs["x"])}
        return super().compute(signature_name, inputs)


class _AnsweredTicket:
    """A batch-queue ticket already answered, whose batch started at ``started_at`` (what
    ``Ticket.started_at`` reports where the batch queue provides it)."""

    def __init__(self, outputs: dict[str, np.ndarray], started_at: float) -> None:
        self.started_at = started_at
        self._outputs = outputs

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def result(self) -> dict[str, np.ndarray]:
        return self._outputs

    def give_up(self) -> None:
        pass


class StampedBatching(HalfPlusTwoServable):
    """A "batching" servable (it has ``submit_run``) whose tickets tell when their batch began
    (here: at once, on the caller's thread)."""

    def submit_run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
        *, deadline: float | None = None,
    ) -> _AnsweredTicket:
        started = time.monotonic()
        return _AnsweredTicket(self.run(signature_name, inputs, output_filter), started)


# -- fixtures ---------------------------------------------------------------------------------


class Traced:
    """A Tracing over an SDK provider that exports every span to memory, synchronously."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(self.provider, owned=True)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def one_request(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The only request span, and its children in start order (checked to follow one
        another inside it)."""
        spans = self.spans()
        roots = [s for s in spans if s.kind is SpanKind.SERVER]
        assert len(roots) == 1, [s.name for s in spans]
        root = roots[0]
        children = sorted((s for s in spans if s is not root), key=lambda s: s.start_time)
        assert len(children) == len(spans) - 1
        for child in children:
            assert child.parent is not None and child.parent.span_id == root.context.span_id
            assert child.context.trace_id == root.context.trace_id
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time, child.name
        for before, after in zip(children, children[1:]):
            assert before.end_time == after.start_time, (before.name, after.name)
        return root, children

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def traced() -> Iterator[Traced]:
    fixture = Traced()
    yield fixture
    fixture.close()


class Rest:
    def __init__(self, handle: RestServerHandle, half: Half) -> None:
        self.handle = handle
        self.half = half

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.handle.port}/v1/models/{path}"

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(self.url(path), json=body, headers=headers, timeout=WAIT_S)


def _core(half: HalfPlusTwoServable, scheduler: BatchScheduler | None = None) -> StaticServingCore:
    servables: dict[ServableId, Any] = {ServableId("half", 3): half, ServableId("stamped", 1): StampedBatching()}
    if scheduler is not None:
        servables[ServableId("batched", 1)] = BatchingServable(
            HalfPlusTwoServable(), scheduler, BatchingParameters(), name="batched 1"
        )
    return StaticServingCore(servables)


@contextlib.contextmanager
def rest_server(traced: Traced, timeout_ms: int = 30000) -> Iterator[Rest]:
    half = Half()
    scheduler = BatchScheduler(1, name="tracing_batch")
    core = _core(half, scheduler)
    options = RestServerOptions(host="127.0.0.1", port=0, num_threads=2, timeout_ms=timeout_ms)
    handle = start_rest_server(DataPlane(core, tracing=traced.tracing), options)
    try:
        yield Rest(handle, half)
    finally:
        half.gate.set()
        handle.stop()
        core.servable("batched", 1).close()
        scheduler.stop()


@pytest.fixture
def rest(traced: Traced) -> Iterator[Rest]:
    with rest_server(traced) as server:
        yield server


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# == REST =======================================================================================


def test_a_rest_predict_is_one_span_with_decode_model_run_and_encode(rest: Rest, traced: Traced) -> None:
    response = rest.post("half:predict", {"instances": [1.0, 2.0]})
    assert response.status_code == 200 and response.json() == {"predictions": [2.5, 3.0]}
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run", "encode"]
    assert root.name == "POST /v1/models/{model}:predict"
    assert root.parent is None  # no traceparent: a new trace
    assert root.status.status_code is StatusCode.UNSET
    assert _attributes(root) == {
        "http.request.method": "POST",
        "http.route": "/v1/models/{model}:predict",
        "http.response.status_code": 200,
        "pyserving.entrypoint": "REST",
        "pyserving.api": "predict",
        "pyserving.model": "half",
        "pyserving.model.version": 3,
        "pyserving.signature": "serving_default",
        "pyserving.status": "OK",
    }


def test_a_traceparent_header_makes_the_request_span_a_child_of_the_callers(rest: Rest, traced: Traced) -> None:
    assert rest.post("half:predict", {"instances": [1.0]}, traceparent=TRACEPARENT).status_code == 200
    root, _ = traced.one_request()
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and root.parent.is_remote
    assert format(root.parent.span_id, "016x") == PARENT_ID


def test_a_failing_rest_request_marks_its_span(rest: Rest, traced: Traced) -> None:
    response = rest.post("half:predict", {"signature_name": "boom", "instances": [1.0]})
    assert response.status_code == 500
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run"]  # it failed while the model ran
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "RuntimeError: kaput"
    attributes = _attributes(root)
    assert attributes["pyserving.status"] == "INTERNAL" and attributes["http.response.status_code"] == 500
    traced.exporter.clear()

    assert rest.post("nothing:predict", {"instances": [1.0]}).status_code == 404
    root, _ = traced.one_request()
    assert root.status.status_code is StatusCode.ERROR
    attributes = _attributes(root)
    assert attributes["pyserving.model"] == "nothing" and "pyserving.model.version" not in attributes
    assert attributes["pyserving.status"] == "NOT_FOUND" and attributes["http.response.status_code"] == 404


def test_a_rest_timeout_ends_the_span_with_deadline_exceeded(traced: Traced) -> None:
    """The loop answers 504 while the model still runs: the span ends then, as the client saw it;
    the worker finishing later changes nothing."""
    with rest_server(traced, timeout_ms=500) as rest:
        response = rest.post("half:predict", {"signature_name": "gated", "instances": [1.0]})
        assert response.status_code == 504
        assert rest.half.entered.is_set()
        root, _ = traced.one_request()
        assert _attributes(root)["pyserving.status"] == "DEADLINE_EXCEEDED"
        assert _attributes(root)["http.response.status_code"] == 504
        assert root.status.status_code is StatusCode.ERROR
        rest.half.gate.set()
        assert rest.post("half:predict", {"instances": [1.0]}).status_code == 200  # the worker is free again
        assert len([s for s in traced.spans() if s.kind is SpanKind.SERVER]) == 2


def test_status_metadata_and_regress_spans(rest: Rest, traced: Traced) -> None:
    assert requests.get(rest.url("half"), timeout=WAIT_S).status_code == 200
    root, children = traced.one_request()
    assert root.name == "GET /v1/models/{model}" and children == []
    assert _attributes(root)["pyserving.api"] == "status"
    traced.exporter.clear()

    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 4.0}]}
    assert rest.post("half:regress", body).json() == {"results": [4.0]}
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run", "encode"]
    assert _attributes(root)["pyserving.signature"] == "regress_x_to_y"


def test_a_queued_predict_has_a_queue_span_ending_when_its_batch_began(rest: Rest, traced: Traced) -> None:
    """Predicts of a batching version wait for their batch on the event loop: the queue span
    lasts from the decoded request to the batch's start (as the ticket reports it)."""
    assert rest.post("stamped:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "queue", "model run", "encode"]
    assert _attributes(root)["pyserving.model"] == "stamped"


_TICKET_TELLS_START = hasattr(Ticket, "started_at")


def test_a_predict_of_the_batching_servable(rest: Rest, traced: Traced) -> None:
    """With the real batch queue: a queue span where the queue reports when the batch began
    (``Ticket.started_at``); without it, the model run includes the wait."""
    assert rest.post("batched:predict", {"instances": [2.0, 4.0]}).json() == {"predictions": [3.0, 4.0]}
    root, children = traced.one_request()
    expected = ["decode", "queue", "model run", "encode"] if _TICKET_TELLS_START else ["decode", "model run", "encode"]
    assert [c.name for c in children] == expected
    assert _attributes(root)["pyserving.model"] == "batched"
    assert _attributes(root)["pyserving.signature"] == "serving_default"


def test_a_request_the_sampler_leaves_out_is_served_untraced() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, owned=True)
    assert tracing.start_grpc("Predict", ()) is None
    half = Half()
    options = RestServerOptions(host="127.0.0.1", port=0, num_threads=1)
    handle = start_rest_server(DataPlane(_core(half), tracing=tracing), options)
    try:
        url = f"http://127.0.0.1:{handle.port}/v1/models/half:predict"
        assert requests.post(url, json={"instances": [1.0]}, timeout=WAIT_S).json() == {"predictions": [2.5]}
    finally:
        handle.stop()
        provider.shutdown()
    assert exporter.get_finished_spans() == ()


# == phases ======================================================================================


def _later_than(ns: int) -> float:
    """A ``time.monotonic()`` value after ``ns`` (monotonic ns): the clock only moves on."""
    while time.monotonic_ns() <= ns:
        pass
    return time.monotonic()


def test_the_queue_ends_and_the_model_run_begins_when_the_batch_began(traced: Traced) -> None:
    trace = traced.tracing.start_grpc("Predict", ())
    assert trace is not None
    trace.mark("decode")
    trace.mark("queue")
    began = _later_than(time.monotonic_ns())
    _later_than(int(began * 1e9))
    trace.batch_started(began)
    trace.ran("serving_default")
    trace.finish(model="m", version=1)
    _, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "queue", "model run", "encode"]
    offset = children[0].start_time - trace._phases[0][1]  # epoch ns - monotonic ns of this trace
    assert children[2].start_time == int(began * 1e9) + offset


def test_an_unknown_batch_start_makes_the_wait_part_of_the_model_run(traced: Traced) -> None:
    trace = traced.tracing.start_grpc("Predict", ())
    assert trace is not None
    trace.mark("decode")
    trace.mark("queue")
    trace.batch_started(None)
    trace.ran("serving_default")
    trace.finish()
    trace.finish("INTERNAL", "a second finish changes nothing")
    trace.mark("decode")  # nor does a mark after the end
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run", "encode"]
    assert root.status.status_code is StatusCode.UNSET


def test_a_time_outside_the_current_phase_is_kept_inside_it(traced: Traced) -> None:
    trace = traced.tracing.start_grpc("Predict", ())
    assert trace is not None
    trace.mark("decode")
    trace.mark("queue", at=0.0)  # before decode began: queue begins when decode began
    trace.mark("model run", at=time.monotonic() + 3600)  # in the future: now
    trace.finish()
    _, children = traced.one_request()
    decode, queue, run = children
    assert decode.start_time == decode.end_time == queue.start_time
    assert queue.end_time == run.start_time <= run.end_time


# == gRPC =======================================================================================


class _Context:
    """A ServicerContext: no deadline, the given invocation metadata; abort raises."""

    def __init__(self, metadata: Sequence[tuple[str, Any]] = ()) -> None:
        self.metadata = tuple(metadata)
        self.aborted: tuple[Any, str] | None = None

    def time_remaining(self) -> None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata

    def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def _predict_request(model: str, values: Sequence[float], signature: str = "") -> Any:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=list(values))
    tensor.tensor_shape.dim.add(size=len(values))
    request.inputs["x"].CopyFrom(tensor)
    return request


@pytest.fixture
def servicer(traced: Traced) -> Any:
    from pyserving.server.grpc_servicers import PredictionServiceServicer

    return PredictionServiceServicer(DataPlane(_core(Half()), tracing=traced.tracing))


def test_a_grpc_predict_is_one_span_with_rpc_attributes(servicer: Any, traced: Traced) -> None:
    context = _Context([("traceparent", TRACEPARENT), ("blob-bin", b"\x00")])
    response = servicer.Predict(_predict_request("half", [2.0]), context)
    assert list(response.outputs["y"].float_val) == [3.0]
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run", "encode"]
    assert root.name == "tensorflow.serving.PredictionService/Predict"
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    assert _attributes(root) == {
        "rpc.system": "grpc",
        "rpc.service": "tensorflow.serving.PredictionService",
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
        "pyserving.entrypoint": "GRPC",
        "pyserving.api": "Predict",
        "pyserving.model": "half",
        "pyserving.model.version": 3,
        "pyserving.signature": "serving_default",
        "pyserving.status": "OK",
    }


def test_a_failing_rpc_marks_its_span(servicer: Any, traced: Traced) -> None:
    with pytest.raises(RuntimeError, match="aborted"):
        servicer.Predict(_predict_request("nothing", [1.0]), _Context())
    root, children = traced.one_request()
    assert children == []  # not found before decoding
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "Servable not found for request: Latest(nothing)"
    attributes = _attributes(root)
    assert attributes["pyserving.status"] == "NOT_FOUND" and attributes["rpc.grpc.status_code"] == 5
    assert attributes["pyserving.model"] == "nothing"
    traced.exporter.clear()

    with pytest.raises(RuntimeError, match="aborted"):
        servicer.Predict(_predict_request("half", [1.0], "boom"), _Context())
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run"]
    assert _attributes(root)["rpc.grpc.status_code"] == 13


def test_grpc_classify_and_model_status_spans(traced: Traced) -> None:
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, get_model_status_pb2

    from pyserving.server.grpc_servicers import ModelServiceServicer, PredictionServiceServicer

    plane = DataPlane(_core(Half()), tracing=traced.tracing)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half"
    request.model_spec.signature_name = "classify_x_to_y"
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    request.input.example_list.examples.append(example)
    PredictionServiceServicer(plane).Classify(request, _Context())
    root, children = traced.one_request()
    assert [c.name for c in children] == ["decode", "model run", "encode"]
    assert _attributes(root)["pyserving.signature"] == "classify_x_to_y"
    traced.exporter.clear()

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "half"
    ModelServiceServicer(plane, lambda config: None).GetModelStatus(status, _Context())
    root, children = traced.one_request()
    assert root.name == "tensorflow.serving.ModelService/GetModelStatus" and children == []
    assert _attributes(root)["pyserving.model"] == "half"


def test_traceparent_metadata_through_a_real_grpc_server(traced: Traced) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from pyserving.server.grpc_server import GrpcServerOptions, start_grpc_server

    plane = DataPlane(_core(Half()), tracing=traced.tracing)
    handle = start_grpc_server(plane, lambda config: None, GrpcServerOptions(host="127.0.0.1", port=0, max_threads=2))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(_predict_request("half", [1.0]), timeout=WAIT_S, metadata=[("traceparent", TRACEPARENT)])
    finally:
        handle.stop(0)
    root, children = traced.one_request()
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert [c.name for c in children] == ["decode", "model run", "encode"]


# == off =========================================================================================

_OFF_SCRIPT = f"""
import sys, urllib.request
from tensorflow_serving.apis import predict_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from pyserving.servable.ids import ServableId
from pyserving.server.data_plane import DataPlane
from pyserving.server.grpc_servicers import PredictionServiceServicer
from pyserving.server.rest_server import RestServerOptions, start_rest_server
from pyserving.testing import HalfPlusTwoServable, StaticServingCore

plane = DataPlane(StaticServingCore({{ServableId("half", 1): HalfPlusTwoServable()}}))
handle = start_rest_server(plane, RestServerOptions(host="127.0.0.1", port=0, num_threads=1))
try:
    request = urllib.request.Request(
        f"http://127.0.0.1:{{handle.port}}/v1/models/half:predict", data=b'{{"instances": [1.0]}}',
        headers={{"traceparent": "{TRACEPARENT}"}}, method="POST",
    )
    assert urllib.request.urlopen(request, timeout=30).read() == b'{{"predictions":[2.5]}}'
finally:
    handle.stop()

class Context:
    def time_remaining(self): return None
    def invocation_metadata(self): return (("traceparent", "{TRACEPARENT}"),)
    def abort(self, code, details): raise RuntimeError(details)

grpc_request = predict_pb2.PredictRequest()
grpc_request.model_spec.name = "half"
tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
tensor.tensor_shape.dim.add(size=1)
grpc_request.inputs["x"].CopyFrom(tensor)
assert list(PredictionServiceServicer(plane).Predict(grpc_request, Context()).outputs["y"].float_val) == [2.5]
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""


def test_with_tracing_off_a_request_never_imports_opentelemetry() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _OFF_SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# == configuration =================================================================================


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _processors(tracing: Tracing) -> list[Any]:
    return list(tracing.tracer_provider._active_span_processor._span_processors)


def test_configuration_from_the_environment(otel_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    def exporters() -> list[type]:
        tracing = tracing_from_environment(set_global=False)
        assert tracing is not None
        try:
            return [type(p.span_exporter) for p in _processors(tracing)]
        finally:
            tracing.shutdown()

    assert exporters() == [GrpcExporter]  # OTLP over gRPC by default
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert exporters() == [HttpExporter]
    otel_env.setenv("OTEL_TRACES_EXPORTER", "console,none")
    assert exporters() == [ConsoleSpanExporter]
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert exporters() == []

    tracing = tracing_from_environment(set_global=False)
    assert tracing is not None
    assert tracing.tracer_provider.resource.attributes["service.name"] == "pyserving"
    otel_env.setenv("OTEL_SERVICE_NAME", "ranker")
    named = tracing_from_environment(set_global=False)
    assert named is not None and named.tracer_provider.resource.attributes["service.name"] == "ranker"

    otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing_from_environment(set_global=False) is None


def test_configuration_errors(otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(InvalidArgumentError, match="OTEL_TRACES_EXPORTER must name otlp, console or none, got 'zipkin'"):
        tracing_from_environment(set_global=False)
    otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(InvalidArgumentError, match="must be grpc or http/protobuf, got 'http/json'"):
        tracing_from_environment(set_global=False)
    otel_env.delenv("OTEL_EXPORTER_OTLP_PROTOCOL")
    otel_env.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(FailedPreconditionError, match=r"pip install 'pyserving\[otel\]'"):
        tracing_from_environment(set_global=False)
    otel_env.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(FailedPreconditionError, match="needs OpenTelemetry's SDK"):
        tracing_from_environment(set_global=False)


def test_the_enable_tracing_flag_turns_it_on_in_the_settings() -> None:
    from pyserving.server.flags import parse_model_server_args
    from pyserving.server.main import settings_from_flags

    base = ["--model_name=m", "--model_base_path=/models/m"]
    assert not settings_from_flags(parse_model_server_args(base)).enable_tracing
    assert settings_from_flags(parse_model_server_args([*base, "--enable_tracing"])).enable_tracing


# == the real binary =================================================================================


def test_the_binary_traces_a_request_to_the_console_exporter(tmp_path: Any) -> None:
    """``--enable_tracing`` with ``OTEL_TRACES_EXPORTER=console``: the spans of a REST predict
    carrying a traceparent are printed (at the latest when the server shuts down)."""
    from tests.support.admin_client import write_offset_model
    from tests.support.server_process import ServerProcess, free_port

    base = write_offset_model(tmp_path / "scaler", 100, [1])
    rest_port = free_port()
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "traced-server"}
    args = [f"--port={free_port()}", f"--rest_api_port={rest_port}", "--enable_tracing",
            "--model_name=scaler", f"--model_base_path={base}"]
    with ServerProcess(args, env=env) as server:
        assert server.wait_for_output("Exporting HTTP/REST API", WAIT_S * 3), server.output
        response = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/scaler:predict", json={"instances": [1.0]},
                                 headers={"traceparent": TRACEPARENT}, timeout=WAIT_S)
        assert response.json() == {"predictions": [101.0]}
        assert server.stop() == 0  # the shutdown exports what is pending
    output = server.output
    assert f'"trace_id": "0x{TRACE_ID}"' in output, output
    for name in ("POST /v1/models/{model}:predict", "decode", "model run", "encode"):
        assert f'"name": "{name}"' in output, name
    assert '"service.name": "traced-server"' in output


def test_the_binary_refuses_to_start_with_an_unknown_exporter(tmp_path: Any) -> None:
    from tests.support.admin_client import write_offset_model
    from tests.support.server_process import ServerProcess, free_port

    base = write_offset_model(tmp_path / "scaler", 100, [1])
    args = [f"--port={free_port()}", "--rest_api_port=0", "--enable_tracing", "--model_name=scaler",
            f"--model_base_path={base}"]
    with ServerProcess(args, env={"OTEL_TRACES_EXPORTER": "zipkin"}) as server:
        assert server.wait_exit(WAIT_S * 3) == 1
    assert "Failed to start server. Error: OTEL_TRACES_EXPORTER must name otlp, console or none, got 'zipkin'" in (
        server.output
    )
