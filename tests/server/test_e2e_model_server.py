"""End to end: the real ``pyserving-model-server`` binary, driven as a TF Serving client would.

One server process per module serves several models from a ``--model_config_file``:

* ``half_plus_two`` — the bundled demo SavedModel (TF1 graph), copied to version 123;
* ``tf2`` — a TF2 ``tf.Module`` (``x[None, 3]`` -> ``y``, ``total``);
* ``strings`` — string in, string and int32 out;
* ``multi`` — two inputs of different dtypes, two outputs;
* ``pymodel`` — the ``python`` platform: a ``model.py`` whose servable implements
  :class:`~pyserving.servable.signature.InferenceServable`;
* ``versioned`` — ``model_version_policy { all {} }`` over two half_plus_two versions
  (``b`` = 2 and 3) with labels ``stable`` -> 1 and ``canary`` -> 2.

gRPC goes through the official ``tensorflow-serving-api`` stubs with ``tf.make_tensor_proto``
/ ``tf.make_ndarray``; REST through ``requests``. Every error case is followed by a good
request, so a failure that broke the server shows up at the case that broke it.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import requests

from tests.support.saved_models import (
    STRING_SUFFIX,
    write_half_plus_two_tf1,
    write_multi_io_model,
    write_string_model,
    write_tf2_model,
)
from tests.support.server_process import ServerProcess, start_model_server

pytestmark = pytest.mark.slow

DEMO_VERSION_DIR = Path(__file__).resolve().parents[2] / "pyserving" / "data" / "half_plus_two" / "00000123"
TIMEOUT_S = 30

PYTHON_MODEL = '''
import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Scaler:
    """y = factor * x over float32 vectors."""

    def __init__(self, factor):
        self.factor = factor
        self._signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, (None,), "x:0")},
                {"scaled": TensorSpec(DType.FLOAT, (None,), "scaled:0")},
            )
        }

    @property
    def signatures(self):
        return self._signatures

    def run(self, signature_name, inputs, output_filter=()):
        return {"scaled": (inputs["x"] * self.factor).astype(np.float32)}


def create_servable(version_dir):
    return Scaler(10.0)
'''


def _write_config(path: Path, root: Path) -> None:
    def entry(name: str, platform: str = "tensorflow", extra: str = "") -> str:
        return f"  config {{ name: '{name}' base_path: '{root / name}' model_platform: '{platform}' {extra}}}\n"

    versioned_extra = (
        "model_version_policy { all {} } "
        "version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } "
    )
    path.write_text(
        "model_config_list {\n"
        + entry("half_plus_two")
        + entry("tf2")
        + entry("strings")
        + entry("multi")
        + entry("pymodel", "python")
        + entry("versioned", extra=versioned_extra)
        + "}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, int]]:
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(DEMO_VERSION_DIR, root / "half_plus_two" / "123")
    write_tf2_model(root / "tf2" / "1")
    write_string_model(root / "strings" / "1")
    write_multi_io_model(root / "multi" / "1")
    (root / "pymodel" / "1").mkdir(parents=True)
    (root / "pymodel" / "1" / "model.py").write_text(PYTHON_MODEL)
    write_half_plus_two_tf1(root / "versioned" / "1", b=2.0, any_shape_x=True)
    write_half_plus_two_tf1(root / "versioned" / "2", b=3.0, any_shape_x=True)
    config = root / "models.config"
    _write_config(config, root)
    process, grpc_port, rest_port = start_model_server(
        [f"--model_config_file={config}", "--rest_api_enable_cors_support=true"]
    )
    try:
        yield process, grpc_port, rest_port
    finally:
        process.stop()


@pytest.fixture(scope="module")
def channel(server: tuple[ServerProcess, int, int]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT_S)
        yield ch


@pytest.fixture(scope="module")
def rest(server: tuple[ServerProcess, int, int]) -> str:
    return f"http://127.0.0.1:{server[2]}"


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> Any:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_service(channel: grpc.Channel) -> Any:
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceStub(channel)


# -- gRPC helpers ---------------------------------------------------------------------------


def predict_request(name: str, inputs: dict[str, Any], *, version: int | None = None,
                    label: str = "", signature: str = "") -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    if signature:
        request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def ndarray(proto: Any) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(proto)


def x_examples(*xs: float) -> Any:
    """An ``Input`` of tf.Examples with float feature ``x``, as TF Serving's clients build it."""
    from tensorflow_serving.apis import input_pb2

    request_input = input_pb2.Input()
    for x in xs:
        example = request_input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)
    return request_input


def good_grpc_predict(prediction: Any) -> None:
    response = prediction.Predict(predict_request("half_plus_two", {"x": np.array([[1.0]], np.float32)}),
                                  timeout=TIMEOUT_S)
    np.testing.assert_allclose(ndarray(response.outputs["y"]), [[2.5]])


def grpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT_S)
    return info.value


# -- gRPC: PredictionService ----------------------------------------------------------------


def test_grpc_predict_half_plus_two(prediction: Any) -> None:
    request = predict_request("half_plus_two", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)})
    response = prediction.Predict(request, timeout=TIMEOUT_S)
    np.testing.assert_allclose(ndarray(response.outputs["y"]), [[2.5], [3.0], [4.5]])
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_grpc_predict_by_version_and_by_label(prediction: Any) -> None:
    x = {"x": np.array([2.0], np.float32)}
    latest = prediction.Predict(predict_request("versioned", x), timeout=TIMEOUT_S)
    assert latest.model_spec.version.value == 2
    np.testing.assert_allclose(ndarray(latest.outputs["y"]), [4.0])
    v1 = prediction.Predict(predict_request("versioned", x, version=1), timeout=TIMEOUT_S)
    assert v1.model_spec.version.value == 1
    np.testing.assert_allclose(ndarray(v1.outputs["y"]), [3.0])
    stable = prediction.Predict(predict_request("versioned", x, label="stable"), timeout=TIMEOUT_S)
    assert stable.model_spec.version.value == 1
    np.testing.assert_allclose(ndarray(stable.outputs["y"]), [3.0])
    canary = prediction.Predict(predict_request("versioned", x, label="canary"), timeout=TIMEOUT_S)
    assert canary.model_spec.version.value == 2
    np.testing.assert_allclose(ndarray(canary.outputs["y"]), [4.0])


def test_grpc_predict_tf2_model_with_output_filter(prediction: Any) -> None:
    x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
    response = prediction.Predict(predict_request("tf2", {"x": x}), timeout=TIMEOUT_S)
    np.testing.assert_allclose(ndarray(response.outputs["y"]), [[1.5, 1.5], [8.5, 9.5]])
    np.testing.assert_allclose(ndarray(response.outputs["total"]), [3.0, 18.0])
    request = predict_request("tf2", {"x": x})
    request.output_filter.append("total")
    filtered = prediction.Predict(request, timeout=TIMEOUT_S)
    assert list(filtered.outputs) == ["total"]


def test_grpc_predict_strings_multi_io_and_python_models(prediction: Any) -> None:
    strings = prediction.Predict(
        predict_request("strings", {"text": np.array([b"hi", b"abc"], dtype=object)}), timeout=TIMEOUT_S
    )
    assert ndarray(strings.outputs["shout"]).tolist() == [b"HI" + STRING_SUFFIX, b"ABC" + STRING_SUFFIX]
    assert ndarray(strings.outputs["length"]).tolist() == [2, 3]

    multi = prediction.Predict(
        predict_request("multi", {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([4], np.int64)}),
        timeout=TIMEOUT_S,
    )
    np.testing.assert_allclose(ndarray(multi.outputs["sum"]), [7.0])
    assert ndarray(multi.outputs["b_times_two"]).tolist() == [8]
    assert ndarray(multi.outputs["b_times_two"]).dtype == np.int64

    python = prediction.Predict(predict_request("pymodel", {"x": np.array([1.5, -2.0], np.float32)}),
                                timeout=TIMEOUT_S)
    np.testing.assert_allclose(ndarray(python.outputs["scaled"]), [15.0, -20.0])
    assert python.model_spec.version.value == 1


def test_grpc_classify_and_regress_half_plus_two(prediction: Any) -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus_two"
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.CopyFrom(x_examples(2.0))
    response = prediction.Classify(classify, timeout=TIMEOUT_S)
    classes = response.result.classifications[0].classes
    assert [(c.label, c.score) for c in classes] == [("", 3.0)]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus_two"
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.CopyFrom(x_examples(2.0, 4.0))
    result = prediction.Regress(regress, timeout=TIMEOUT_S)
    assert [r.value for r in result.result.regressions] == [3.0, 4.0]
    assert result.model_spec.signature_name == "regress_x_to_y"


def test_grpc_multi_inference(prediction: Any) -> None:
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y2", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.CopyFrom(x_examples(2.0))
    response = prediction.MultiInference(request, timeout=TIMEOUT_S)
    assert len(response.results) == 2
    first, second = response.results
    assert first.model_spec.signature_name == "classify_x_to_y"
    assert first.classification_result.classifications[0].classes[0].score == 3.0
    assert second.model_spec.signature_name == "regress_x_to_y2"
    assert second.regression_result.regressions[0].value == 4.0


def test_grpc_get_model_metadata(prediction: Any) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request, timeout=TIMEOUT_S)
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def) == {
        "serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3",
    }
    default = signature_map.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == 1  # DT_FLOAT
    assert default.inputs["x"].name == "x:0"

    request.model_spec.name = "pymodel"
    python = prediction.GetModelMetadata(request, timeout=TIMEOUT_S)
    python_map = get_model_metadata_pb2.SignatureDefMap()
    assert python.metadata["signature_def"].Unpack(python_map)
    assert set(python_map.signature_def["serving_default"].outputs) == {"scaled"}


def test_grpc_get_model_status(model_service: Any) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "versioned"
    response = model_service.GetModelStatus(request, timeout=TIMEOUT_S)
    states = [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code)
              for s in response.model_version_status]
    assert states == [(2, "AVAILABLE", 0), (1, "AVAILABLE", 0)]

    request.model_spec.version.value = 1
    one = model_service.GetModelStatus(request, timeout=TIMEOUT_S)
    assert [s.version for s in one.model_version_status] == [1]

    request.model_spec.version.value = 9
    error = grpc_error(model_service.GetModelStatus, request)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 9 of model versioned"


def test_grpc_health_check_serving(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def _grpc_error_cases() -> list[tuple[str, dict[str, Any], grpc.StatusCode, str]]:
    f32 = np.array([[1.0]], np.float32)
    return [
        ("unknown model", dict(name="nope", inputs={"x": f32}),
         grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        ("unknown version", dict(name="half_plus_two", inputs={"x": f32}, version=7),
         grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 7)"),
        ("unknown label", dict(name="versioned", inputs={"x": f32}, label="beta"),
         grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
        ("unknown signature", dict(name="half_plus_two", inputs={"x": f32}, signature="nope"),
         grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
        ("wrong dtype", dict(name="half_plus_two", inputs={"x": np.array([[1]], np.int32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "x"),
        ("wrong shape", dict(name="tf2", inputs={"x": np.zeros((2, 2), np.float32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "x"),
        ("missing input", dict(name="multi", inputs={"a": np.zeros((1, 2), np.float32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {b}"),
    ]


@pytest.mark.parametrize("case", _grpc_error_cases(), ids=lambda c: c[0])
def test_grpc_errors_name_the_problem_and_the_server_keeps_serving(
    prediction: Any, case: tuple[str, dict[str, Any], grpc.StatusCode, str]
) -> None:
    _, kwargs, code, text = case
    kwargs = dict(kwargs)
    request = predict_request(kwargs.pop("name"), kwargs.pop("inputs"), **kwargs)
    error = grpc_error(prediction.Predict, request)
    assert error.code() is code, error.details()
    assert text in error.details()
    good_grpc_predict(prediction)


def test_grpc_wrong_dtype_and_shape_messages_name_the_rule(prediction: Any) -> None:
    dtype = grpc_error(prediction.Predict, predict_request("half_plus_two", {"x": np.array([[1]], np.int32)}))
    assert "DT_INT32" in dtype.details() and "DT_FLOAT" in dtype.details(), dtype.details()
    shape = grpc_error(prediction.Predict, predict_request("tf2", {"x": np.zeros((2, 2), np.float32)}))
    assert "shape" in shape.details().lower(), shape.details()


# -- REST: TF Serving's documented examples ---------------------------------------------------


_HALF = "/v1/models/half_plus_two:predict"


def _post(rest: str, path: str, body: Any) -> requests.Response:
    return requests.post(rest + path, json=body, timeout=TIMEOUT_S)


def good_rest_predict(rest: str) -> None:
    response = _post(rest, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


@pytest.mark.parametrize(
    "path, body, expected",
    [
        (":predict", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
        (":predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
        (":predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
        (":predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
        (":classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, {"results": [[["", 3.0]]]}),
        (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, {"results": [3.0]}),
        ("/versions/123:predict", {"instances": [1.0]}, {"predictions": [2.5]}),
    ],
)
def test_rest_documented_examples(rest: str, path: str, body: Any, expected: Any) -> None:
    response = _post(rest, "/v1/models/half_plus_two" + path, body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == expected


def test_rest_cors_flag_adds_the_headers(rest: str) -> None:
    response = _post(rest, _HALF, {"instances": [1.0]})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    preflight = requests.options(rest + _HALF, headers={"Origin": "https://example.com"}, timeout=TIMEOUT_S)
    assert preflight.status_code == 200


def test_rest_documented_unknown_model_example(rest: str) -> None:
    response = _post(rest, "/v1/models/half:predict", {"instances": [1.0, 2.0, 5.0]})
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(half)"}


def test_rest_other_models(rest: str) -> None:
    tf2 = _post(rest, "/v1/models/tf2:predict", {"instances": [[1.0, 0.0, 0.0]]})
    assert tf2.status_code == 200, tf2.text
    assert sorted(tf2.json()["predictions"][0]) == ["total", "y"]
    assert tf2.json()["predictions"][0]["y"] == [1.5, 1.5]

    strings = _post(rest, "/v1/models/strings:predict", {"inputs": {"text": ["ab", {"b64": "Y2Q="}]}})
    assert strings.status_code == 200, strings.text
    assert strings.json()["outputs"] == {"shout": ["AB!", "CD!"], "length": [2, 2]}

    multi = _post(rest, "/v1/models/multi:predict", {"instances": [{"a": [1.0, 2.0], "b": 3}]})
    assert multi.status_code == 200, multi.text
    assert multi.json() == {"predictions": [{"sum": 6.0, "b_times_two": 6}]}

    python = _post(rest, "/v1/models/pymodel:predict", {"instances": [0.5, 2.0]})
    assert python.status_code == 200, python.text
    assert python.json() == {"predictions": [5.0, 20.0]}


def test_rest_versions_and_labels_routes(rest: str) -> None:
    for path, expected in (
        ("/v1/models/versioned:predict", 4.0),
        ("/v1/models/versioned/versions/1:predict", 3.0),
        ("/v1/models/versioned/versions/2:predict", 4.0),
        ("/v1/models/versioned/labels/stable:predict", 3.0),
        ("/v1/models/versioned/labels/canary:predict", 4.0),
    ):
        response = _post(rest, path, {"instances": [2.0]})
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"predictions": [expected]}, path
    regress = _post(rest, "/v1/models/versioned/labels/stable:regress",
                    {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert regress.json() == {"results": [3.0]}


def test_rest_status_json(rest: str) -> None:
    response = requests.get(rest + "/v1/models/half_plus_two", timeout=TIMEOUT_S)
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    versioned = requests.get(rest + "/v1/models/versioned", timeout=TIMEOUT_S).json()
    assert [s["version"] for s in versioned["model_version_status"]] == ["2", "1"]
    one = requests.get(rest + "/v1/models/versioned/versions/1", timeout=TIMEOUT_S).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    # A label is ignored by status (TF Serving): all versions.
    labelled = requests.get(rest + "/v1/models/versioned/labels/stable", timeout=TIMEOUT_S).json()
    assert [s["version"] for s in labelled["model_version_status"]] == ["2", "1"]
    unknown = requests.get(rest + "/v1/models/nope", timeout=TIMEOUT_S)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Could not find any versions of model nope"}


def test_rest_metadata_json_shape(rest: str) -> None:
    response = requests.get(rest + "/v1/models/half_plus_two/metadata", timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3"}
    x = defs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["name"] == "x:0"
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert defs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"

    labelled = requests.get(rest + "/v1/models/versioned/labels/stable/metadata", timeout=TIMEOUT_S).json()
    assert labelled["model_spec"]["version"] == "1"
    tf2 = requests.get(rest + "/v1/models/tf2/versions/1/metadata", timeout=TIMEOUT_S).json()
    dims = tf2["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "3"]


# -- REST errors over the real server -------------------------------------------------------

_REST_ERRORS = [
    # (id, path, raw body, status, text the message contains)
    ("unknown model", "/v1/models/nope:predict", b'{"instances": [1.0]}', 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "/v1/models/half_plus_two/versions/7:predict", b'{"instances": [1.0]}', 404,
     "Servable not found for request: Specific(half_plus_two, 7)"),
    ("unknown label", "/v1/models/versioned/labels/beta:predict", b'{"instances": [1.0]}', 400,
     "Unrecognized servable version label: beta"),
    ("unknown signature", _HALF, b'{"signature_name": "nope", "instances": [1.0]}', 400,
     '"nope" not found'),
    ("wrong dtype", _HALF, b'{"instances": ["one"]}', 400, "is not of expected type: float"),
    ("wrong shape", "/v1/models/tf2:predict", b'{"instances": [[1.0, 2.0]]}', 400, "shape"),
    ("ragged instances", _HALF, b'{"instances": [[1.0, 2.0], [3.0]]}', 400,
     "Failed to process element: 1 of 'instances' list"),
    ("ragged nested list", _HALF, b'{"instances": [[[1.0, 2.0], [3.0]]]}', 400, "Encountered list at unexpected"),
    ("ragged columnar inputs", _HALF, b'{"inputs": [[1.0, 2.0], [3.0]]}', 400, "Encountered list at unexpected"),
    ("instances and inputs", _HALF, b'{"instances": [1.0], "inputs": [1.0]}', 400,
     "expecting only one of 'inputs' or 'instances'"),
    ("neither instances nor inputs", _HALF, b'{"signature_name": "serving_default"}', 400,
     "Missing 'inputs' or 'instances' key"),
    ("malformed json", _HALF, b'{"instances": [1.0,', 400, "JSON Parse error"),
    ("bad base64", "/v1/models/strings:predict", b'{"instances": [{"b64": "%%%"}]}', 400, "base64"),
    ("empty body", _HALF, b"", 400, "JSON Parse error: The document is empty"),
    ("unknown verb", "/v1/models/half_plus_two:Predict", b'{"instances": [1.0]}', 400, "Malformed request"),
    ("classify wrong signature type", "/v1/models/half_plus_two:classify",
     b'{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}', 400, "classify"),
]


@pytest.mark.parametrize("path, body, status, text", [c[1:] for c in _REST_ERRORS], ids=[c[0] for c in _REST_ERRORS])
def test_rest_errors_name_the_problem_and_the_server_keeps_serving(
    rest: str, path: str, body: bytes, status: int, text: str
) -> None:
    response = requests.post(rest + path, data=body, timeout=TIMEOUT_S,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    message = response.json()["error"]
    assert text in message, message
    good_rest_predict(rest)


def test_rest_body_over_the_size_limit_is_refused_before_it_is_read(rest: str) -> None:
    """A declared Content-Length over the 64 MiB limit gets 413 without sending the body."""
    host, port = rest.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(
            f"POST {_HALF} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {65 * 1024 * 1024}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or b"}" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n", 1)[0]
    assert b" 413 " in head, answer[:500]
    assert b"larger than the limit" in answer
    good_rest_predict(rest)
