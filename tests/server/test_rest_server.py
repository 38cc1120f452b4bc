"""The REST front end, driven over real HTTP (``requests``) against an in-process server.

The server runs over a real :class:`DataPlane` whose ServingCore is a small fake (a dict
of ServableId -> numpy servable), so every check is about the REST layer: routing, TF
Serving's documented JSON examples, error statuses and messages, body limits, gzip, CORS,
timeouts and life cycle. After every test the shared server must still answer a predict.
"""

from __future__ import annotations

import base64
import gzip
import os
import socket
import threading
from typing import Any, Iterator, Mapping

import numpy as np
import pytest
import requests

from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.errors import InvalidArgumentError, NotFoundError, UnavailableError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from pyserving.servable.state import ManagerState, ServableState
from pyserving.server.data_plane import DataPlane
from pyserving.server.readiness import Readiness
from pyserving.server.rest_server import RestServerHandle, RestServerOptions, start_rest_server
from pyserving.testing import HalfPlusTwoServable, StaticServingCore

pytestmark = pytest.mark.slow  # starts servers; metadata and classify load TensorFlow's protos

# -- the fake model and core ---------------------------------------------------------------

_VEC = (None,)
_F = DType.FLOAT


def _vec(dtype: DType = _F) -> TensorSpec:
    return TensorSpec(dtype, _VEC)


#: This module's signatures, on top of HalfPlusTwoServable's serving_default, classify_x_to_y,
#: regress_x_to_y and tensorflow/serving/regress (TF Serving's half_plus_two model).
_SIGNATURES = {
    "two_outputs": SignatureSpec({"x": _vec()}, {"y": _vec(), "double": _vec()}),
    "strings": SignatureSpec({"text": _vec(DType.STRING)}, {"upper": _vec(DType.STRING), "echo_bytes": _vec(DType.STRING)}),
    "multi": SignatureSpec({"a": _vec(), "b": _vec()}, {"sum": _vec()}),
    "boom": SignatureSpec({"x": _vec()}, {"y": _vec()}),
    "slow": SignatureSpec({"x": _vec()}, {"y": _vec()}),
}


class HalfPlusN(HalfPlusTwoServable):
    """y = 0.5 * x + offset, plus string, two-output, multi-input, failing and gated signatures.
    ``gate`` holds the "slow" signature until a test sets it; ``entered`` is set once it waits."""

    def __init__(self, offset: float, rank_known: bool = True) -> None:
        super().__init__(offset, x_shape=_VEC if rank_known else None, extra_signatures=_SIGNATURES)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def compute(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature_name == "boom":
            raise RuntimeError("kaput")
        if signature_name == "slow":
            self.entered.set()
            assert self.gate.wait(30), "the test never released the slow signature"
            return {"y": self.half_plus(inputs["x"])}
        if signature_name == "strings":
            text = inputs["text"]
            return {
                "upper": np.array([t.upper() for t in text], dtype=object),
                "echo_bytes": np.array(list(text), dtype=object),
            }
        if signature_name == "multi":
            return {"sum": inputs["a"] + inputs["b"]}
        if signature_name == "two_outputs":
            return {"y": self.half_plus(inputs["x"]), "double": inputs["x"] * 2}
        return super().compute(signature_name, inputs)


def _make_core() -> StaticServingCore:
    """Fixed servables and labels; "versioned" also has a version 3 that failed to load."""
    servables = {
        ServableId("half_plus_two", 123): HalfPlusN(2.0),
        ServableId("saved_model_half_plus_three", 123): HalfPlusN(3.0),
        ServableId("default", 123): HalfPlusN(2.0, rank_known=False),
        ServableId("versioned", 1): HalfPlusN(2.0),
        ServableId("versioned", 2): HalfPlusN(3.0),
        ServableId("a/b c", 1): HalfPlusN(10.0),
    }
    versioned = [ServableState(ServableId("versioned", v), ManagerState.AVAILABLE) for v in (1, 2)]
    versioned.append(ServableState(ServableId("versioned", 3), ManagerState.END, NotFoundError("weights missing")))
    labels = {"versioned": {"stable": 1, "canary": 2, "gone": 9}}
    return StaticServingCore(servables, labels=labels, states={"versioned": versioned})


# -- fixtures ------------------------------------------------------------------------------

class Client:
    """A keep-alive HTTP client bound to one server."""

    def __init__(self, handle: RestServerHandle) -> None:
        self.handle = handle
        self.base = f"http://127.0.0.1:{handle.port}"
        self.session = requests.Session()

    def post(self, path: str, body: Any = None, *, data: bytes | str | None = None, **kw: Any) -> requests.Response:
        if body is not None:
            return self.session.post(self.base + path, json=body, timeout=30, **kw)
        return self.session.post(self.base + path, data=data, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kw)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=30, **kw)


def _start(core: StaticServingCore, **options: Any) -> RestServerHandle:
    return start_rest_server(DataPlane(core), RestServerOptions(host="127.0.0.1", port=0, **options))


@pytest.fixture(scope="module")
def core() -> StaticServingCore:
    return _make_core()


@pytest.fixture(scope="module")
def shared(core: StaticServingCore) -> Iterator[Client]:
    handle = _start(core, num_threads=4)
    client = Client(handle)
    try:
        yield client
    finally:
        client.session.close()
        handle.stop()


@pytest.fixture
def client(shared: Client) -> Iterator[Client]:
    yield shared
    # Whatever the test sent, the server still serves (on the same keep-alive session).
    response = shared.post("/v1/models/half_plus_two:predict", {"instances": [1.0]})
    assert response.status_code == 200 and response.json() == {"predictions": [2.5]}


@pytest.fixture
def server_factory(core: StaticServingCore) -> Iterator[Any]:
    started: list[tuple[RestServerHandle, Client]] = []

    def make(**options: Any) -> Client:
        handle = _start(core, **options)
        client = Client(handle)
        started.append((handle, client))
        return client

    yield make
    for handle, client in started:
        client.session.close()
        handle.stop()


def _error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    return body["error"]


# -- TF Serving's documented examples (§5.7) ----------------------------------------------

def test_docker_quick_start_example(client: Client) -> None:
    response = client.post("/v1/models/half_plus_two:predict", data='{"instances": [1.0, 2.0, 5.0]}')
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_api_rest_half_plus_three_examples(client: Client) -> None:
    model = "/v1/models/saved_model_half_plus_three"
    assert client.post(model + ":predict", {"instances": [1.0, 2.0, 5.0]}).json() == {"predictions": [3.5, 4.0, 5.5]}
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert client.post(model + ":regress", body).json() == {"results": [3.5, 4.0]}
    assert client.get(model).json() == {
        "model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    }
    message = _error(client.post("/v1/models/half:predict", {"instances": [1.0]}), 404)
    assert message == "Servable not found for request: Latest(half)"


def test_model_server_test_examples(client: Client) -> None:
    model = "/v1/models/default"
    assert client.post(model + ":predict", {"instances": [2.0, 3.0, 4.0]}).json() == {"predictions": [3.0, 3.5, 4.0]}
    assert client.post(model + ":predict", {"inputs": [2.0, 3.0, 4.0]}).json() == {"outputs": [3.0, 3.5, 4.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert client.post(model + ":classify", body).json() == {"results": [[["", 3.0]]]}
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert client.post(model + ":regress", body).json() == {"results": [3.0]}
    two_rows = {"instances": [[1.0, 2.0], [3.0, 4.0]]}
    assert client.post(model + ":predict", two_rows).json() == {"predictions": [[2.5, 3.0], [3.5, 4.0]]}


# -- predict formats ------------------------------------------------------------------------

def test_rows_and_columns_with_two_outputs(client: Client) -> None:
    path = "/v1/models/half_plus_two:predict"
    rows = client.post(path, {"signature_name": "two_outputs", "instances": [1.0, 2.0]}).json()
    assert rows == {"predictions": [{"y": 2.5, "double": 2.0}, {"y": 3.0, "double": 4.0}]}
    columns = client.post(path, {"signature_name": "two_outputs", "inputs": {"x": [1.0, 2.0]}}).json()
    assert columns == {"outputs": {"y": [2.5, 3.0], "double": [2.0, 4.0]}}


def test_strings_in_and_bytes_out(client: Client) -> None:
    path = "/v1/models/half_plus_two:predict"
    body = {"signature_name": "strings", "instances": ["ab", {"b64": base64.b64encode(b"c").decode()}]}
    assert client.post(path, body).json() == {
        "predictions": [
            {"upper": "AB", "echo_bytes": {"b64": base64.b64encode(b"ab").decode()}},
            {"upper": "C", "echo_bytes": {"b64": base64.b64encode(b"c").decode()}},
        ]
    }


def test_multiple_inputs(client: Client) -> None:
    path = "/v1/models/half_plus_two:predict"
    rows = {"signature_name": "multi", "instances": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]}
    assert client.post(path, rows).json() == {"predictions": [3.0, 7.0]}
    columns = {"signature_name": "multi", "inputs": {"a": [1.0, 3.0], "b": [2.0, 4.0]}}
    assert client.post(path, columns).json() == {"outputs": [3.0, 7.0]}
    plain = _error(client.post(path, {"signature_name": "multi", "instances": [1.0, 2.0]}), 400)
    assert "plain list" in plain


# -- versions, labels, status, metadata ----------------------------------------------------

def test_versions_and_labels_route_predict(client: Client) -> None:
    body = {"instances": [2.0]}
    assert client.post("/v1/models/versioned:predict", body).json() == {"predictions": [4.0]}
    assert client.post("/v1/models/versioned/versions/1:predict", body).json() == {"predictions": [3.0]}
    assert client.post("/v1/models/versioned/labels/stable:predict", body).json() == {"predictions": [3.0]}
    assert client.post("/v1/models/versioned/labels/canary:predict", body).json() == {"predictions": [4.0]}
    missing = _error(client.post("/v1/models/versioned/versions/7:predict", body), 404)
    assert missing == "Servable not found for request: Specific(versioned, 7)"
    assert _error(client.post("/v1/models/versioned/labels/nope:predict", body), 400) == (
        "Unrecognized servable version label: nope"
    )
    assert _error(client.post("/v1/models/versioned/labels/gone:predict", body), 404) == (
        "Servable not found for request: Specific(versioned, 9)"
    )


def test_status_json(client: Client) -> None:
    ok = {"error_code": "OK", "error_message": ""}
    full = client.get("/v1/models/versioned").json()
    assert full == {
        "model_version_status": [
            {"version": "3", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "weights missing"}},
            {"version": "2", "state": "AVAILABLE", "status": ok},
            {"version": "1", "state": "AVAILABLE", "status": ok},
        ]
    }
    assert client.get("/v1/models/versioned/labels/canary").json() == full  # the label is ignored
    one = client.get("/v1/models/versioned/versions/1").json()
    assert one == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert _error(client.get("/v1/models/versioned/versions/7"), 404) == "Could not find version 7 of model versioned"
    assert _error(client.get("/v1/models/nope"), 404) == "Could not find any versions of model nope"


def test_metadata_json(client: Client) -> None:
    response = client.get("/v1/models/half_plus_two/metadata")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    assert list(body["metadata"]) == ["signature_def"]
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == set(HalfPlusN(2.0).signatures) > set(_SIGNATURES)
    default = defs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"] == {
        "dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}, "name": "x:0"
    }
    assert defs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert client.get("/v1/models/versioned/versions/1/metadata").json()["model_spec"]["version"] == "1"
    assert client.get("/v1/models/versioned/labels/canary/metadata").json()["model_spec"]["version"] == "2"
    assert _error(client.get("/v1/models/nope/metadata"), 404) == "Servable not found for request: Latest(nope)"


def test_classify_and_regress_results(client: Client) -> None:
    path = "/v1/models/half_plus_two"
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4}]}
    assert client.post(path + ":classify", body).json() == {"results": [[["", 3.0]], [["", 4.0]]]}
    body = {"signature_name": "regress_x_to_y", "context": {"x": 1.0}, "examples": [{"x": 4.0}, {}]}
    assert client.post(path + ":regress", body).json() == {"results": [4.0, 2.5]}
    wrong = _error(client.post(path + ":regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}), 400)
    assert "regression" in wrong
    assert _error(client.post(path + ":classify", {"signature_name": "classify_x_to_y", "examples": []}), 400)


# -- bad requests ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"signature_name": "nope", "instances": [1.0]}, 400, '"nope" not found'),
        ({"instances": ["a"]}, 400, "is not of expected type: float"),  # wrong dtype
        ({"instances": [[1.0], [2.0]]}, 400, "shape"),  # rank 2 for a vector input
        ({"instances": [1.0], "inputs": [1.0]}, 400, "only one of 'inputs' or 'instances'"),
        ({"instances": []}, 400, "No values in 'instances' array"),
        ({"signature_name": 3, "instances": [1.0]}, 400, "'signature_name' key must be a string"),
        ({}, 400, "Missing 'inputs' or 'instances' key"),
        ({"signature_name": "strings", "instances": [{"b64": "%%%"}]}, 400, "base64"),
        ({"signature_name": "boom", "instances": [1.0]}, 500, "RuntimeError: kaput"),
    ],
)
def test_bad_predict_bodies(client: Client, body: Any, status: int, fragment: str) -> None:
    assert fragment in _error(client.post("/v1/models/half_plus_two:predict", body), status)


def test_ragged_instances(client: Client) -> None:
    message = _error(client.post("/v1/models/default:predict", {"instances": [[1.0], [2.0, 3.0]]}), 400)
    assert "Expecting tensor size" in message or "unexpected size" in message


@pytest.mark.parametrize("data", ['{"instances": [1.0', "[1.0]", "not json", '{"instances": [1.0]} extra'])
def test_malformed_json(client: Client, data: str) -> None:
    message = _error(client.post("/v1/models/half_plus_two:predict", data=data), 400)
    assert message.startswith("JSON Parse error") or "object" in message


def test_empty_body(client: Client) -> None:
    message = _error(client.post("/v1/models/half_plus_two:predict", data=b""), 400)
    assert message == "JSON Parse error: The document is empty"
    # malformed JSON is a 400 even for an unknown model (the body is parsed first)
    assert _error(client.post("/v1/models/nope:predict", data=b"{"), 400)


def test_gzip_body(client: Client) -> None:
    data = gzip.compress(b'{"instances": [1.0, 2.0, 5.0]}')
    response = client.post("/v1/models/half_plus_two:predict", data=data, headers={"Content-Encoding": "gzip"})
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}
    bad = client.post("/v1/models/half_plus_two:predict", data=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert "gzip" in _error(bad, 400)


def test_body_size_limit(server_factory: Any) -> None:
    client = server_factory(max_body_bytes=1024)
    path = "/v1/models/half_plus_two:predict"
    small = {"instances": [1.0] * 10}
    assert client.post(path, small).status_code == 200
    big = '{"instances": [' + ", ".join(["1.0"] * 400) + "]}"
    assert "1024 bytes" in _error(client.post(path, data=big), 413)
    chunked = client.post(path, data=iter([big[:800].encode(), big[800:].encode()]))  # no Content-Length
    assert "1024 bytes" in _error(chunked, 413)
    bomb = gzip.compress(big.encode())
    assert len(bomb) < 1024
    assert "1024 bytes" in _error(client.post(path, data=bomb, headers={"Content-Encoding": "gzip"}), 413)
    assert client.post(path, small).json()["predictions"][0] == 2.5  # still serving


# -- routing -------------------------------------------------------------------------------------

def test_paths_are_case_insensitive_but_verbs_are_not(client: Client) -> None:
    body = {"instances": [1.0]}
    assert client.post("/V1/Models/half_plus_two:predict", body).json() == {"predictions": [2.5]}
    assert client.post("/v1/MODELS/versioned/VERSIONS/1:predict", body).json() == {"predictions": [2.5]}
    assert client.get("/V1/MODELS/versioned/Labels/canary/metadata").json()["model_spec"]["version"] == "2"
    assert _error(client.post("/v1/models/half_plus_two:Predict", body), 400) == (
        "Malformed request: POST /v1/models/half_plus_two:Predict"
    )
    # TF Serving compares the sub-resource case-sensitively: ".../METADATA" is a status request.
    assert "model_version_status" in client.get("/v1/models/half_plus_two/METADATA").json()


def test_url_encoded_names(client: Client) -> None:
    response = client.post("/v1/models/a%2Fb%20c:predict", {"instances": [2.0]})
    assert response.json() == {"predictions": [11.0]}
    assert client.get("/v1/models/a%2fb%20c/versions/1").json()["model_version_status"][0]["version"] == "1"


@pytest.mark.parametrize(
    "method, path, message",
    [
        ("GET", "/v1/models", "Missing model name in request."),
        ("GET", "/v1/models/", "Malformed request: GET /v1/models/"),
        ("POST", "/v1/models/half_plus_two:explain", "Malformed request: POST /v1/models/half_plus_two:explain"),
        ("POST", "/v1/models/half_plus_two", "Malformed request: POST /v1/models/half_plus_two"),
        ("GET", "/v1/models/half_plus_two:predict", "Malformed request: GET /v1/models/half_plus_two:predict"),
        ("PUT", "/v1/models/half_plus_two", "Malformed request: PUT /v1/models/half_plus_two"),
        ("DELETE", "/v1/models/half_plus_two", "Malformed request: DELETE /v1/models/half_plus_two"),
        ("GET", "/v1/models/m/versions/1/labels/l", "Malformed request: GET /v1/models/m/versions/1/labels/l"),
        ("GET", "/v1/models/m/version/1", "Malformed request: GET /v1/models/m/version/1"),
        ("GET", "/v1/models/m/versions/abc", "Malformed request: GET /v1/models/m/versions/abc"),
        ("POST", "/v1/models/m:predict?debug=1", "Malformed request: POST /v1/models/m:predict?debug=1"),
        ("GET", "/v1/other", "Malformed request: GET /v1/other"),
        (
            "POST",
            "/v1/models/m/versions/99999999999999999999:predict",
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
        ("GET", "/v1/models/m/versions/9223372036854775808", "Failed to convert version: 9223372036854775808 to numeric."),
    ],
)
def test_bad_paths_are_400(client: Client, method: str, path: str, message: str) -> None:
    response = client.request(method, path, data=b'{"instances": [1.0]}' if method == "POST" else None)
    assert _error(response, 400) == message


@pytest.mark.parametrize("path", ["/", "/healthz", "/v1", "/v2/models/half_plus_two:predict", "/models/x"])
def test_paths_outside_v1_are_plain_404(client: Client, path: str) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, path)
        assert response.status_code == 404
        assert "json" not in response.headers.get("Content-Type", "")


# -- health (pyserving extension) ----------------------------------------------------------------

def test_health_paths_without_readiness(client: Client) -> None:
    live = client.get("/v1/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    assert live.headers["Content-Type"] == "application/json"
    assert client.get("/v1/HEALTH/Ready").json() == {"status": "ready"}  # paths are case-insensitive
    assert _error(client.post("/v1/health/live", data=b""), 400) == "Malformed request: POST /v1/health/live"
    assert _error(client.get("/v1/health/other"), 400) == "Malformed request: GET /v1/health/other"
    assert _error(client.get("/v1/health/ready?x=1"), 400) == "Malformed request: GET /v1/health/ready?x=1"


def test_ready_follows_readiness_and_is_answered_while_workers_are_busy() -> None:
    core = _make_core()  # its own: this test opens the slow signature's gate
    bus: EventBus[ServableState] = EventBus()
    readiness = Readiness(ServableStateMonitor(bus), bus)
    readiness.set_models(["half_plus_two"])
    handle = start_rest_server(DataPlane(core), RestServerOptions(host="127.0.0.1", port=0, num_threads=1), readiness)
    client = Client(handle)
    servable = core.servables[ServableId("half_plus_two", 123)]
    busy = threading.Thread(target=client.post, args=("/v1/models/half_plus_two:predict",
                                                      {"signature_name": "slow", "instances": [1.0]}))
    try:
        not_ready = requests.get(client.base + "/v1/health/ready", timeout=30)
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "reason": "no version of model(s) half_plus_two is AVAILABLE"}
        bus.publish(ServableState(ServableId("half_plus_two", 123), ManagerState.AVAILABLE))
        busy.start()
        assert servable.entered.wait(30)  # the only worker is inside a model call
        ready = requests.get(client.base + "/v1/health/ready", timeout=30)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        readiness.begin_shutdown()
        stopping = requests.get(client.base + "/v1/health/ready", timeout=30)
        assert (stopping.status_code, stopping.json()) == (503, {"status": "not ready", "reason": "shutting down"})
        assert requests.get(client.base + "/v1/health/live", timeout=30).status_code == 200
    finally:
        servable.gate.set()
        busy.join(30)
        client.session.close()
        handle.stop()


# -- CORS --------------------------------------------------------------------------------------

def test_cors_off_by_default(client: Client) -> None:
    response = client.get("/v1/models/half_plus_two")
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.request("OPTIONS", "/v1/models/half_plus_two:predict", headers={"Origin": "http://x.test"})
    assert _error(preflight, 400) == "Malformed request: OPTIONS /v1/models/half_plus_two:predict"


def test_cors_on(server_factory: Any) -> None:
    client = server_factory(enable_cors=True)
    response = client.post("/v1/models/half_plus_two:predict", {"instances": [1.0]})
    assert response.json() == {"predictions": [2.5]}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert _error(client.get("/v1/models/nope"), 404) and client.get("/v1/models/nope").headers[
        "Access-Control-Allow-Origin"
    ] == "*"
    for origin in ("http://app.test", "https://app.test:8443"):
        preflight = client.request("OPTIONS", "/v1/models/half_plus_two:predict", headers={"Origin": origin})
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Methods"] == "POST, GET"
    missing = client.request("OPTIONS", "/v1/models/half_plus_two:predict")
    assert _error(missing, 400) == "Origin header is missing in CORS preflight"
    assert client.post("/v1/models/half_plus_two:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}


# -- timeouts, threads, sockets, life cycle --------------------------------------------------------

def test_timeout_answers_504_and_the_call_finishes_in_background(server_factory: Any, core: StaticServingCore) -> None:
    servable = core.servable("half_plus_two", 123)
    client = server_factory(timeout_ms=200, num_threads=2)
    try:
        response = client.post("/v1/models/half_plus_two:predict", {"signature_name": "slow", "instances": [1.0]})
        assert "200 ms" in _error(response, 504)
        # the other worker still serves while the slow call is blocked
        assert client.post("/v1/models/half_plus_two:predict", {"instances": [1.0]}).json() == {"predictions": [2.5]}
    finally:
        servable.gate.set()


def test_inline_mode_serves(server_factory: Any) -> None:
    client = server_factory(num_threads=0)
    assert client.post("/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0]}).json() == {"predictions": [2.5, 3.0]}
    assert "kaput" in _error(client.post("/v1/models/half_plus_two:predict", {"signature_name": "boom", "instances": [1.0]}), 500)


def test_concurrent_clients(client: Client) -> None:
    errors: list[BaseException] = []

    def hammer(value: float) -> None:
        try:
            with requests.Session() as session:
                for _ in range(20):
                    got = session.post(client.base + "/v1/models/half_plus_two:predict", json={"instances": [value]}, timeout=30)
                    assert got.json() == {"predictions": [0.5 * value + 2.0]}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(float(i),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc to find the server's socket")
def test_accepted_connections_have_tcp_nodelay(client: Client) -> None:
    with socket.create_connection(("127.0.0.1", client.handle.port)) as conn:
        conn.sendall(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")  # the server has accepted it
        peer = conn.getsockname()
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                sock = socket.socket(fileno=os.dup(int(fd)))
            except OSError:
                continue
            with sock:
                try:
                    if sock.type == socket.SOCK_STREAM and sock.getpeername() == peer:
                        found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                except OSError:
                    pass
        assert found and all(found), found


def test_broken_http_is_refused_without_harm(client: Client) -> None:
    for garbage in (b"garbage\r\n\r\n", b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", client.handle.port), timeout=30) as conn:
            conn.sendall(garbage)
            assert conn.recv(65536).startswith(b"HTTP/1.1 400")


def test_port_zero_reports_the_bound_port_and_busy_port_fails(server_factory: Any, core: StaticServingCore) -> None:
    client = server_factory()
    assert client.handle.port > 0 and client.handle.running
    with pytest.raises(UnavailableError, match=str(client.handle.port)):
        start_rest_server(DataPlane(core), RestServerOptions(host="127.0.0.1", port=client.handle.port))


def test_stop_lets_a_request_in_flight_answer() -> None:
    core = _make_core()
    servable = core.servable("half_plus_two", 123)
    handle = _start(core, num_threads=2)
    answers: list[requests.Response] = []
    body = {"signature_name": "slow", "instances": [1.0]}
    url = f"http://127.0.0.1:{handle.port}/v1/models/half_plus_two:predict"
    request = threading.Thread(target=lambda: answers.append(requests.post(url, json=body, timeout=30)))
    request.start()
    try:
        assert servable.entered.wait(30)
        stopper = threading.Thread(target=handle.stop)
        stopper.start()
        servable.gate.set()
        request.join(30)
        stopper.join(30)
        assert not stopper.is_alive() and not handle.running
        assert [a.json() for a in answers] == [{"predictions": [2.5]}]
    finally:
        servable.gate.set()
        handle.stop()


def test_stop_is_idempotent_and_closes_the_port(core: StaticServingCore) -> None:
    handle = _start(core)
    port = handle.port
    handle.stop()
    handle.stop()
    assert not handle.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(
    "options, fragment",
    [({"port": -1}, "port"), ({"num_threads": -1}, "num_threads"), ({"timeout_ms": -5}, "timeout_ms"), ({"max_body_bytes": 0}, "max_body_bytes")],
)
def test_options_are_validated(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        RestServerOptions(**options)
