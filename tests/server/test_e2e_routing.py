"""End to end: server-side routing (issue 7) with the real ``pyserving-model-server`` binary.

Four ``python``-platform models (see :mod:`tests.support.routing_models`): ``rec_a``,
``rec_b`` (label ``canary``) and ``rec_c`` answer ``y = 1x, 2x, 3x`` from versions 1, 2
and 3; ``shadow_fail`` raises on every call. One module-scoped server serves them with
these routes, for the checks that change no file:

* ``recommender``: control ``rec_a`` 90 / treatment ``rec_b`` 10 (by label ``canary``),
  segment key ``x-user-id``, rules ``x-country: DE`` and ``X-Beta: yes`` -> treatment;
* ``mirror_fail`` / ``mirror_ok``: one arm, shadow ``shadow_fail`` / ``rec_c``;
* ``counted``: ``rec_a`` / ``rec_b`` 50/50, used only by the statistics test.

Tests that rewrite the routing file (poll, SIGHUP) start their own server; startup errors
run the binary to its exit. Waits are bounded polls of something observable (the route's
statistics, the server's output); statistical checks use bounds of 5 sigma or wider.
"""

from __future__ import annotations

import math
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
import requests

from tests.support.polling import wait_for as poll_wait_for
from tests.support.routing_models import (
    FACTORS,
    VERSIONS,
    Rest,
    grpc_predict_request,
    route_text,
    write_atomically,
    write_model_config,
    write_models,
)
from tests.support.server_process import ServerProcess, free_port, start_model_server

pytestmark = pytest.mark.slow

TIMEOUT_S = 30.0
#: Bound on anything the server does in the background (file poll, SIGHUP, shadow calls).
CHANGE_WAIT_S = 30.0
CONTROL, TREATMENT = "rec_a", "rec_b"


def recommender(control: float = 90, treatment: float = 10, rules: bool = True) -> str:
    return route_text(
        "recommender",
        {"control": (CONTROL, control), "treatment": (TREATMENT, treatment)},
        segment_key="x-user-id",
        rules=(("x-country", "DE", "treatment"), ("X-Beta", "yes", "treatment")) if rules else (),
        arm_extra={"treatment": 'version_label: "canary"'},
    )


MAIN_ROUTES = (
    recommender()
    + route_text("mirror_fail", {"only": (CONTROL, 1)}, shadow="shadow_fail")
    + route_text("mirror_ok", {"only": (TREATMENT, 1)}, shadow="rec_c")
    + route_text("counted", {"a": (CONTROL, 50), "b": (TREATMENT, 50)})
)


@dataclass(frozen=True)
class Served:
    process: ServerProcess
    grpc_port: int
    rest_port: int
    routing_file: Path


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = CHANGE_WAIT_S) -> Any:
    return poll_wait_for(condition, what, timeout_s, 0.05, (requests.RequestException, grpc.RpcError))


def route_stats(rest_port: int, name: str) -> dict[str, Any]:
    response = requests.get(f"http://127.0.0.1:{rest_port}/v1/routes/{name}", timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()


def weights(rest_port: int, name: str) -> dict[str, float]:
    return {arm: entry["weight"] for arm, entry in route_stats(rest_port, name)["arms"].items()}


def check_answer(answer: Any, x: float = 1.0, models: tuple[str, ...] = (CONTROL, TREATMENT)) -> str:
    """The model that answered a 200 predict; its headers and value must agree."""
    assert answer.status == 200, answer.body
    assert answer.model in models, (answer.model, answer.body)
    assert answer.version == str(VERSIONS[answer.model])
    assert answer.body == {"predictions": [x * FACTORS[answer.model]]}
    return answer.model


def arm_of(rest: Rest, key: str, **headers: str) -> str:
    return check_answer(rest.predict("recommender", headers={"x-user-id": key, **headers}))


def grpc_values(response: Any) -> list[float]:
    import numpy as np

    tensor = response.outputs["y"]
    return list(tensor.float_val) or np.frombuffer(tensor.tensor_content, np.float32).tolist()


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("routing_models")
    config = root / "models.config"
    write_model_config(config, write_models(root / "models"))
    return config


def start(model_config: Path, folder: Path, routes: str, *extra: str) -> Served:
    routing_file = folder / "routes.config"
    write_atomically(routing_file, routes)
    process, grpc_port, rest_port = start_model_server(
        [f"--model_config_file={model_config}", f"--routing_config_file={routing_file}", *extra]
    )
    return Served(process, grpc_port, rest_port, routing_file)


@pytest.fixture(scope="module")
def served(model_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = start(model_config, tmp_path_factory.mktemp("routing_main"), MAIN_ROUTES)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT_S)
        yield ch


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> Any:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def rest(served: Served) -> Iterator[Rest]:
    with Rest(served.rest_port, TIMEOUT_S) as client:
        yield client


# -- 1. weights -----------------------------------------------------------------------------------


def test_2000_calls_without_a_key_split_by_the_weights(rest: Rest) -> None:
    calls = 2000
    counts: Counter[str] = Counter(check_answer(rest.predict("recommender", x=3.0), x=3.0) for _ in range(calls))
    expected, sigma = calls * 0.1, math.sqrt(calls * 0.1 * 0.9)
    assert abs(counts[TREATMENT] - expected) <= 5 * sigma, counts
    assert counts[CONTROL] + counts[TREATMENT] == calls


# -- 2. sticky segments ---------------------------------------------------------------------------


def test_the_same_segment_key_always_lands_in_the_same_arm_over_rest_and_grpc(rest: Rest, prediction: Any) -> None:
    keys = [f"user-{i}" for i in range(200)]
    arms = {key: {arm_of(rest, key) for _ in range(3)} for key in keys}
    unstable = {key: models for key, models in arms.items() if len(models) != 1}
    assert not unstable, unstable
    chosen = {key: models.pop() for key, models in arms.items()}
    assert set(chosen.values()) == {CONTROL, TREATMENT}  # P(all 200 in one arm) < 1e-9

    for key in keys:  # gRPC metadata hashes exactly as the REST header does
        response = prediction.Predict(grpc_predict_request("recommender", 2.0), metadata=(("x-user-id", key),),
                                      timeout=TIMEOUT_S)
        assert response.model_spec.name == chosen[key], key
        assert response.model_spec.version.value == VERSIONS[chosen[key]]
        assert grpc_values(response) == [2.0 * FACTORS[chosen[key]]]


# -- 3. a weight change moves only the keys that must -------------------------------------------


def test_changing_weights_from_90_10_to_50_50_moves_only_control_keys(model_config: Path, tmp_path: Path) -> None:
    server = start(model_config, tmp_path, recommender(rules=False), "--routing_config_file_poll_wait_seconds=1")
    try:
        keys = [f"member-{i}" for i in range(400)]
        with Rest(server.rest_port, TIMEOUT_S) as rest:
            before = {key: arm_of(rest, key) for key in keys}
            write_atomically(server.routing_file, recommender(50, 50, rules=False))
            wait_for(lambda: weights(server.rest_port, "recommender") == {"control": 50, "treatment": 50},
                     "the poll to put the 50/50 weights in force")
            # counters of arms that keep their names survive the update
            arms = route_stats(server.rest_port, "recommender")["arms"]
            assert arms["control"]["requests"] + arms["treatment"]["requests"] == len(keys)
            after = {key: arm_of(rest, key) for key in keys}
    finally:
        server.process.stop()
    back = [key for key in keys if before[key] == TREATMENT and after[key] == CONTROL]
    assert not back, f"keys moved from treatment to control: {back}"
    control = [key for key in keys if before[key] == CONTROL]
    moved = [key for key in control if after[key] == TREATMENT]
    # expected: (0.9 - 0.5) / 0.9 = 44 % of the control keys; 5 sigma with 360 keys is about +-13 %
    assert 0.25 <= len(moved) / len(control) <= 0.65, (len(moved), len(control))
    assert "Reloaded the routes from" in server.process.output


# -- 4. SIGHUP --------------------------------------------------------------------------------------


def test_sighup_rereads_the_routes_and_a_broken_file_keeps_them(model_config: Path, tmp_path: Path) -> None:
    server = start(model_config, tmp_path, recommender())
    try:
        port = server.rest_port
        write_atomically(server.routing_file, recommender(0, 1))
        assert weights(port, "recommender") == {"control": 90, "treatment": 10}  # no poll: nothing read yet
        server.process.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: weights(port, "recommender") == {"control": 0, "treatment": 1}, "SIGHUP to re-read routes")
        with Rest(port, TIMEOUT_S) as rest:
            assert {check_answer(rest.predict("recommender")) for _ in range(20)} == {TREATMENT}

            broken = 'routes {\n  name: "recommender"\n  arms { name: "control" model_name: \n'
            write_atomically(server.routing_file, broken)
            server.process.proc.send_signal(signal.SIGHUP)
            failed = "Failed to reload the routing config file"
            assert server.process.wait_for_output(failed, CHANGE_WAIT_S), server.process.output[-3000:]
            line = next(line for line in server.process.output.splitlines() if failed in line)
            assert str(server.routing_file) in line and "routes in force stay" in line
            assert "line" in line.lower(), line  # the syntax error's position
            assert weights(port, "recommender") == {"control": 0, "treatment": 1}
            assert {check_answer(rest.predict("recommender")) for _ in range(10)} == {TREATMENT}

            dangling = route_text("recommender", {"control": (CONTROL, 1), "treatment": ("rec_z", 1)})
            write_atomically(server.routing_file, dangling)
            server.process.proc.send_signal(signal.SIGHUP)
            assert server.process.wait_for_output("rec_z", CHANGE_WAIT_S), server.process.output[-3000:]
            line = next(line for line in server.process.output.splitlines() if "rec_z" in line)
            assert failed in line and "'recommender'" in line, line
            assert weights(port, "recommender") == {"control": 0, "treatment": 1}
            assert {check_answer(rest.predict("recommender")) for _ in range(10)} == {TREATMENT}

            write_atomically(server.routing_file, recommender(1, 0))  # a good file is taken again
            server.process.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: weights(port, "recommender") == {"control": 1, "treatment": 0}, "the fixed file")
            assert {check_answer(rest.predict("recommender")) for _ in range(10)} == {CONTROL}
    finally:
        server.process.stop()


# -- 5. header rules ------------------------------------------------------------------------------


def test_header_rules_win_over_the_segment_key(rest: Rest, prediction: Any) -> None:
    control_keys = [key for key in (f"visitor-{i}" for i in range(60)) if arm_of(rest, key) == CONTROL][:20]
    assert len(control_keys) >= 10  # 90 % of 60 keys; fewer than 10 is beyond 10 sigma
    for key in control_keys:
        assert arm_of(rest, key, **{"x-country": "DE"}) == TREATMENT
        assert arm_of(rest, key, **{"X-Country": "DE"}) == TREATMENT  # header names are case-insensitive
        assert arm_of(rest, key, **{"x-beta": "yes"}) == TREATMENT  # the rule was written "X-Beta"
        assert arm_of(rest, key, **{"X-Country": "de"}) == CONTROL  # values compare exactly
        assert arm_of(rest, key, **{"X-Country": "FR"}) == CONTROL
        ruled = prediction.Predict(grpc_predict_request("recommender"),
                                   metadata=(("x-user-id", key), ("x-country", "DE")), timeout=TIMEOUT_S)
        assert (ruled.model_spec.name, grpc_values(ruled)) == (TREATMENT, [FACTORS[TREATMENT]])
    without_country = [check_answer(rest.predict("recommender", headers={"X-Country": "DE"})) for _ in range(20)]
    assert set(without_country) == {TREATMENT}  # a rule needs no segment key either


# -- 6. shadow traffic ----------------------------------------------------------------------------


def test_a_failing_shadow_never_reaches_the_client_and_is_counted(served: Served, rest: Rest, prediction: Any) -> None:
    calls = 30
    for i in range(calls):
        check_answer(rest.predict("mirror_fail", x=float(i)), x=float(i), models=(CONTROL,))
    for _ in range(5):
        response = prediction.Predict(grpc_predict_request("mirror_fail", 4.0), timeout=TIMEOUT_S)
        assert (response.model_spec.name, grpc_values(response)) == (CONTROL, [4.0])
    stats = wait_for(lambda: (s := route_stats(served.rest_port, "mirror_fail"))["shadow"]["requests"] == calls + 5
                     and s, "the shadow calls to be counted")
    assert stats["shadow"]["model_name"] == "shadow_fail"
    assert (stats["shadow"]["errors"], stats["shadow"]["dropped"]) == (calls + 5, 0)
    assert stats["arms"]["only"]["requests"] == calls + 5 and stats["arms"]["only"]["errors"] == 0


def test_a_working_shadow_is_counted_without_errors(served: Served, rest: Rest) -> None:
    calls = 30
    for _ in range(calls):
        check_answer(rest.predict("mirror_ok", x=2.0), x=2.0, models=(TREATMENT,))
    stats = wait_for(lambda: (s := route_stats(served.rest_port, "mirror_ok"))["shadow"]["requests"] == calls
                     and s, "the shadow calls to be counted")
    assert stats["shadow"]["model_name"] == "rec_c"
    assert (stats["shadow"]["errors"], stats["shadow"]["dropped"]) == (0, 0)
    assert stats["shadow"]["latency_ms"]["count"] == calls


# -- 7. every TF Serving endpoint through a route ---------------------------------------------------


def test_rest_endpoints_work_through_a_route(rest: Rest) -> None:
    de = {"X-Country": "DE"}
    regress = rest.request("POST", "/v1/models/recommender:regress",
                           {"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": 2.0}]}, de)
    assert (regress.status, regress.body) == (200, {"results": [2.0, 2.0]})
    assert (regress.model, regress.version) == (TREATMENT, "2")
    classify = rest.request("POST", "/v1/models/recommender:classify",
                            {"signature_name": "classify_x", "examples": [{"x": 1.0}]}, {"x-user-id": "u"})
    assert classify.status == 200, classify.body
    assert classify.body == {"results": [[["factor", FACTORS[classify.model]]]]}

    status = rest.get("/v1/models/recommender", de)
    assert status.status == 200, status.body
    assert [(s["version"], s["state"]) for s in status.body["model_version_status"]] == [("2", "AVAILABLE")]

    metadata = rest.get("/v1/models/recommender/metadata", de)
    assert metadata.status == 200, metadata.body
    assert metadata.body["model_spec"]["name"] == TREATMENT and metadata.body["model_spec"]["version"] == "2"
    assert (metadata.model, metadata.version) == (TREATMENT, "2")
    assert "serving_default" in metadata.body["metadata"]["signature_def"]["signature_def"]


def test_grpc_endpoints_work_through_a_route(channel: grpc.Channel, prediction: Any) -> None:
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
    )

    de = (("x-country", "DE"),)
    response = prediction.Predict(grpc_predict_request("recommender", 5.0), timeout=TIMEOUT_S)
    assert response.model_spec.name in (CONTROL, TREATMENT)
    assert grpc_values(response) == [5.0 * FACTORS[response.model_spec.name]]

    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "recommender"
    metadata_request.metadata_field.append("signature_def")
    metadata = prediction.GetModelMetadata(metadata_request, metadata=de, timeout=TIMEOUT_S)
    assert (metadata.model_spec.name, metadata.model_spec.version.value) == (TREATMENT, 2)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(defs)
    assert {"serving_default", "classify_x", "regress_x"} <= set(defs.signature_def)

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "recommender"
    classify.model_spec.signature_name = "classify_x"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    classified = prediction.Classify(classify, metadata=de, timeout=TIMEOUT_S)
    assert (classified.model_spec.name, classified.model_spec.version.value) == (TREATMENT, 2)
    assert classified.result.classifications[0].classes[0].score == FACTORS[TREATMENT]

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "recommender"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, metadata=de,
                                                                              timeout=TIMEOUT_S)
    assert [s.version for s in status.model_version_status] == [2]


def test_a_route_with_a_version_or_label_is_400_naming_the_route(rest: Rest, prediction: Any) -> None:
    for path in ("/v1/models/recommender/versions/1:predict", "/v1/models/recommender/labels/canary:predict"):
        answer = rest.request("POST", path, {"instances": [{"x": 1.0}]})
        assert answer.status == 400, (path, answer.body)
        assert "recommender is a route" in answer.body["error"], answer.body
    with pytest.raises(grpc.RpcError) as info:
        prediction.Predict(grpc_predict_request("recommender", version=1), timeout=TIMEOUT_S)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "recommender is a route" in info.value.details()


# -- 8. startup errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "routes, expected",
    [
        (route_text("rec_a", {"only": ("rec_b", 1)}), ("route 'rec_a'", "a route and a model may not share a name")),
        (recommender().replace('"rec_b"', '"rec_z"'), ("route 'recommender'", "model 'rec_z'", "not served")),
    ],
    ids=["route named like a model", "arm naming a missing model"],
)
def test_bad_routes_at_startup_end_the_server_naming_route_and_model(
    model_config: Path, tmp_path: Path, routes: str, expected: tuple[str, ...]
) -> None:
    routing_file = tmp_path / "routes.config"
    write_atomically(routing_file, routes)
    process = ServerProcess([f"--port={free_port()}", f"--rest_api_port={free_port()}",
                             f"--model_config_file={model_config}", f"--routing_config_file={routing_file}"])
    try:
        code = process.wait_exit(60)
    finally:
        process.stop()
    assert code != 0, process.output
    failure = next((line for line in process.output.splitlines() if "Failed to start server" in line), "")
    for text in expected:
        assert text in failure, process.output[-3000:]
    assert "Running gRPC ModelServer" not in process.output


# -- 9. statistics --------------------------------------------------------------------------------


def test_route_statistics_count_requests_and_errors_per_arm(served: Served, rest: Rest) -> None:
    good, bad = 40, 6
    answered = Counter(check_answer(rest.predict("counted", x=1.0)) for _ in range(good))
    for _ in range(bad):
        answer = rest.request("POST", "/v1/models/counted:predict", {"instances": [{"z": 1.0}]})
        assert answer.status == 400, answer.body
    stats = route_stats(served.rest_port, "counted")
    assert (stats["route"], stats["segment_key"], stats["shadow"]) == ("counted", "", None)
    arms = stats["arms"]
    configured = {arm: (a["model_name"], a["weight"]) for arm, a in arms.items()}
    assert configured == {"a": (CONTROL, 50), "b": (TREATMENT, 50)}
    assert sum(a["requests"] for a in arms.values()) == good + bad
    assert sum(a["errors"] for a in arms.values()) == bad
    assert arms["a"]["requests"] - arms["a"]["errors"] == answered[CONTROL]
    assert arms["b"]["requests"] - arms["b"]["errors"] == answered[TREATMENT]
    for arm in arms.values():
        assert arm["latency_ms"]["count"] == arm["requests"]
    assert stats["choices"] == {"rule": 0, "segment": 0, "weight": good + bad}

    unknown = rest.get("/v1/routes/unknown")
    assert unknown.status == 404 and "unknown" in unknown.body["error"], unknown.body
    listed = rest.get("/v1/routes")
    assert listed.status == 200
    assert {r["route"] for r in listed.body["routes"]} == {"recommender", "mirror_fail", "mirror_ok", "counted"}
