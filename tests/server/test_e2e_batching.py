"""End to end: ``pyserving-model-server --enable_batching`` with TF Serving's batching files.

* A server with ``--batching_parameters_file`` (padding to allowed sizes, a batch timeout,
  two batch threads) answers many concurrent gRPC and REST clients at once; every answer is
  checked row by row. Predict, classify and regress are batched; a request larger than
  ``max_batch_size`` gets TF Serving's INVALID_ARGUMENT on both transports.
* A server with ``--enable_per_model_batching_params`` batches only the model whose version
  directory holds ``batching_params.pbtxt``, with that file's limits.
* A bad batching file stops the server at startup, naming the flag, the file and the rule.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np
import pytest
import requests

from tests.support.concurrency import hammer
from tests.support.saved_models import write_half_plus_two_tf1
from tests.support.server_process import ServerProcess, free_port, start_model_server

pytestmark = pytest.mark.slow

DEMO_VERSION_DIR = Path(__file__).resolve().parents[2] / "pyserving" / "data" / "half_plus_two" / "00000123"
TIMEOUT_S = 30

BATCHING_FILE = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 2 }
allowed_batch_sizes: [2, 4, 8]
"""


def _config(path: Path, root: Path, names: list[str]) -> None:
    entries = "".join(
        f"  config {{ name: '{name}' base_path: '{root / name}' model_platform: 'tensorflow' }}\n" for name in names
    )
    path.write_text("model_config_list {\n" + entries + "}\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, int]]:
    root = tmp_path_factory.mktemp("batched")
    shutil.copytree(DEMO_VERSION_DIR, root / "half_plus_two" / "123")
    _config(root / "models.config", root, ["half_plus_two"])
    (root / "batching.txt").write_text(BATCHING_FILE)
    process, grpc_port, rest_port = start_model_server([
        f"--model_config_file={root / 'models.config'}", "--enable_batching",
        f"--batching_parameters_file={root / 'batching.txt'}",
    ])
    try:
        yield process, grpc_port, rest_port
    finally:
        process.stop()


@pytest.fixture(scope="module")
def prediction(server: tuple[ServerProcess, int, int]) -> Iterator[Any]:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(name: str, x: np.ndarray) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


def _examples_request(kind: str, name: str, signature: str, xs: list[float]) -> Any:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    request = (classification_pb2.ClassificationRequest if kind == "classify" else regression_pb2.RegressionRequest)()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def _hammer(clients: int, calls: int, one_call: Callable[[int, int], str | None]) -> list[str]:
    return hammer(clients, calls, one_call, 4 * TIMEOUT_S)


def _rows(number: int, call: int) -> list[float]:
    """A request of 1..8 rows whose values say who sent it."""
    return [number * 1000.0 + call * 10 + i for i in range(1 + (number * 3 + call) % 8)]


def test_server_reports_batching(server: tuple[ServerProcess, int, int]) -> None:
    output = server[0].output
    assert "Batching enabled: max_batch_size=8 batch_timeout_micros=2000 max_enqueued_batches=1000 " \
           "allowed_batch_sizes=[2, 4, 8] on 2 shared batch threads" in output
    assert "{name: half_plus_two version: 123} is batched" in output


def test_concurrent_grpc_and_rest_clients_each_get_their_own_rows(
    server: tuple[ServerProcess, int, int], prediction: Any
) -> None:
    import tensorflow as tf

    url = f"http://127.0.0.1:{server[2]}/v1/models/half_plus_two:predict"
    sessions = [requests.Session() for _ in range(12)]

    def one_call(number: int, call: int) -> str | None:
        xs = _rows(number, call)
        expected = [0.5 * x + 2 for x in xs]
        if number % 2:  # gRPC, column vector [n, 1]
            response = prediction.Predict(_predict_request("half_plus_two", np.array(xs, np.float32).reshape(-1, 1)),
                                          timeout=TIMEOUT_S)
            got = tf.make_ndarray(response.outputs["y"]).reshape(-1).tolist()
            if response.model_spec.version.value != 123:
                return f"version {response.model_spec.version.value}"
        else:  # REST, row format of scalars
            reply = sessions[number].post(url, json={"instances": xs}, timeout=TIMEOUT_S)
            if reply.status_code != 200:
                return f"HTTP {reply.status_code}: {reply.text}"
            got = reply.json()["predictions"]
        return None if np.allclose(got, expected) else f"{got} != {expected}"

    try:
        assert _hammer(12, 25, one_call) == []
    finally:
        for session in sessions:
            session.close()


def test_concurrent_classify_and_regress_are_answered_per_request(prediction: Any) -> None:
    def one_call(number: int, call: int) -> str | None:
        xs = _rows(number, call)
        expected = [0.5 * x + 2 for x in xs]
        if call % 2:
            result = prediction.Classify(_examples_request("classify", "half_plus_two", "classify_x_to_y", xs),
                                         timeout=TIMEOUT_S).result
            got = [c.classes[0].score for c in result.classifications]
        else:
            result = prediction.Regress(_examples_request("regress", "half_plus_two", "regress_x_to_y", xs),
                                        timeout=TIMEOUT_S).result
            got = [r.value for r in result.regressions]
        return None if np.allclose(got, expected) else f"{got} != {expected}"

    assert _hammer(6, 16, one_call) == []


def test_request_larger_than_max_batch_size_is_refused_on_both_transports(
    server: tuple[ServerProcess, int, int], prediction: Any
) -> None:
    message = "Task size 9 is larger than maximum input batch size 8"
    with pytest.raises(grpc.RpcError) as info:
        prediction.Predict(_predict_request("half_plus_two", np.ones((9, 1), np.float32)), timeout=TIMEOUT_S)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and info.value.details() == message
    reply = requests.post(f"http://127.0.0.1:{server[2]}/v1/models/half_plus_two:predict",
                          json={"instances": [1.0] * 9}, timeout=TIMEOUT_S)
    assert (reply.status_code, reply.json()) == (400, {"error": message})
    response = prediction.Predict(_predict_request("half_plus_two", np.ones((8, 1), np.float32)), timeout=TIMEOUT_S)
    assert len(response.outputs["y"].float_val) == 8


def test_unload_at_shutdown_reports_that_requests_shared_batches(server: tuple[ServerProcess, int, int]) -> None:
    """Runs last for this server: it stops it."""
    process = server[0]
    assert process.stop() == 0
    lines = [line for line in process.output.splitlines() if "{name: half_plus_two version: 123} batching:" in line]
    assert len(lines) == 1, process.output
    tasks, batches = (int(word) for word in re.search(r"batching: (\d+) tasks in (\d+) batches", lines[0]).groups())
    assert tasks >= 12 * 25 + 6 * 16 + 1 and batches < tasks  # some requests shared a model call
    assert "refused: 0 queue full, 2 too large, 0 past their deadline" in lines[0]


# -- per-model batching parameters -------------------------------------------------------------------


@pytest.fixture(scope="module")
def per_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, int]]:
    root = tmp_path_factory.mktemp("per_model")
    write_half_plus_two_tf1(root / "small" / "1", any_shape_x=True)
    (root / "small" / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }\n")
    write_half_plus_two_tf1(root / "plain" / "1", any_shape_x=True)
    _config(root / "models.config", root, ["small", "plain"])
    process, grpc_port, rest_port = start_model_server([
        f"--model_config_file={root / 'models.config'}", "--enable_batching", "--enable_per_model_batching_params",
    ])
    try:
        yield process, grpc_port, rest_port
    finally:
        process.stop()


def test_per_model_parameters_apply_to_their_model_only(per_model_server: tuple[ServerProcess, int, int]) -> None:
    base = f"http://127.0.0.1:{per_model_server[2]}/v1/models"
    output = per_model_server[0].output
    assert "{name: small version: 1} is batched: max_batch_size=4 batch_timeout_micros=0 max_enqueued_batches=10" in output
    assert "{name: plain version: 1} is not batched: no batching_params.pbtxt" in output
    reply = requests.post(f"{base}/small:predict", json={"instances": [1.0] * 5}, timeout=TIMEOUT_S)
    assert (reply.status_code, reply.json()) == (400, {"error": "Task size 5 is larger than maximum input batch size 4"})
    reply = requests.post(f"{base}/small:predict", json={"instances": [1.0, 2.0, 3.0, 4.0]}, timeout=TIMEOUT_S)
    assert reply.json() == {"predictions": [2.5, 3.0, 3.5, 4.0]}
    reply = requests.post(f"{base}/plain:predict", json={"instances": [2.0] * 5}, timeout=TIMEOUT_S)
    assert reply.json() == {"predictions": [3.0] * 5}


def test_bad_batching_file_fails_startup(tmp_path: Path) -> None:
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]")
    shutil.copytree(DEMO_VERSION_DIR, tmp_path / "m" / "1")
    with ServerProcess([f"--port={free_port()}", "--rest_api_port=0", f"--model_base_path={tmp_path / 'm'}",
                        "--enable_batching", f"--batching_parameters_file={bad}"]) as process:
        assert process.wait_exit(TIMEOUT_S * 2) == 1
        assert (
            f"Failed to start server. Error: --batching_parameters_file: Invalid batching parameters in {bad}: "
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"
        ) in process.output
