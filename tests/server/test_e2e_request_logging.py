"""End to end: request logging of the real ``pyserving-model-server`` (issue 8, part 3).

``logged_run`` (module) starts the binary with two models: ``half`` (TF1 half_plus_two,
``logging_config`` with ``sampling_rate: 1.0`` and a ``filename_prefix`` under the test's
folder) and ``plain`` (a ``python``-platform model without ``logging_config``). It sends
five requests that must be logged — REST predict (row and columnar format), REST classify,
gRPC Predict and gRPC Regress — and several that must not (an invalid input, metadata and
status calls, a request to ``plain``), stops the server with SIGTERM and only then reads
the files with ``tf.data.TFRecordDataset``, record by record, as ``PredictionLog``s.

The same log then serves as the warmup file of a new version of ``half``, which must load
and become AVAILABLE; an invalid ``logging_config`` is run to the binary's exit.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.support.model_drops import write_python_version
from tests.support.routing_models import Rest
from tests.support.saved_models import write_half_plus_two_tf1
from tests.support.server_process import ServerProcess, free_port, start_model_server
from tests.support.traffic import rest_status

pytestmark = pytest.mark.slow

WAIT_S = 30.0
#: What logging_config writes: <prefix>.<UTC time>.<5-digit number>.tfrecord
FILE_NAME = re.compile(r"^half\.\d{8}T\d{6}Z\.\d{5}\.tfrecord$")

#: The REST bodies sent (and logged), in order; the gRPC requests are built in the fixture.
ROWS_BODY = {"instances": [[1.0], [2.0]]}
COLUMNS_BODY = {"inputs": {"x": [[6.0]]}}
CLASSIFY_BODY = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]}


def _model_config(root: Path, sampling: str = "sampling_rate: 1.0", prefix: str | None = None) -> Path:
    prefix = str(root / "logs" / "half") if prefix is None else prefix
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
  config {{
    name: 'half' base_path: '{root / "half"}' model_platform: 'tensorflow'
    logging_config {{
      log_collector_config {{ filename_prefix: '{prefix}' }}
      sampling_config {{ {sampling} }}
    }}
  }}
  config {{ name: 'plain' base_path: '{root / "plain"}' model_platform: 'python' }}
}}
""")
    return config


@dataclass
class LoggedRun:
    root: Path
    exit_code: int | None
    output: str
    files: list[Path]
    records: list[Any]  # PredictionLog, in file order
    rest_answers: list[Any]  # parsed JSON of the three logged REST requests
    grpc_sent: list[Any]  # PredictRequest, RegressionRequest
    grpc_answers: list[Any]  # PredictResponse, RegressionResponse
    wall_s: tuple[float, float]  # time.time() before the first and after the last request


def _read_records(files: list[Path]) -> list[Any]:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    dataset = tf.data.TFRecordDataset([str(f) for f in files])
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in dataset]


def _grpc_requests() -> tuple[Any, Any]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, regression_pb2

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "half"
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[3.0]], np.float32)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half"
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(3.0)
    return predict, regress


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

    root = tmp_path_factory.mktemp("request_log")
    write_half_plus_two_tf1(root / "half" / "1")
    write_python_version(root / "plain" / "1")
    config = _model_config(root)
    process, grpc_port, rest_port = start_model_server([f"--model_config_file={config}", "--max_num_load_retries=0"])
    try:
        started = time.time()
        with Rest(rest_port) as rest:
            answers = []
            for body in (ROWS_BODY, COLUMNS_BODY):
                answers.append(rest.request("POST", "/v1/models/half:predict", body))
            answers.append(rest.request("POST", "/v1/models/half:classify", CLASSIFY_BODY))
            assert all(a.status == 200 for a in answers), answers
            # Not logged: a failure, status and metadata, a model without logging_config.
            assert rest.request("POST", "/v1/models/half:predict", {"instances": [[1.0, 2.0]]}).status == 400
            assert rest.get("/v1/models/half").status == 200
            assert rest.get("/v1/models/half/metadata").status == 200
            assert rest.predict("plain", 2.0).status == 200
        predict, regress = _grpc_requests()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            grpc_answers = [stub.Predict(predict, WAIT_S), stub.Regress(regress, WAIT_S)]
            metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            metadata.model_spec.name = "half"
            stub.GetModelMetadata(metadata, WAIT_S)
        finished = time.time()
    finally:
        exit_code = process.stop()  # SIGTERM; the files are read only after the exit
    files = sorted((root / "logs").iterdir()) if (root / "logs").exists() else []
    return LoggedRun(root, exit_code, process.output, files, _read_records(files), [a.body for a in answers],
                     [predict, regress], grpc_answers, (started, finished))


def test_every_answered_request_is_in_the_log_after_sigterm(logged_run: LoggedRun) -> None:
    assert logged_run.exit_code == 0, logged_run.output[-3000:]
    assert [f.name for f in logged_run.files if not FILE_NAME.match(f.name)] == [], logged_run.files
    assert len(logged_run.files) == 1, logged_run.files
    kinds = [record.WhichOneof("log_type") for record in logged_run.records]
    # Sent in this order; failures, status / metadata calls and the model without
    # logging_config are not logged.
    assert kinds == ["predict_log", "predict_log", "classify_log", "predict_log", "regress_log"], kinds
    first, last = logged_run.wall_s
    for record in logged_run.records:
        metadata = record.log_metadata
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("half", 1)
        assert metadata.sampling_config.sampling_rate == 1.0
        assert int(first) <= metadata.timestamp_secs <= last + 1


def test_rest_predicts_are_recorded_as_grpc_predict_requests_with_their_answers(logged_run: LoggedRun) -> None:
    import tensorflow as tf

    rows, columns = logged_run.records[0].predict_log, logged_run.records[1].predict_log
    for log, sent, answer in ((rows, ROWS_BODY["instances"], logged_run.rest_answers[0]["predictions"]),
                              (columns, COLUMNS_BODY["inputs"]["x"], logged_run.rest_answers[1]["outputs"])):
        assert log.request.model_spec.name == "half"
        assert list(log.request.inputs) == ["x"]
        np.testing.assert_array_equal(tf.make_ndarray(log.request.inputs["x"]), np.array(sent, np.float32))
        assert list(log.response.outputs) == ["y"]
        np.testing.assert_array_equal(tf.make_ndarray(log.response.outputs["y"]), np.array(answer, np.float32))
        assert (log.response.model_spec.name, log.response.model_spec.version.value) == ("half", 1)
    assert logged_run.rest_answers[0] == {"predictions": [[2.5], [3.0]]}
    assert logged_run.records[0].log_metadata.model_spec.signature_name == "serving_default"


def test_a_rest_classify_is_recorded_as_a_classification_request(logged_run: LoggedRun) -> None:
    log = logged_run.records[2].classify_log
    assert log.request.model_spec.signature_name == "classify_x_to_y"
    examples = log.request.input.example_list.examples
    assert [list(e.features.feature["x"].float_list.value) for e in examples] == [[1.0], [4.0]]
    scores = [[c.score for c in result.classes] for result in log.response.result.classifications]
    answered = [[score for _label, score in result] for result in logged_run.rest_answers[2]["results"]]
    assert scores == answered == [[2.5], [4.0]]
    assert logged_run.records[2].log_metadata.model_spec.signature_name == "classify_x_to_y"


def test_grpc_requests_and_responses_are_recorded_as_they_were(logged_run: LoggedRun) -> None:
    predict, regress = logged_run.records[3].predict_log, logged_run.records[4].regress_log
    assert predict.request == logged_run.grpc_sent[0]
    assert predict.response == logged_run.grpc_answers[0]
    assert list(predict.response.outputs["y"].float_val) == [3.5]
    assert regress.request == logged_run.grpc_sent[1]
    assert regress.response == logged_run.grpc_answers[1]
    assert [r.value for r in regress.response.result.regressions] == [3.5]


def test_the_log_is_warmup_data_for_a_new_version_of_the_model(logged_run: LoggedRun) -> None:
    assert len(logged_run.files) == 1
    base = logged_run.root / "half"
    write_half_plus_two_tf1(base / "2", a=1.0, b=0.0)  # y = x: tells version 2's answers apart
    warmup = base / "2" / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir()
    shutil.copyfile(logged_run.files[0], warmup)
    process, _, rest_port = start_model_server(
        [f"--model_base_path={base}", "--model_name=half", "--max_num_load_retries=0"])
    try:
        assert rest_status(rest_port, "half")[2] == ("AVAILABLE", "")
        assert "Warmed up {name: half version: 2}: 5 warmup records" in process.output, process.output
        with Rest(rest_port) as rest:
            assert rest.request("POST", "/v1/models/half:predict", {"instances": [[7.0]]}).body \
                == {"predictions": [[7.0]]}
    finally:
        process.stop()


@pytest.mark.parametrize("case", ["sampling_rate 2", "no filename_prefix"])
def test_an_invalid_logging_config_fails_startup_naming_it(tmp_path: Path, case: str) -> None:
    write_python_version(tmp_path / "plain" / "1")
    (tmp_path / "half").mkdir()
    if case == "sampling_rate 2":
        config = _model_config(tmp_path, sampling="sampling_rate: 2")
        expected = "logging_config of model half: sampling_config.sampling_rate must be in [0, 1], got 2.0"
    else:
        config = _model_config(tmp_path, prefix="")
        expected = "logging_config of model half: log_collector_config.filename_prefix"
    process = ServerProcess([f"--port={free_port()}", f"--rest_api_port={free_port()}",
                             f"--model_config_file={config}"])
    try:
        code = process.wait_exit(60)
    finally:
        process.stop()
    assert code == 1, process.output
    assert "Failed to start server. Error: " in process.output and expected in process.output, process.output
    assert not (tmp_path / "logs").exists()

