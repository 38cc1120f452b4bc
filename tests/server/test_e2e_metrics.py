"""End to end: Prometheus metrics of the real ``pyserving-model-server`` (issue 8, part 1).

Every page is fetched from the REST port and parsed with prometheus-client's text parser
(:mod:`tests.support.prometheus_page`); values are compared between two scrapes, so each
test counts only its own requests. Observers run before a request is answered, so a scrape
made after the answer already counts it.

Servers (real binary, free loopback ports, stopped in teardown):

* ``python_server`` (module): ``python``-platform models that load in milliseconds —
  ``rec_a`` / ``rec_b`` (y = 1x / 2x, :mod:`tests.support.routing_models`), ``swap``
  (y = version * x) in a watched folder, ``gate`` (answers once a file exists, so a request
  can be held in flight) — a route ``ab`` (arm ``a`` -> ``rec_a`` by weight, arm ``b`` ->
  ``rec_b`` only through the rule ``x-arm: b``), metrics at a configured path ``/custom/metrics``;
* ``tf_server`` (module): two TF1 half_plus_two SavedModels with ``--enable_batching
  --enable_per_model_batching_parameters``: ``half`` (not batched, 3 warmup records) and
  ``batched`` (``batching_params.pbtxt``: max 4 rows, allowed sizes 2 and 4); metrics at
  the default path (the config sets ``enable`` only);
* a server without ``--monitoring_config_file``, and bad monitoring configs run to their exit.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest

from tests.support.model_drops import write_python_version
from tests.support.polling import wait_for
from tests.support.prometheus_page import Page, get_status, scrape
from tests.support.routing_models import Rest, grpc_predict_request, route_text, write_model_config, write_models
from tests.support.saved_models import write_half_plus_two_tf1
from tests.support.server_process import ServerProcess, free_port, start_model_server
from tests.support.warmup_files import classify_log, predict_log, regress_log, write_warmup_file

pytestmark = pytest.mark.slow

WAIT_S = 30.0
DEFAULT_PATH = "/monitoring/prometheus/metrics"
CUSTOM_PATH = "/custom/metrics"
#: TF Serving's µs buckets: 10 * 1.8**k, k = 0..32, then +Inf.
TF_BOUNDS_US = [10 * 1.8**k for k in range(33)]

GATE_MODEL = '''
import os
import time

import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Gate:
    """y = x, answered once the file ``release`` exists (the test creates it; 30 s at most)."""

    def __init__(self, release):
        self.release = release
        spec = TensorSpec(DType.FLOAT, (None,))
        self.signatures = {"serving_default": SignatureSpec({"x": spec}, {"y": spec})}

    def run(self, signature_name, inputs, output_filter=()):
        deadline = time.monotonic() + 30.0
        while not os.path.exists(self.release) and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"y": inputs["x"].astype(np.float32)}


def create_servable(version_dir):
    return Gate(os.path.join(str(version_dir.parent.parent), "gate_release"))
'''


@dataclass
class Served:
    process: ServerProcess
    grpc_port: int
    rest_port: int
    root: Path

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")


def _prediction_stub(channel: grpc.Channel) -> Any:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _grpc_code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value.code()


def _assert_tf_us_buckets(page: Page, name: str, **labels: str) -> float:
    """The series has TF Serving's buckets, is cumulative and ends at its count; returns the count."""
    buckets = page.buckets(name, **labels)
    les = [le for le, _ in buckets]
    assert len(les) == 34 and les[0] == "10" and les[-1] == "+Inf", les
    assert [float(le) for le in les[:-1]] == pytest.approx(TF_BOUNDS_US, rel=1e-5)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), buckets
    assert counts[-1] == page.value(name, **labels)
    return counts[-1]


# -- python-platform models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("metrics")
    bases = write_models(root / "models")
    write_python_version(root / "models" / "swap" / "1")
    (root / "models" / "gate" / "1").mkdir(parents=True)
    (root / "models" / "gate" / "1" / "model.py").write_text(GATE_MODEL)
    config = root / "models.config"
    write_model_config(config, {**bases, "swap": root / "models" / "swap", "gate": root / "models" / "gate"})
    routes = root / "routes.config"
    routes.write_text(route_text("ab", {"a": ("rec_a", 1), "b": ("rec_b", 0)}, rules=(("x-arm", "b", "b"),)))
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{\n  enable: true\n  path: "{CUSTOM_PATH}"\n}}\n')
    process, grpc_port, rest_port = start_model_server([
        f"--model_config_file={config}", f"--routing_config_file={routes}",
        f"--monitoring_config_file={monitoring}", "--file_system_poll_wait_seconds=1",
    ])
    try:
        yield Served(process, grpc_port, rest_port, root)
    finally:
        process.stop()


def test_the_page_is_prometheus_text_at_the_configured_path(python_server: Served) -> None:
    page = scrape(python_server.rest_port, CUSTOM_PATH)
    assert page.content_type.startswith("text/plain") and "version=0.0.4" in page.content_type, page.content_type
    for name in (":tensorflow:serving:request_count", ":tensorflow:serving:request_latency",
                 "pyserving_requests", "pyserving_request_latency_seconds", "pyserving_servable_state",
                 "pyserving_loads", "pyserving_swaps", "process_cpu_seconds"):
        page.family(name)
    assert page.family(":tensorflow:serving:request_count").type == "counter"
    assert page.family(":tensorflow:serving:request_latency").type == "histogram"
    status, _, _ = get_status(python_server.rest_port, DEFAULT_PATH)
    assert status == 404  # only the configured path serves the page


def test_request_counts_and_latencies_move_with_rest_and_grpc_requests(python_server: Served) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    port = python_server.rest_port
    before = scrape(port, CUSTOM_PATH)
    with Rest(port) as rest:
        for x in (1.0, 2.0, 3.0):
            answer = rest.predict("rec_a", x)
            assert answer.status == 200 and answer.body == {"predictions": [x]}, answer
        bad = rest.request("POST", "/v1/models/rec_a:predict", {"instances": [{"z": 1.0}]})
        assert bad.status == 400, bad
        assert rest.get("/v1/models/rec_a").status == 200  # REST status: TF counts every REST call
    with python_server.channel() as channel:
        stub = _prediction_stub(channel)
        for x in (4.0, 5.0):
            assert list(stub.Predict(grpc_predict_request("rec_a", x), WAIT_S).outputs["y"].float_val) == [x]
        assert _grpc_code(lambda: stub.Predict(grpc_predict_request("no_such_model"), WAIT_S)) \
            == grpc.StatusCode.NOT_FOUND
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "rec_a"
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, WAIT_S)
    after = scrape(port, CUSTOM_PATH)

    tf_count = ":tensorflow:serving:request_count"
    assert after.delta(before, tf_count, model_name="rec_a", status="OK") == 3 + 2 + 1  # not GetModelStatus
    assert after.delta(before, tf_count, model_name="rec_a", status="INVALID_ARGUMENT") == 1
    assert after.delta(before, tf_count, model_name="no_such_model", status="NOT_FOUND") == 1
    # TF Serving's exact names on the wire: counter samples without "_total".
    assert f"# TYPE {tf_count} counter" in after.text
    assert f'{tf_count}{{model_name="rec_a",status="OK"}}' in after.text
    assert not after.sample_lines(f"{tf_count}_total")

    ours = "pyserving_requests"
    assert after.delta(before, ours, model="rec_a", version="1", api="predict", entrypoint="REST", status="OK") == 3
    assert after.delta(before, ours, model="rec_a", api="predict", entrypoint="REST", status="INVALID_ARGUMENT") == 1
    assert after.delta(before, ours, model="rec_a", version="1", api="Predict", entrypoint="GRPC", status="OK") == 2
    assert after.delta(before, ours, model="no_such_model", api="Predict", entrypoint="GRPC", status="NOT_FOUND") == 1
    assert after.delta(before, ours, model="rec_a", api="GetModelStatus", entrypoint="GRPC", status="OK") == 1

    latency = ":tensorflow:serving:request_latency"  # successful Predict / predict only
    rest_series = {"model_name": "rec_a", "API": "predict", "entrypoint": "REST"}
    grpc_series = {"model_name": "rec_a", "API": "Predict", "entrypoint": "GRPC"}
    assert _assert_tf_us_buckets(after, latency, **rest_series) - before.value(latency, **rest_series) == 3
    assert _assert_tf_us_buckets(after, latency, **grpc_series) - before.value(latency, **grpc_series) == 2
    assert after.delta(before, latency, "_sum", **rest_series) > 0

    seconds = "pyserving_request_latency_seconds"
    series = {"model": "rec_a", "version": "1", "api": "predict", "entrypoint": "REST"}
    assert after.delta(before, seconds, **series) == 3
    buckets = after.buckets(seconds, **series)
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds[0] == pytest.approx(1e-4) and bounds[-1] == pytest.approx(100.0), bounds
    assert bounds == sorted(bounds) and buckets[-1] == ("+Inf", after.value(seconds, **series))
    assert 0 < after.delta(before, seconds, "_sum", **series) < 3 * WAIT_S


def test_requests_in_flight_are_counted_while_they_run(python_server: Served) -> None:
    port = python_server.rest_port
    release = python_server.root / "models" / "gate_release"
    answers: list[Any] = []

    def call() -> None:
        with Rest(port) as rest:
            answers.append(rest.predict("gate", 7.0))

    caller = threading.Thread(target=call, name="gate-request")
    caller.start()
    try:
        wait_for(lambda: scrape(port, CUSTOM_PATH).value("pyserving_requests_in_flight", model="gate") == 1,
                 "the gate request to be in flight", WAIT_S)
    finally:
        release.touch()
        caller.join(WAIT_S)
    assert not caller.is_alive()
    assert answers and answers[0].status == 200 and answers[0].body == {"predictions": [7.0]}, answers
    assert scrape(port, CUSTOM_PATH).value("pyserving_requests_in_flight", model="gate") == 0


def test_servable_states_and_lifecycle_counters_follow_a_version_swap(python_server: Served) -> None:
    port, root = python_server.rest_port, python_server.root
    before = scrape(port, CUSTOM_PATH)
    assert before.value("pyserving_servable_state", model="swap", version="1", state="AVAILABLE") == 1
    assert before.value("pyserving_loads", model="swap") == 1

    staged = write_python_version(root / "staging" / "2")
    os.rename(staged, root / "models" / "swap" / "2")

    def swapped() -> Page | None:
        page = scrape(port, CUSTOM_PATH)
        states = {(s.labels["version"], s.labels["state"]) for s in page.samples("pyserving_servable_state", model="swap")}
        done = states == {("2", "AVAILABLE")} and page.delta(before, "pyserving_unloads", model="swap") == 1
        return page if done else None

    after = wait_for(swapped, "version 2 of swap to replace version 1", WAIT_S)
    assert after.delta(before, "pyserving_loads", model="swap") == 1
    assert after.delta(before, "pyserving_swaps", model="swap") == 1
    assert after.delta(before, "pyserving_load_failures", model="swap") == 0
    assert after.delta(before, "pyserving_load_duration_seconds", model="swap") == 1
    assert after.delta(before, "pyserving_unload_duration_seconds", model="swap") == 1
    with Rest(port) as rest:
        assert rest.predict("swap", 3.0).body == {"predictions": [6.0]}


def test_route_metrics_count_requests_per_arm_and_choice(python_server: Served) -> None:
    port = python_server.rest_port
    before = scrape(port, CUSTOM_PATH)
    with Rest(port) as rest:
        for _ in range(4):
            assert rest.predict("ab", 1.0).body == {"predictions": [1.0]}
        for _ in range(3):
            assert rest.predict("ab", 1.0, headers={"x-arm": "b"}).body == {"predictions": [2.0]}
        for _ in range(2):
            assert rest.request("POST", "/v1/models/ab:predict", {"instances": [{"z": 1.0}]}).status == 400
    with python_server.channel() as channel:
        answer = _prediction_stub(channel).Predict(grpc_predict_request("ab", 1.0), WAIT_S)
        assert answer.model_spec.name == "rec_a"
    after = scrape(port, CUSTOM_PATH)

    assert after.delta(before, "pyserving_route_requests", route="ab", arm="a") == 4 + 2 + 1
    assert after.delta(before, "pyserving_route_requests", route="ab", arm="b") == 3
    assert after.delta(before, "pyserving_route_errors", route="ab", arm="a") == 2
    assert after.delta(before, "pyserving_route_errors", route="ab", arm="b") == 0
    assert after.delta(before, "pyserving_route_choices", route="ab", reason="weight") == 7
    assert after.delta(before, "pyserving_route_choices", route="ab", reason="rule") == 3
    assert after.delta(before, "pyserving_route_latency_seconds", route="ab", arm="b") == 3
    # The request metrics name the model that answered, not the route.
    assert after.delta(before, ":tensorflow:serving:request_count", model_name="rec_b", status="OK") == 3


# -- SavedModels: load, warmup, runtime and batching metrics -------------------------------------

PER_MODEL_BATCHING = """max_batch_size { value: 4 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
batch_timeout_micros { value: 0 }
"""


@pytest.fixture(scope="module")
def tf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("tf_metrics")
    write_half_plus_two_tf1(root / "half" / "1")
    write_warmup_file(root / "half" / "1", [
        predict_log({"x": np.array([[1.0], [2.0]], np.float32)}), classify_log([1.0], "classify_x_to_y"),
        regress_log([3.0], "regress_x_to_y"),
    ])
    write_half_plus_two_tf1(root / "batched" / "1")
    (root / "batched" / "1" / "batching_params.pbtxt").write_text(PER_MODEL_BATCHING)
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f"  config {{ name: '{name}' base_path: '{root / name}' model_platform: 'tensorflow' }}\n"
        for name in ("half", "batched")) + "}\n")
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")  # no path: the default one
    process, grpc_port, rest_port = start_model_server([
        f"--model_config_file={config}", f"--monitoring_config_file={monitoring}",
        "--enable_batching", "--enable_per_model_batching_parameters", "--max_num_load_retries=0",
    ])
    try:
        yield Served(process, grpc_port, rest_port, root)
    finally:
        process.stop()


def _tf_predict_request(model: str, rows: list[float]) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[r] for r in rows], np.float32)))
    return request


def test_savedmodel_load_and_warmup_metrics_have_tf_serving_names(tf_server: Served) -> None:
    page = scrape(tf_server.rest_port)  # the default path
    for name in ("half", "batched"):
        path = str(tf_server.root / name / "1")
        assert page.value(":tensorflow:cc:saved_model:load_attempt_count", model_path=path, status="success") == 1
        assert page.value(":tensorflow:cc:saved_model:load_attempt_count", model_path=path, status="fail") == 0
        assert page.value(":tensorflow:cc:saved_model:load_latency", model_path=path) > 0
        assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{path}",status="success"}} 1' in page.text
    half = str(tf_server.root / "half" / "1")
    warmup = {"model_path": half, "status": "OK"}
    assert _assert_tf_us_buckets(page, ":tensorflow:serving:model_warmup_latency", **warmup) == 1
    assert page.value(":tensorflow:serving:model_warmup_records_read", **warmup) == 3
    assert not page.samples(":tensorflow:serving:model_warmup_latency", model_path=str(tf_server.root / "batched" / "1"))


def test_runtime_latency_counts_model_calls(tf_server: Served) -> None:
    port = tf_server.rest_port
    before = scrape(port)
    with Rest(port) as rest:
        for x in (1.0, 2.0):
            assert rest.request("POST", "/v1/models/half:predict", {"instances": [[x]]}).body \
                == {"predictions": [[0.5 * x + 2]]}
    with tf_server.channel() as channel:
        _prediction_stub(channel).Predict(_tf_predict_request("half", [4.0]), WAIT_S)
        _prediction_stub(channel).Predict(_tf_predict_request("batched", [4.0]), WAIT_S)
    after = scrape(port)
    runtime = ":tensorflow:serving:runtime_latency"
    series = {"model_name": "half", "API": "Predict"}
    assert _assert_tf_us_buckets(after, runtime, **series) - before.value(runtime, **series) == 3
    assert after.samples(runtime, **series)[0].labels["runtime"] == "TF1"
    assert after.delta(before, runtime, model_name="batched", API="Predict") == 1  # gRPC, batched
    latency = ":tensorflow:serving:request_latency"
    assert after.delta(before, latency, model_name="half", API="predict", entrypoint="REST") == 2
    assert after.delta(before, latency, model_name="half", API="Predict", entrypoint="GRPC") == 1


def test_runtime_latency_counts_rest_predicts_on_a_batched_version(tf_server: Served) -> None:
    before = scrape(tf_server.rest_port)
    with Rest(tf_server.rest_port) as rest:
        assert rest.request("POST", "/v1/models/batched:predict", {"instances": [[2.0]]}).status == 200
    after = scrape(tf_server.rest_port)
    assert after.delta(before, ":tensorflow:serving:runtime_latency", model_name="batched", API="Predict") == 1


def test_batching_metrics_count_tasks_rows_and_padding(tf_server: Served) -> None:
    port = tf_server.rest_port
    before = scrape(port)
    with Rest(port) as rest:  # one request at a time: each request is a batch of its own
        for rows in ([1.0], [1.0, 2.0, 3.0], [5.0, 6.0]):
            answer = rest.request("POST", "/v1/models/batched:predict", {"instances": [[r] for r in rows]})
            assert answer.body == {"predictions": [[0.5 * r + 2] for r in rows]}, answer
    with tf_server.channel() as channel:
        answer = _prediction_stub(channel).Predict(_tf_predict_request("batched", [8.0]), WAIT_S)
        assert list(answer.outputs["y"].float_val) == [6.0]
    after = scrape(port)
    # 4 requests, rows 1 + 3 + 2 + 1 = 7, executed as 2 + 4 + 2 + 2 = 10 (allowed sizes 2 and 4).
    tf = ":tensorflow:serving:batching_session:"
    assert after.delta(before, f"{tf}input_batch_size") == 4
    assert after.delta(before, f"{tf}input_batch_size", "_sum") == 7
    assert after.delta(before, f"{tf}processed_batch_size") == 4
    assert after.delta(before, f"{tf}processed_batch_size", "_sum") == 10
    assert after.delta(before, f"{tf}padding_size", execution_batch_size="2") == 3
    assert after.delta(before, f"{tf}padding_size", "_sum", execution_batch_size="4") == 1
    assert after.delta(before, f"{tf}queuing_latency") == 4  # label: the version's thread_pool_name
    series = {"model": "batched", "version": "1"}
    assert after.delta(before, "pyserving_batch_size", **series) == 4
    assert after.delta(before, "pyserving_batch_size", "_sum", **series) == 7
    assert after.delta(before, "pyserving_batch_padded_rows", **series) == 3
    assert after.delta(before, "pyserving_batch_queue_delay_seconds", **series) == 4
    assert after.value("pyserving_batch_queue_depth", **series) == 0
    assert after.value("pyserving_batches_in_flight", **series) == 0
    assert after.value("pyserving_batch_rejected", **series) == 0
    assert len(after.samples("pyserving_batch_rejected", **series)) == 5  # one per reason
    assert not after.samples("pyserving_batch_size", model="half")  # not batched


# -- monitoring off, bad configs -----------------------------------------------------------------


def test_without_a_monitoring_config_there_is_no_metrics_page(tmp_path: Path) -> None:
    write_python_version(tmp_path / "plain" / "1")
    process, _, rest_port = start_model_server([f"--model_base_path={tmp_path / 'plain'}", "--model_name=plain"])
    try:
        with Rest(rest_port) as rest:
            assert rest.predict("plain", 2.0).body == {"predictions": [2.0]}
        for path in (DEFAULT_PATH, CUSTOM_PATH):
            assert get_status(rest_port, path)[0] == 404, path
    finally:
        process.stop()


@pytest.mark.parametrize("case", ["relative path", "unknown field", "missing file", "no REST port"])
def test_a_bad_monitoring_config_fails_startup_naming_the_problem(tmp_path: Path, case: str) -> None:
    write_python_version(tmp_path / "plain" / "1")
    config = tmp_path / "monitoring.config"
    rest_port = free_port()
    if case == "relative path":
        config.write_text('prometheus_config { enable: true path: "metrics" }\n')
        expected = (f"Failed to start server. Error: Invalid monitoring config {config}: "
                    "prometheus_config.path must start with '/', got 'metrics'")
    elif case == "unknown field":
        config.write_text("prometheus_config { enabled: true }\n")
        expected = f"Failed to start server. Error: Cannot parse monitoring config {config} line 1"
    elif case == "missing file":
        expected = f"Failed to start server. Error: Cannot read monitoring config file {config}"
    else:
        config.write_text("prometheus_config { enable: true }\n")
        rest_port = 0
        expected = "--monitoring_config_file needs the REST port"
    process = ServerProcess([f"--port={free_port()}", f"--rest_api_port={rest_port}",
                             f"--model_base_path={tmp_path / 'plain'}", f"--monitoring_config_file={config}"])
    try:
        code = process.wait_exit(60)
    finally:
        process.stop()
    assert code == 1, process.output
    assert expected in process.output, process.output
    if case == "unknown field":
        assert "enabled" in process.output, process.output
