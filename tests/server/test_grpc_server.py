"""The gRPC front end, driven through TF Serving's official stubs against a real in-process server.

The server runs over a real :class:`DataPlane` whose ServingCore is a small fake (a dict of
ServableId -> servable), so every check here is about the gRPC layer: parsing, routing of
errors to status codes, response encoding, health, deadlines and life cycle.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Iterator, Mapping, Sequence

import grpc
import numpy as np
import pytest

from pyserving.servable.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
    UnknownError,
)
from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, DType, SignatureSpec, TensorSpec
from pyserving.servable.state import ManagerState, ServableState
from pyserving.server.data_plane import DataPlane
from pyserving.server.readiness import Readiness
from pyserving.server.grpc_server import (
    HEALTH_SERVICES,
    GrpcServerHandle,
    GrpcServerOptions,
    PredictionServiceServicer,
    start_grpc_server,
)
from pyserving.testing import HalfPlusTwoServable, StaticServingCore

pytestmark = pytest.mark.slow  # imports TensorFlow's protos and starts servers

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow.core.example import example_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

_NOT_FOUND = grpc.StatusCode.NOT_FOUND
_INVALID = grpc.StatusCode.INVALID_ARGUMENT

# -- the fake model and core -----------------------------------------------------------

_VEC = (None,)
#: This module's signatures, on top of HalfPlusTwoServable's serving_default, classify_x_to_y, ...
_SIGNATURES = {
    "greet": SignatureSpec({"name": TensorSpec(DType.STRING, _VEC)}, {"greeting": TensorSpec(DType.STRING, _VEC)}),
    "two_outputs": SignatureSpec(
        {"x": TensorSpec(DType.FLOAT, _VEC)},
        {"double": TensorSpec(DType.FLOAT, _VEC), "square": TensorSpec(DType.FLOAT, _VEC)},
    ),
    "boom": SignatureSpec({"x": TensorSpec(DType.FLOAT, _VEC)}, {"y": TensorSpec(DType.FLOAT, _VEC)}),
    "classify": SignatureSpec(
        {"inputs": TensorSpec(DType.STRING, _VEC)},
        {"classes": TensorSpec(DType.STRING, (None, 2)), "scores": TensorSpec(DType.FLOAT, (None, 2))},
        method_name=CLASSIFY_METHOD,
    ),
    "scores_only": SignatureSpec(
        {"inputs": TensorSpec(DType.STRING, _VEC)},
        {"scores": TensorSpec(DType.FLOAT, (None, 2))},
        method_name=CLASSIFY_METHOD,
    ),
    "bad_classify": SignatureSpec(
        {"inputs": TensorSpec(DType.STRING, _VEC)},
        {"scores": TensorSpec(DType.FLOAT, _VEC)},
        method_name=CLASSIFY_METHOD,
    ),
    "regress": SignatureSpec(
        {"inputs": TensorSpec(DType.STRING, _VEC)},
        {"outputs": TensorSpec(DType.FLOAT, _VEC)},
        method_name=REGRESS_METHOD,
    ),
}


class HalfPlusTwo(HalfPlusTwoServable):
    """y = 0.5 * x + 2, plus string, two-output, failing, classify (p = x / 10, labels neg/pos)
    and regress (x + bias) signatures."""

    def __init__(self) -> None:
        super().__init__(extra_signatures=_SIGNATURES)

    def compute(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature_name == "boom":
            raise RuntimeError("kaput")
        if signature_name == "greet":
            return {"greeting": np.array([b"hello " + n for n in inputs["name"]], dtype=object)}
        if signature_name == "two_outputs":
            return {"double": inputs["x"] * 2, "square": inputs["x"] * inputs["x"]}
        return super().compute(signature_name, inputs)

    def classify(self, signature_name: str, serialized: Sequence[bytes]) -> dict[str, np.ndarray]:
        if signature_name not in ("classify", "scores_only", "bad_classify"):
            return super().classify(signature_name, serialized)
        p = self.feature_values(serialized, "x", 0.0) / 10
        scores = np.stack([1 - p, p], axis=1)
        if signature_name == "scores_only":
            return {"scores": scores}
        if signature_name == "bad_classify":
            return {"scores": p}
        labels = np.array([[b"neg", b"pos"]] * len(p), dtype=object)
        return {"classes": labels, "scores": scores}

    def regress(self, signature_name: str, serialized: Sequence[bytes]) -> np.ndarray:
        if signature_name != "regress":
            return super().regress(signature_name, serialized)
        return self.feature_values(serialized, "x", 0.0) + self.feature_values(serialized, "bias", 0.0)


def _core(servable: HalfPlusTwo) -> StaticServingCore:
    """Versions 1 and 2 of "half" (one servable), two labels, and a version 3 that failed to load."""
    states = [
        ServableState(ServableId("half", 1), ManagerState.AVAILABLE),
        ServableState(ServableId("half", 3), ManagerState.END, UnknownError("Loading half 3 failed: bad file")),
        ServableState(ServableId("half", 2), ManagerState.AVAILABLE),
    ]
    return StaticServingCore(
        {ServableId("half", 1): servable, ServableId("half", 2): servable},
        labels={"half": {"stable": 1, "canary": 2}},
        states={"half": states},
    )


class ReloadRecorder:
    def __init__(self) -> None:
        self.configs: list[Any] = []

    def __call__(self, config: Any) -> None:
        self.configs.append(config)
        if any(entry.name == "bad" for entry in config.model_config_list.config):
            raise FailedPreconditionError("model bad: base path /nowhere does not exist")


# -- fixtures ------------------------------------------------------------------------------


class Env:
    def __init__(self, handle: GrpcServerHandle, servable: HalfPlusTwo, reload: ReloadRecorder) -> None:
        self.handle = handle
        self.servable = servable
        self.reload = reload
        self.channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


def _start(options: GrpcServerOptions) -> tuple[GrpcServerHandle, HalfPlusTwo, ReloadRecorder]:
    servable, reload = HalfPlusTwo(), ReloadRecorder()
    return start_grpc_server(DataPlane(_core(servable)), reload, options), servable, reload


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    handle, servable, reload = _start(GrpcServerOptions(host="127.0.0.1", port=0, max_threads=4))
    environment = Env(handle, servable, reload)
    try:
        yield environment
    finally:
        environment.channel.close()
        handle.stop(grace_s=None)


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the shared server, it still answers a good request."""
    yield
    if "env" in request.fixturenames:
        shared: Env = request.getfixturevalue("env")
        assert shared.predict.Predict(_predict_request([1.0]), timeout=30).outputs["y"].float_val == [2.5]


def _float_tensor(values: Sequence[float], shape: Sequence[int] | None = None) -> Any:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=list(values))
    for dim in shape if shape is not None else [len(values)]:
        tensor.tensor_shape.dim.add(size=dim)
    return tensor


def _predict_request(x: Sequence[float] | None = None, name: str = "half", **spec: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if x is not None:
        request.inputs["x"].CopyFrom(_float_tensor(x))
    return request


def _error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value


def _example(**features: float) -> Any:
    example = example_pb2.Example()
    for key, value in features.items():
        example.features.feature[key].float_list.value.append(value)
    return example


# -- Predict -------------------------------------------------------------------------------


def test_predict_values_and_response_model_spec(env: Env) -> None:
    response = env.predict.Predict(_predict_request([1.0, 2.0, 5.0]), timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [3]
    assert response.model_spec.name == "half"
    assert response.model_spec.version.value == 2  # latest
    assert response.model_spec.signature_name == "serving_default"


def test_predict_string_signature(env: Env) -> None:
    request = _predict_request(signature_name="greet")
    request.inputs["name"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[b"ann", b"bob"], tensor_shape={"dim": [{"size": 2}]}
        )
    )
    response = env.predict.Predict(request, timeout=30)
    assert list(response.outputs["greeting"].string_val) == [b"hello ann", b"hello bob"]
    assert response.model_spec.signature_name == "greet"


def test_output_filter(env: Env) -> None:
    request = _predict_request([3.0], signature_name="two_outputs")
    assert sorted(env.predict.Predict(request, timeout=30).outputs) == ["double", "square"]
    request.output_filter.append("square")
    response = env.predict.Predict(request, timeout=30)
    assert list(response.outputs) == ["square"] and list(response.outputs["square"].float_val) == [9.0]
    request.output_filter[:] = ["nope"]
    error = _error(env.predict.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("output tensor alias not found in signature: nope")


def test_version_and_label_routing(env: Env) -> None:
    def served_version(**spec: Any) -> int:
        return env.predict.Predict(_predict_request([0.0], **spec), timeout=30).model_spec.version.value

    assert (served_version(), served_version(version=1)) == (2, 1)
    assert (served_version(version_label="stable"), served_version(version_label="canary")) == (1, 2)
    error = _error(env.predict.Predict, _predict_request([0.0], version=7))
    assert (error.code(), error.details()) == (_NOT_FOUND, "Servable not found for request: Specific(half, 7)")
    error = _error(env.predict.Predict, _predict_request([0.0], version_label="nope"))
    assert (error.code(), error.details()) == (_INVALID, "Unrecognized servable version label: nope")


@pytest.mark.parametrize(
    ("request_factory", "code", "details"),
    [
        (lambda: _predict_request([1.0], name="x"), _NOT_FOUND, "Servable not found for request: Latest(x)"),
        (lambda: _predict_request([1.0], name=""), _INVALID, "ModelSpec has no name specified."),
        (lambda: predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        (
            lambda: _predict_request([1.0], signature_name="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
    ],
    ids=["unknown-model", "empty-name", "missing-spec", "unknown-signature"],
)
def test_lookup_errors(env: Env, request_factory: Any, code: grpc.StatusCode, details: str) -> None:
    error = _error(env.predict.Predict, request_factory())
    assert (error.code(), error.details()) == (code, details)


def test_bad_inputs_are_invalid_argument(env: Env) -> None:
    wrong_dtype = _predict_request()
    wrong_dtype.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[1], tensor_shape={"dim": [{"size": 1}]})
    )
    error = _error(env.predict.Predict, wrong_dtype)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_INT64" in error.details()

    wrong_shape = _predict_request()
    wrong_shape.inputs["x"].CopyFrom(_float_tensor([1, 2, 3, 4], shape=[2, 2]))
    error = _error(env.predict.Predict, wrong_shape)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape [2,2]" in error.details()

    error = _error(env.predict.Predict, _predict_request(signature_name="two_outputs"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("input size does not match signature: 0!=1")

    extra = _predict_request([1.0])
    extra.inputs["z"].CopyFrom(_float_tensor([1.0]))
    error = _error(env.predict.Predict, extra)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Sent extra: {z}" in error.details()


def test_unexpected_exception_is_internal(env: Env) -> None:
    error = _error(env.predict.Predict, _predict_request([1.0], signature_name="boom"))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "RuntimeError: kaput")


def test_long_messages_are_truncated_to_1024_chars(env: Env) -> None:
    error = _error(env.predict.Predict, _predict_request([1.0], name="m" * 3000))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == ("Servable not found for request: Latest(" + "m" * 3000)[:1024] + "...TRUNCATED"


# -- Classify / Regress / MultiInference ---------------------------------------------------


def _classification_request(signature: str, examples: Sequence[Any], context: Any = None) -> Any:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half"
    request.model_spec.signature_name = signature
    if context is None:
        request.input.example_list.examples.extend(examples)
    else:
        request.input.example_list_with_context.context.CopyFrom(context)
        request.input.example_list_with_context.examples.extend(examples)
    return request


def test_classify(env: Env) -> None:
    response = env.predict.Classify(_classification_request("classify", [_example(x=2.0), _example(x=5.0)]), timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("half", 2)
    assert response.model_spec.signature_name == "classify"
    got = [[(c.label, round(c.score, 5)) for c in entry.classes] for entry in response.result.classifications]
    assert got == [[("neg", 0.8), ("pos", 0.2)], [("neg", 0.5), ("pos", 0.5)]]


def test_classify_without_classes_leaves_labels_empty(env: Env) -> None:
    response = env.predict.Classify(_classification_request("scores_only", [_example(x=1.0)]), timeout=30)
    assert [(c.label, round(c.score, 5)) for c in response.result.classifications[0].classes] == [("", 0.9), ("", 0.1)]


def test_classify_errors(env: Env) -> None:
    error = _error(env.predict.Classify, _classification_request("nope", [_example(x=1.0)]))
    assert (error.code(), error.details()) == (_INVALID, "No signature was found with the name: nope")
    error = _error(env.predict.Classify, _classification_request("classify", []))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    error = _error(env.predict.Classify, _classification_request("regress", [_example(x=1.0)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        "Expected classification signature method_name to be tensorflow/serving/classify."
    )
    error = _error(env.predict.Classify, _classification_request("bad_classify", [_example(x=1.0)]))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected Tensor shape: [batch_size num_classes] but got [1]",
    )
    error = _error(env.predict.Classify, classification_pb2.ClassificationRequest())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_regress_merges_context_into_each_example(env: Env) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half"
    request.model_spec.signature_name = "regress"
    with_context = request.input.example_list_with_context
    with_context.context.CopyFrom(_example(x=1.0, bias=10.0))
    with_context.examples.extend([_example(x=2.0), _example()])  # the example's x wins over the context's
    response = env.predict.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [12.0, 11.0]
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (2, "regress")


def test_multi_inference(env: Env) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature in ("classify", "regress"):
        task = request.tasks.add(method_name=f"tensorflow/serving/{signature}")
        task.model_spec.name = "half"
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend([_example(x=4.0, bias=1.0)])
    response = env.predict.MultiInference(request, timeout=30)
    first, second = response.results
    assert (first.model_spec.signature_name, first.model_spec.version.value) == ("classify", 2)
    assert [c.label for c in first.classification_result.classifications[0].classes] == ["neg", "pos"]
    assert second.model_spec.signature_name == "regress"
    assert [r.value for r in second.regression_result.regressions] == [5.0]

    request.tasks[1].model_spec.name = "other"
    error = _error(env.predict.MultiInference, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "All ModelSpecs in a MultiInferenceRequest must access the same model name."


# -- metadata, status, reload, health ------------------------------------------------------


def test_get_model_metadata(env: Env) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half"
    response = env.predict.GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("half", 2)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    assert set(defs.signature_def) == set(env.servable.signatures) > set(_SIGNATURES)
    assert defs.signature_def["serving_default"].inputs["x"].dtype == types_pb2.DT_FLOAT

    del request.metadata_field[:]
    error = _error(env.predict.GetModelMetadata, request)
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    error = _error(env.predict.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_get_model_status(env: Env) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half"
    statuses = env.model.GetModelStatus(request, timeout=30).model_version_status
    assert [(s.version, s.state) for s in statuses] == [(3, 50), (2, 30), (1, 30)]
    assert (statuses[0].status.error_code, statuses[0].status.error_message) == (2, "Loading half 3 failed: bad file")
    assert (statuses[1].status.error_code, statuses[1].status.error_message) == (0, "")

    request.model_spec.version.value = 1
    assert [s.version for s in env.model.GetModelStatus(request, timeout=30).model_version_status] == [1]
    request.model_spec.version.value = 9
    error = _error(env.model.GetModelStatus, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model half")
    request.model_spec.name = "nope"
    request.model_spec.ClearField("version")
    error = _error(env.model.GetModelStatus, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    error = _error(env.model.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def _reload_request(*names: str) -> Any:
    request = model_management_pb2.ReloadConfigRequest(metric_names=["loads"])
    for name in names:
        request.config.model_config_list.config.add(name=name, base_path=f"/models/{name}", model_platform="tensorflow")
    return request


def test_reload_config_success_and_failure(env: Env) -> None:
    response = env.model.HandleReloadConfigRequest(_reload_request("half", "other"), timeout=30)
    assert (response.status.error_code, response.status.error_message) == (0, "")
    assert [(m.name, m.int64_value_increase) for m in response.metric] == [("loads", 0)]
    assert [c.name for c in env.reload.configs[-1].model_config_list.config] == ["half", "other"]

    error = _error(env.model.HandleReloadConfigRequest, _reload_request("bad"))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "model bad: base path /nowhere does not exist",
    )
    calls = len(env.reload.configs)
    custom = model_management_pb2.ReloadConfigRequest()
    custom.config.custom_model_config.type_url = "example.com/custom"
    error = _error(env.model.HandleReloadConfigRequest, custom)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("ServerModelConfig type not supported by HandleReloadConfigRequest.")
    assert len(env.reload.configs) == calls  # refused before the hook ran


def test_health_check_reports_serving(env: Env) -> None:
    for service in HEALTH_SERVICES:
        response = env.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    error = _error(env.health.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_health_follows_readiness_and_watchers_end_at_shutdown() -> None:
    bus: EventBus[ServableState] = EventBus()
    readiness = Readiness(ServableStateMonitor(bus), bus)
    readiness.set_models(["half"])  # nothing AVAILABLE yet
    servable, reload = HalfPlusTwo(), ReloadRecorder()
    handle = start_grpc_server(
        DataPlane(_core(servable)), reload, GrpcServerOptions(host="127.0.0.1", port=0, max_threads=4), readiness
    )
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)

        def statuses() -> list[int]:
            return [health.Check(health_pb2.HealthCheckRequest(service=s), timeout=30).status for s in HEALTH_SERVICES]

        assert statuses() == [not_serving] * 3
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
        assert next(watch).status == not_serving
        bus.publish(ServableState(ServableId("half", 2), ManagerState.AVAILABLE))
        assert next(watch).status == serving and statuses() == [serving] * 3
        bus.publish(ServableState(ServableId("half", 2), ManagerState.UNLOADING))
        assert next(watch).status == not_serving and statuses() == [not_serving] * 3
        bus.publish(ServableState(ServableId("half", 3), ManagerState.AVAILABLE))
        assert next(watch).status == serving

        readiness.begin_shutdown()  # what ModelServer.stop does first: NOT_SERVING while still accepting RPCs
        assert next(watch).status == not_serving and statuses() == [not_serving] * 3
        # The open Watch stream ends at stop (it would otherwise hold the whole 120 s grace period).
        stopper = threading.Thread(target=handle.stop, args=(120.0,))
        stopper.start()
        assert {response.status for response in watch} <= {not_serving}  # then the stream ends with OK
        stopper.join(60)
        assert not stopper.is_alive()
        bus.publish(ServableState(ServableId("half", 4), ManagerState.AVAILABLE))  # no listener left: no error
    finally:
        channel.close()
        handle.stop(0)


# -- deadlines, options and life cycle -------------------------------------------------------


class _ExpiredContext:
    """A ServicerContext whose deadline has already passed."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float:
        return 0.0

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def test_expired_deadline_is_refused_without_running_the_model() -> None:
    servable = HalfPlusTwo()
    servicer = PredictionServiceServicer(DataPlane(_core(servable)))
    context = _ExpiredContext()
    with pytest.raises(RuntimeError, match="aborted"):
        servicer.Predict(_predict_request([1.0]), context)
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servable.calls == []


def test_a_deadline_in_the_future_is_served(env: Env) -> None:
    assert env.predict.Predict(_predict_request([2.0]), timeout=60).outputs["y"].float_val == [3.0]


def test_tensor_content_outputs_and_unix_socket(tmp_path: Any) -> None:
    socket = tmp_path / "grpc.sock"
    options = GrpcServerOptions(port=None, socket_path=str(socket), max_threads=1, tensor_content_outputs=True)
    handle, _, _ = _start(options)
    try:
        assert handle.port is None and handle.addresses == (f"unix:{socket}",)
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            y = stub.Predict(_predict_request([1.0, 3.0]), timeout=30).outputs["y"]
            assert not y.float_val and np.frombuffer(y.tensor_content, dtype=np.float32).tolist() == [2.5, 3.5]
    finally:
        handle.stop(grace_s=None)
    assert handle.wait(timeout_s=10)


def test_binding_a_busy_port_is_unavailable(env: Env) -> None:
    with pytest.raises(UnavailableError, match="Could not bind gRPC port"):
        _start(GrpcServerOptions(host="127.0.0.1", port=env.handle.port, max_threads=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "gRPC port must be in [0, 65535]"),
        ({"port": None}, "At least one of the gRPC port or socket_path must be set"),
        ({"max_threads": 0}, "grpc max_threads must be >= 1, got 0"),
        ({"max_message_bytes": 0}, "max_message_bytes must be in"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        GrpcServerOptions(**kwargs)
    assert message in str(info.value)


def test_channel_arguments_override_defaults() -> None:
    options = GrpcServerOptions(channel_arguments=[("grpc.max_receive_message_length", 1024), ("grpc.x", "y")])
    arguments = dict(options.server_arguments())
    assert arguments["grpc.max_receive_message_length"] == 1024
    assert arguments["grpc.max_send_message_length"] == 2**31 - 1
    assert arguments["grpc.x"] == "y"


def test_unexpected_reload_failure_is_internal() -> None:
    # A reload hook raising something other than ServingError is a bug: INTERNAL, not a crash.
    from pyserving.server.grpc_server import ModelServiceServicer

    def broken(config: Any) -> None:
        raise KeyError("oops")

    class Context(_ExpiredContext):
        def time_remaining(self) -> float:
            return 5.0

    context = Context()
    servicer = ModelServiceServicer(DataPlane(_core(HalfPlusTwo())), broken)
    with pytest.raises(RuntimeError, match="aborted"):
        servicer.HandleReloadConfigRequest(_reload_request("half"), context)
    assert context.aborted == (grpc.StatusCode.INTERNAL, "KeyError: 'oops'")


def test_importing_the_module_loads_no_tensorflow() -> None:
    code = (
        "import sys, pyserving.server.grpc_server;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_serving'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
