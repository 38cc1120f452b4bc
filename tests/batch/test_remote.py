"""``pyserving.batch.remote``: scoring batches on a running server over gRPC and REST.

The real ``pyserving-model-server`` binary serves python-platform scalers (``y = v * x`` for
version v; classify / regress signatures) and the MLP SavedModel; results are compared with
the model called in-process. Retries and the in-flight cap are checked against small fake
servers (a gRPC PredictionService and an HTTP server) that fail or hold calls on command.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from pyserving.batch.remote import RemoteModel, open_remote_model
from pyserving.servable.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from pyserving.servable.signature import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD
from tests.support.polling import wait_for
from tests.support.routing_models import write_models
from tests.support.saved_models import write_mlp_model
from tests.support.server_process import ServerProcess, free_port, start_model_server

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}


# -- argument checks (no server) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, kwargs, words",
    [
        ("ftp://h:1", {}, "grpc://"),
        ("grpc://:8500", {}, "no host"),
        ("grpc://h:1/path", {}, "path"),
        ("http://h:1?x=1", {}, "query"),
        ("grpc://h:1", {"version": 1, "label": "a"}, "not both"),
        ("grpc://h:1", {"version": -1}, "version must be"),
        ("grpc://h:1", {"max_in_flight": 0}, "max_in_flight must be an int >= 1, got 0"),
        ("grpc://h:1", {"retries": -1}, "retries must be"),
        ("grpc://h:1", {"timeout_s": 0}, "timeout_s must be > 0"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(url: str, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        open_remote_model(url, "m", **kwargs)


def test_an_unreachable_rest_server_is_unavailable_after_the_retries() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(UnavailableError, match=r"failed 3 times .*cannot reach"):
        open_remote_model(f"http://127.0.0.1:{port}", "m", retries=2, **FAST)


# -- against the real server --------------------------------------------------------------------


def _write_config(root: Path) -> Path:
    bases = write_models(root / "models")  # rec_a/1 (factor 1), rec_b/2, ...
    scaler = root / "models" / "scaler"
    for version in (1, 2, 3):
        (scaler / str(version)).mkdir(parents=True)
        (scaler / str(version) / "model.py").write_text((bases["rec_a"] / "1" / "model.py").read_text())
    write_mlp_model(root / "models" / "mlp" / "1")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f"  config {{ name: 'scaler' base_path: '{scaler}' model_platform: 'python'\n"
        "    model_version_policy { all {} } version_labels { key: 'stable' value: 2 } }\n"
        f"  config {{ name: 'mlp' base_path: '{root / 'models' / 'mlp'}' model_platform: 'tensorflow' }}\n"
        "}\n"
    )
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, int, Path]]:
    root = tmp_path_factory.mktemp("remote")
    config = _write_config(root)
    process, grpc_port, rest_port = start_model_server([f"--model_config_file={config}"])
    try:
        yield process, grpc_port, rest_port, root
    finally:
        process.stop()


def _urls(server: tuple[ServerProcess, int, int, Path]) -> dict[str, str]:
    _, grpc_port, rest_port, _ = server
    return {"grpc": f"grpc://127.0.0.1:{grpc_port}", "http": f"http://127.0.0.1:{rest_port}"}


def _open_when_ready(url: str, name: str, **kwargs: Any) -> RemoteModel:
    """Models load after the ports open: a NOT_FOUND / UNAVAILABLE model is "not yet"."""
    return wait_for(
        lambda: open_remote_model(url, name, **kwargs), f"{name} at {url}", 90, 0.2,
        tolerate=(NotFoundError, UnavailableError),
    )


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_mlp_scores_equal_the_model_called_directly(server: Any, scheme: str) -> None:
    from pyserving.loaders.saved_model import SavedModelServable

    root: Path = server[3]
    rows = np.random.default_rng(7).standard_normal((33, 784)).astype(np.float32)
    direct = SavedModelServable.load(root / "models" / "mlp" / "1")
    try:
        expected = direct.run("serving_default", {"x": rows})["probabilities"]
    finally:
        direct.close()
    with _open_when_ready(_urls(server)[scheme], "mlp", max_in_flight=2) as model:
        assert model.method == PREDICT_METHOD and model.signature_name == "serving_default"
        assert set(model.signature.inputs) == {"x"} and model.signature.inputs["x"].shape == (None, 784)
        assert model.served_version == 1 and "model mlp" in model.description
        assert model.preferred_batch_size is None
        got = model.score({"x": rows.astype(np.float64)})  # float64 is cast to the signature's float32
        assert list(got) == ["probabilities"] and got["probabilities"].dtype == np.float32
        np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-6, atol=1e-7)
        many = list(model.score_many({"x": rows[i : i + 5]} for i in range(0, 33, 5)))
        np.testing.assert_allclose(np.concatenate([m["probabilities"] for m in many]), expected, rtol=1e-6, atol=1e-7)
        assert model.score({"x": rows[:0]})["probabilities"].shape == (0, 10)  # no request for zero rows
        assert model.statistics().peak_in_flight <= 2


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_bad_batch_is_invalid_argument_with_the_servers_message(server: Any, scheme: str) -> None:
    with _open_when_ready(_urls(server)[scheme], "mlp") as model:
        with pytest.raises(InvalidArgumentError) as caught:
            model.score({"x": np.zeros((2, 783), np.float32)})
        assert "784" in caught.value.message and "783" in caught.value.message, caught.value.message
        stats = model.statistics()
        assert (stats.failures, stats.retries, stats.in_flight) == (1, 0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_version_and_label_choose_the_answering_version(server: Any, scheme: str) -> None:
    url = _urls(server)[scheme]
    x = np.array([1.0, 2.5], np.float32)
    with _open_when_ready(url, "scaler", version=3) as model:  # all three versions are loaded
        wait_for(lambda: _try_score(model, x) is not None, "version 3", 60, 0.2)
    for kwargs, factor in (({}, 3.0), ({"version": 1}, 1.0), ({"version": 2}, 2.0), ({"label": "stable"}, 2.0)):
        with _open_when_ready(url, "scaler", **kwargs) as model:
            assert model.served_version == factor
            np.testing.assert_array_equal(model.score({"x": x})["y"], x * factor)
            assert ("label stable" if "label" in kwargs else "version") in model.description


def _try_score(model: RemoteModel, x: np.ndarray) -> Any:
    try:
        return model.score({"x": x})
    except (NotFoundError, UnavailableError):
        return None


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_classify_and_regress_through_score_examples(server: Any, scheme: str) -> None:
    from tensorflow.core.example import example_pb2

    def example(x: float, text: bytes) -> bytes:
        record = example_pb2.Example()
        record.features.feature["x"].float_list.value.append(x)
        record.features.feature["word"].bytes_list.value.append(text)
        record.features.feature["n"].int64_list.value.extend([1, 2])
        return record.SerializeToString()

    examples = [example(0.5, b"a"), example(float("nan"), b"\xff\x00"), example(2.0, b"c")]
    url = _urls(server)[scheme]
    with _open_when_ready(url, "scaler", version=2, signature="classify_x") as model:
        assert model.method == CLASSIFY_METHOD
        got = model.score_examples(examples)
        np.testing.assert_array_equal(got["classes"], np.array([[b"factor"]] * 3, dtype=object))
        np.testing.assert_array_equal(got["scores"], np.full((3, 1), 2.0, np.float32))
    with open_remote_model(url, "scaler", version=2) as predict_model, pytest.raises(InvalidArgumentError, match="classify or regress"):
        predict_model.score_examples(examples)
    with _open_when_ready(url, "scaler", version=3, signature="regress_x") as model:
        assert model.method == REGRESS_METHOD
        np.testing.assert_array_equal(model.score_examples(examples)["outputs"], np.full(3, 3.0, np.float32))
        assert model.score_examples([])["outputs"].shape == (0,)
    with pytest.raises(NotFoundError, match="no signature 'nope'; its signatures: classify_x, regress_x, serving_default"):
        open_remote_model(url, "scaler", signature="nope")


# -- fake servers: retries and the in-flight cap ------------------------------------------------


class _Gate:
    """Counts calls; fails the first ``failures`` of them; holds calls while ``hold`` is set."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.lock = threading.Lock()
        self.calls = self.in_flight = self.peak = 0
        self.hold = threading.Event()
        self.release = threading.Event()

    def enter(self) -> bool:
        """True when this call must fail."""
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            fail = self.calls <= self.failures
        if self.hold.is_set():
            assert self.release.wait(30), "the test never released the held calls"
        return fail

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


def _fake_grpc_server(gate: _Gate, code_name: str = "UNAVAILABLE") -> tuple[Any, int]:
    """A PredictionService answering y = 2 * x for ``scaled`` after ``gate``'s failures."""
    from concurrent import futures

    import grpc
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    from pyserving.server.tensor_codec import from_numpy, to_numpy

    code = getattr(grpc.StatusCode, code_name)

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def GetModelMetadata(self, request: Any, context: Any) -> Any:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = 7
            defs = get_model_metadata_pb2.SignatureDefMap()
            signature = defs.signature_def["serving_default"]
            signature.method_name = PREDICT_METHOD
            for key, holder in (("x", signature.inputs), ("y", signature.outputs)):
                holder[key].CopyFrom(meta_graph_pb2.TensorInfo(name=f"{key}:0", dtype=1))
                holder[key].tensor_shape.dim.add(size=-1)
            response.metadata["signature_def"].Pack(defs)
            return response

        def Predict(self, request: Any, context: Any) -> Any:
            fail = gate.enter()
            try:
                if fail:
                    context.abort(code, f"fake server: {code_name} (call {gate.calls})")
                response = predict_pb2.PredictResponse()
                response.outputs["y"].CopyFrom(from_numpy(to_numpy(request.inputs["x"]) * 2))
                return response
            finally:
                gate.leave()

    server = grpc.server(futures.ThreadPoolExecutor(16))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class _FakeRest(http.server.ThreadingHTTPServer):
    daemon_threads = True
    gate: _Gate
    status = 503


class _FakeRestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeRest

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        info = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}], "unknown_rank": False}}
        signature = {"inputs": {"x": dict(info, name="x:0")}, "outputs": {"y": dict(info, name="y:0")},
                     "method_name": PREDICT_METHOD}
        self._send(200, {"model_spec": {"name": "scaled", "version": "7"},
                         "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}}})

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        gate = self.server.gate
        fail = gate.enter()
        try:
            if fail:
                self._send(self.server.status, {"error": f"fake server: busy (call {gate.calls})"})
            else:
                self._send(200, {"outputs": [2 * v for v in doc["inputs"]["x"]]})
        finally:
            gate.leave()


def _fake_rest_server(gate: _Gate, status: int = 503) -> _FakeRest:
    server = _FakeRest(("127.0.0.1", 0), _FakeRestHandler)
    server.gate, server.status = gate, status
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Fake:
    """A started fake server of ``kind`` and its URL; ``stop()`` ends it."""

    def __init__(self, kind: str, gate: _Gate, failure: str = "UNAVAILABLE") -> None:
        self.kind = kind
        if kind == "grpc":
            self.server, port = _fake_grpc_server(gate, failure)
        else:
            self.server = _fake_rest_server(gate, 503 if failure == "UNAVAILABLE" else 429)
            port = self.server.server_address[1]
        self.url = f"{kind}://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.kind == "grpc":
            self.server.stop(grace=None).wait(10)
        else:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(params=["grpc", "http"])
def fake_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
def test_retryable_answers_are_retried_until_the_call_succeeds(fake_kind: str, failure: str) -> None:
    gate = _Gate(failures=3)
    fake = _Fake(fake_kind, gate, failure)
    try:
        with open_remote_model(fake.url, "scaled", retries=3, **FAST) as model:
            assert model.served_version == 7
            got = model.score({"x": np.array([1.0, 2.0], np.float32)})
            np.testing.assert_array_equal(got["y"], np.array([2.0, 4.0], np.float32))
            assert gate.calls == 4
            stats = model.statistics()
            assert (stats.retries, stats.failures, stats.calls) == (3, 0, 2)  # metadata + predict
    finally:
        fake.stop()


@pytest.mark.slow
@pytest.mark.parametrize("failure, error", [("UNAVAILABLE", UnavailableError), ("RESOURCE_EXHAUSTED", ResourceExhaustedError)])
def test_the_call_gives_up_after_the_retries_with_the_last_error(fake_kind: str, failure: str, error: type) -> None:
    gate = _Gate(failures=100)
    fake = _Fake(fake_kind, gate, failure)
    try:
        with open_remote_model(fake.url, "scaled", retries=2, **FAST) as model:
            with pytest.raises(error, match=r"Predict to .* failed 3 times .*fake server"):
                model.score({"x": np.array([1.0], np.float32)})
            assert gate.calls == 3
    finally:
        fake.stop()


@pytest.mark.slow
def test_calls_from_many_threads_never_exceed_max_in_flight(fake_kind: str) -> None:
    gate = _Gate()
    fake = _Fake(fake_kind, gate)
    callers: list[threading.Thread] = []
    results: list[Any] = []
    try:
        with open_remote_model(fake.url, "scaled", max_in_flight=3) as model:
            gate.hold.set()

            def call(i: int) -> None:
                results.append((i, model.score({"x": np.array([float(i)], np.float32)})["y"][0]))

            callers = [threading.Thread(target=call, args=(i,)) for i in range(8)]
            for thread in callers:
                thread.start()
            wait_for(lambda: gate.in_flight == 3 and model.statistics().waiting == 5, "3 held, 5 waiting", 30)
            assert model.statistics().in_flight == 3
            gate.release.set()
            for thread in callers:
                thread.join(30)
            assert sorted(results) == [(i, 2.0 * i) for i in range(8)]
            assert gate.peak == 3 and model.statistics().peak_in_flight == 3
    finally:
        gate.release.set()
        fake.stop()


@pytest.mark.slow
def test_score_many_keeps_the_order_and_the_cap(fake_kind: str) -> None:
    gate = _Gate()
    fake = _Fake(fake_kind, gate)
    try:
        with open_remote_model(fake.url, "scaled", max_in_flight=2) as model:
            gate.hold.set()
            batches = ({"x": np.array([float(i), float(i) + 0.5], np.float32)} for i in range(10))
            results = model.score_many(batches)
            first: list[Any] = []
            reader = threading.Thread(target=lambda: first.append(next(results)))
            reader.start()
            wait_for(lambda: gate.in_flight == 2, "two batches in flight", 30)
            assert model.statistics().in_flight == 2
            gate.release.set()
            reader.join(30)
            rest = list(results)
            got = [r["y"].tolist() for r in first + rest]
            assert got == [[2.0 * i, 2.0 * i + 1.0] for i in range(10)]
            assert gate.peak == 2 and gate.calls == 10
    finally:
        gate.release.set()
        fake.stop()


@pytest.mark.slow
def test_close_cancels_a_call_waiting_to_retry_and_refuses_later_calls(fake_kind: str) -> None:
    gate = _Gate(failures=100)
    fake = _Fake(fake_kind, gate)
    errors: list[BaseException] = []
    try:
        model = open_remote_model(fake.url, "scaled", retries=5, backoff_s=60.0, max_backoff_s=60.0)

        def call() -> None:
            try:
                model.score({"x": np.array([1.0], np.float32)})
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        wait_for(lambda: model.statistics().retries == 1, "the first retry wait", 30)
        model.close()
        caller.join(30)
        assert not caller.is_alive() and [type(e).__name__ for e in errors] == ["CancelledError"]
        assert "cancelled by close()" in str(errors[0])
        with pytest.raises(FailedPreconditionError, match="is closed"):
            model.submit({"x": np.array([1.0], np.float32)})
        model.close()  # idempotent
    finally:
        fake.stop()
