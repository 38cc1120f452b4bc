"""End to end: the admin API (``--enable_admin_api``) of the real ``pyserving-model-server``.

Issue 7, part 2 and its tests: the bearer token (401 / 403, never logged); live changes of
route weights, version labels and the model list under concurrent gRPC and REST load with
zero failed requests, each change in force once its PUT answers 200; bad inputs answered
with clear 4xx errors that change nothing; ``HandleReloadConfigRequest`` alongside; and
``--admin_persist_config`` writing the changes back to the config files, which a restart
then serves.

The models are ``python``-platform models answering ``offset + version`` to ``x = 1``, so
every answer names the model and version that produced it (see
:mod:`tests.support.admin_client`). Every server is the real binary on free loopback ports
and is stopped in a ``finally``; waits are bounded (output lines, answers recorded by the
client threads); nothing sleeps to synchronise and nothing asserts on durations.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import grpc
import pytest

from tests.support.admin_client import (
    AdminClient,
    Answers,
    NamedTraffic,
    Target,
    model_states,
    rest_predict,
    write_offset_model,
)
from tests.support.server_process import ServerProcess, start_model_server

pytestmark = pytest.mark.slow

#: Each model's answer to x = 1 is offset + version.
OFFSETS = {"rec_a": 100, "rec_b": 200, "rec_c": 300, "labelled": 400, "old_model": 500, "reloaded": 600}
ANSWERS = Answers(OFFSETS)
TIMEOUT_S = 60.0
#: Answers every client gets between two live changes (so each change meets running traffic).
LOAD = 10

ROUTE_90_10 = """routes {
  name: "recommender"
  arms { name: "control" model_name: "rec_a" weight: 90 }
  arms { name: "treatment" model_name: "rec_b" weight: 10 }
}
"""


def arm(name: str, model: str, weight: float) -> dict[str, Any]:
    return {"name": name, "model_name": model, "weight": weight}


RULE_DE = {"header": "x-country", "equals": "DE", "arm": "control"}


# -- a server on generated models ----------------------------------------------------------------


class Served:
    """A started server, its folders and config files; ``admin`` carries the token if any."""

    def __init__(self, root: Path, process: ServerProcess, grpc_port: int, rest_port: int,
                 token: str | None) -> None:
        self.root, self.process = root, process
        self.grpc_port, self.rest_port = grpc_port, rest_port
        self.admin = AdminClient(rest_port, token)
        self.model_config = root / "models.config"
        self.routing_config = root / "routing.config"

    def base(self, model: str) -> Path:
        return self.root / "models" / model

    def predict(self, name: str, headers: dict[str, str] | None = None, label: str = "") -> tuple[str, int]:
        """(model, version) that answered a REST predict; fails on anything but 200."""
        response = rest_predict(self.rest_port, name, headers=headers, label=label)
        assert response.status_code == 200, f"{name}: {response.status_code} {response.text}"
        answered = ANSWERS.decode(response.json()["predictions"][0])
        named = (response.headers["x-pyserving-model"], int(response.headers["x-pyserving-model-version"]))
        assert named == answered, (named, answered)
        return answered

    def grpc_predict(self, name: str, metadata: Sequence[tuple[str, str]] = (), label: str = "") -> tuple[str, int]:
        """(model, version) that answered a gRPC predict; the response's model_spec must agree."""
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        if label:
            request.model_spec.version_label = label
        request.inputs["x"].dtype = 1  # DT_FLOAT
        request.inputs["x"].tensor_shape.dim.add().size = 1
        request.inputs["x"].float_val.append(1.0)
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, metadata=tuple(metadata) or None, timeout=TIMEOUT_S)
        answered = ANSWERS.decode(response.outputs["y"].float_val[0])
        assert (response.model_spec.name, response.model_spec.version.value) == answered, response.model_spec
        return answered

    def route_stats(self, name: str) -> dict[str, Any]:
        import requests

        response = requests.get(f"http://127.0.0.1:{self.rest_port}/v1/routes/{name}", timeout=TIMEOUT_S)
        assert response.status_code == 200, response.text
        return response.json()


def model_config_text(models: Sequence[tuple[str, Path, str]]) -> str:
    """A text-format ModelServerConfig; each entry (name, base path, extra fields)."""
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "python" {extra} }}\n'
        for name, base, extra in models
    )
    return "model_config_list {\n" + entries + "}\n"


def write_models(root: Path, names: Sequence[str], labelled_versions: Sequence[int] = (1, 2)) -> None:
    for name in names:
        write_offset_model(root / "models" / name, OFFSETS[name],
                           labelled_versions if name == "labelled" else (1,))


def start_served(root: Path, models: Sequence[str], extra: Sequence[str] = (), *, admin: bool = True,
                 token: str | None = None, routes: str | None = ROUTE_90_10, write: bool = True) -> Served:
    """Write the models and config files under ``root`` (unless ``write`` is False: reuse
    them) and start the server on them; ``labelled`` gets versions 1 and 2, both served,
    label ``stable`` -> 1."""
    if write:
        write_models(root, models)
        entries = []
        for name in models:
            extra_fields = ""
            if name == "labelled":
                extra_fields = ('model_version_policy { specific { versions: 1 versions: 2 } } '
                                'version_labels { key: "stable" value: 1 }')
            entries.append((name, root / "models" / name, extra_fields))
        (root / "models.config").write_text(model_config_text(entries))
        if routes is not None:
            (root / "routing.config").write_text(routes)
    args = [f"--model_config_file={root / 'models.config'}"]
    if routes is not None:
        args.append(f"--routing_config_file={root / 'routing.config'}")
    if admin:
        args.append("--enable_admin_api")
    if token is not None:
        (root / "admin.token").write_text(token + "\n")
        args.append(f"--admin_token_file={root / 'admin.token'}")
    process, grpc_port, rest_port = start_model_server([*args, *extra])
    return Served(root, process, grpc_port, rest_port, token)


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    """Servers a test starts go here; every one is stopped at the end."""
    started: list[Served] = []
    try:
        yield started
    finally:
        for served in started:
            served.process.stop()


# -- 1. authentication -----------------------------------------------------------------------------


def test_admin_token_401_403_200_and_never_logged(tmp_path: Path, servers: list[Served]) -> None:
    token = "tok-" + secrets.token_hex(16)
    wrong = "wrong-" + secrets.token_hex(16)
    served = start_served(tmp_path, ["rec_a", "rec_b"], token=token)
    servers.append(served)
    anonymous = AdminClient(served.rest_port)
    before = served.admin.config()

    for method, path in (("GET", "models"), ("GET", "routes/recommender"), ("DELETE", "models/rec_a"),
                         ("GET", "no/such/path")):
        response = anonymous.call(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["error"]
    other_scheme = anonymous.call("GET", "models", headers={"Authorization": f"Basic {token}"})
    assert other_scheme.status_code == 401 and other_scheme.headers["WWW-Authenticate"] == "Bearer"

    impostor = AdminClient(served.rest_port, wrong)
    assert impostor.call("GET", "models").status_code == 403
    denied = impostor.call("PUT", "models/rec_c", {"base_path": str(served.base("rec_a")), "model_platform": "python"})
    assert denied.status_code == 403, denied.text
    assert "not valid" in denied.json()["error"]
    assert impostor.call("DELETE", "routes/recommender").status_code == 403
    assert served.admin.config() == before  # nothing changed

    # The right token: reads, a change, a refused change, and the change undone.
    write_offset_model(served.base("rec_c"), OFFSETS["rec_c"], (1,))
    assert served.admin.ok("GET", "models")["models"]
    added = served.admin.ok("PUT", "models/rec_c", {"base_path": str(served.base("rec_c")), "model_platform": "python"})
    assert added["name"] == "rec_c"
    assert served.predict("rec_c") == ("rec_c", 1)
    assert served.admin.call("PUT", "models/rec_c", raw=b"{not json").status_code == 400
    assert served.admin.ok("DELETE", "models/rec_c") == {"deleted": "rec_c"}
    assert served.admin.config() == before
    # The data plane needs no token.
    assert served.predict("rec_a") == ("rec_a", 1)

    assert served.process.wait_for_output("Model rec_c removed through the admin API", TIMEOUT_S), \
        served.process.output
    output = served.process.output
    assert token not in output, "the admin token appears in the server's output"
    assert wrong not in output, "a rejected bearer token appears in the server's output"


def test_admin_api_is_off_without_the_flag(tmp_path: Path, servers: list[Served]) -> None:
    served = start_served(tmp_path, ["rec_a", "rec_b"], admin=False)
    servers.append(served)
    for method, path in (("GET", "models"), ("PUT", "routes/recommender"), ("GET", "")):
        response = served.admin.call(method, path, raw=b"{}" if method == "PUT" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert "--enable_admin_api" in response.json()["error"]
    assert served.predict("recommender")[0] in ("rec_a", "rec_b")  # routes still serve


# -- 2. live changes under load --------------------------------------------------------------------


def _change(admin: AdminClient, method: str, path: str, body: Any = None) -> tuple[float, float, Any]:
    """(sent at, answered at, JSON answer) of an admin change that must succeed."""
    sent = time.monotonic()
    doc = admin.ok(method, path, body)
    return sent, time.monotonic(), doc


def test_live_changes_under_load_fail_no_request(tmp_path: Path, servers: list[Served]) -> None:
    served = start_served(tmp_path, ["rec_a", "rec_b", "labelled", "old_model"])
    servers.append(served)
    admin = served.admin
    write_offset_model(served.base("rec_c"), OFFSETS["rec_c"], (1,))
    route, direct, by_label = Target("recommender"), Target("rec_a"), Target("labelled", label="stable")
    # (target, from, until, answers allowed): a request sent after `from` (a change's answer)
    # and answered before `until` (the next change was sent) sees exactly that config.
    windows: list[tuple[Target, float, float, set[tuple[str, int]]]] = []

    everyone = [route, direct, by_label]
    # Back to back (no think time): every change below happens while all clients send.
    traffic = NamedTraffic(served.grpc_port, served.rest_port, everyone, ANSWERS, pause_s=0.0)
    with traffic:
        traffic.wait_answered_after(0.0, everyone, count=LOAD)

        # 90/10 -> 50/50: in force (GET and statistics) once answered; both arms answer.
        body = {"name": "recommender", "arms": [arm("control", "rec_a", 50), arm("treatment", "rec_b", 50)]}
        _, even_at, doc = _change(admin, "PUT", "routes/recommender", body)
        assert doc == body
        assert admin.ok("GET", "routes/recommender") == body
        weights = {name: a["weight"] for name, a in served.route_stats("recommender")["arms"].items()}
        assert weights == {"control": 50, "treatment": 50}
        traffic.wait_until(lambda s: {x.model for x in s if x.target == route.key and x.start_s > even_at}
                           >= {"rec_a", "rec_b"}, "both arms answering at 50/50")
        traffic.wait_answered_after(even_at, everyone, count=LOAD)

        # 50/50 -> 0/100 with a rule: from the answer on, only the rule reaches control.
        body = {"name": "recommender", "arms": [arm("control", "rec_a", 0), arm("treatment", "rec_b", 100)],
                "rules": [RULE_DE]}
        sent, rule_at, doc = _change(admin, "PUT", "routes/recommender", body)
        windows.append((route, 0.0, sent, {("rec_a", 1), ("rec_b", 1)}))
        assert doc == body and admin.routes() == {"recommender": body}
        assert served.predict("recommender") == ("rec_b", 1)
        assert served.predict("recommender", headers={"x-country": "DE"}) == ("rec_a", 1)
        assert served.grpc_predict("recommender", metadata=[("x-country", "DE")]) == ("rec_a", 1)
        assert served.grpc_predict("recommender") == ("rec_b", 1)
        traffic.wait_answered_after(rule_at, everyone, count=LOAD)

        # Move label "stable" 1 -> 2: callers by label switch at the answer, none fails.
        sent, label_at, doc = _change(admin, "PUT", "models/labelled/labels/stable", {"version": 2})
        windows += [(by_label, 0.0, sent, {("labelled", 1)}), (by_label, label_at, math.inf, {("labelled", 2)})]
        assert doc["version_labels"] == {"stable": 2}
        assert admin.models()["labelled"]["version_labels"] == {"stable": 2}
        assert served.predict("labelled", label="stable") == ("labelled", 2)
        assert served.grpc_predict("labelled", label="stable") == ("labelled", 2)
        assert model_states(served.rest_port, "labelled") == {"2": "AVAILABLE", "1": "AVAILABLE"}
        traffic.wait_answered_after(label_at, everyone, count=LOAD)

        # Add a model: it serves the moment the PUT answers, visible in config and status.
        new_model = {"base_path": str(served.base("rec_c")), "model_platform": "python"}
        _, _, doc = _change(admin, "PUT", "models/rec_c", new_model)
        assert served.predict("rec_c") == ("rec_c", 1)
        assert served.grpc_predict("rec_c") == ("rec_c", 1)
        assert {k: doc[k] for k in new_model} == new_model and doc["name"] == "rec_c"
        assert admin.models()["rec_c"] == doc
        assert model_states(served.rest_port, "rec_c") == {"1": "AVAILABLE"}
        traffic.wait_answered_after(time.monotonic(), everyone, count=LOAD)

        # Point the treatment arm at the new model.
        body = {"name": "recommender", "arms": [arm("control", "rec_a", 0), arm("treatment", "rec_c", 100)],
                "rules": [RULE_DE]}
        sent, moved_at, doc = _change(admin, "PUT", "routes/recommender", body)
        windows += [(route, rule_at, sent, {("rec_b", 1)}), (route, moved_at, math.inf, {("rec_c", 1)})]
        assert doc == body
        assert served.predict("recommender") == ("rec_c", 1)
        assert served.predict("recommender", headers={"x-country": "DE"}) == ("rec_a", 1)
        assert served.route_stats("recommender")["arms"]["treatment"]["model_name"] == "rec_c"
        traffic.wait_answered_after(moved_at, everyone, count=LOAD)

        # Remove a model no route uses: gone once answered.
        _, removed_at, doc = _change(admin, "DELETE", "models/old_model")
        assert doc == {"deleted": "old_model"}
        assert set(model_states(served.rest_port, "old_model").values()) <= {"END"}
        assert rest_predict(served.rest_port, "old_model").status_code == 404
        assert admin.call("GET", "models/old_model").status_code == 404
        assert set(admin.models()) == {"rec_a", "rec_b", "labelled", "rec_c"}
        traffic.wait_answered_after(removed_at, everyone, count=LOAD)

    traffic.assert_no_failures()
    windows.append((direct, 0.0, math.inf, {("rec_a", 1)}))
    for target, start, until, allowed in windows:
        seen = [s for s in traffic.samples(target) if s.start_s > start and s.end_s < until]
        wrong = [s for s in seen if (s.model, s.version) not in allowed]
        assert seen and not wrong, f"{target.key} in ({start:.3f}, {until:.3f}) expected {allowed}: {wrong[:5]}"


# -- 3. bad inputs ---------------------------------------------------------------------------------


def _route_body(*arms: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"arms": list(arms), **fields}


def test_bad_inputs_get_clear_4xx_and_change_nothing(tmp_path: Path, servers: list[Served]) -> None:
    served = start_served(tmp_path, ["rec_a", "rec_b", "labelled"])
    servers.append(served)
    admin = served.admin
    write_offset_model(served.base("rec_c"), OFFSETS["rec_c"], (1,))
    rec_c = {"base_path": str(served.base("rec_c")), "model_platform": "python"}
    good_arm = arm("control", "rec_a", 1)
    cases: list[tuple[str, str, str, Any, int, Sequence[str]]] = [
        ("bad JSON route", "PUT", "routes/recommender", b'{"arms": [', 400, ["JSON"]),
        ("bad JSON model", "PUT", "models/rec_a", b'{"base_path"', 400, ["JSON"]),
        ("bad JSON label", "PUT", "models/labelled/labels/stable", b"{version: 2}", 400, ["JSON"]),
        ("route not an object", "PUT", "routes/recommender", b"[]", 400, []),
        ("unknown route field", "PUT", "routes/recommender", _route_body(good_arm, weights=3), 400, ["weights"]),
        ("unknown arm field", "PUT", "routes/recommender", _route_body({**good_arm, "colour": "red"}), 400,
         ["colour"]),
        ("unknown model field", "PUT", "models/rec_c", {**rec_c, "colour": "red"}, 400, ["colour"]),
        ("unknown label field", "PUT", "models/labelled/labels/stable", {"version": 2, "when": 1}, 400, ["when"]),
        ("negative weight", "PUT", "routes/recommender", _route_body(arm("control", "rec_a", -1)), 400, ["weight"]),
        ("body names another route", "PUT", "routes/recommender", _route_body(good_arm, name="other"), 400,
         ["other", "recommender"]),
        ("arm names an unknown model", "PUT", "routes/recommender", _route_body(arm("control", "ghost", 1)), 404,
         ["recommender", "ghost"]),
        ("new route's arm names an unknown model", "PUT", "routes/fresh", _route_body(arm("x", "ghost", 1)), 404,
         ["fresh", "ghost"]),
        ("model named like a route", "PUT", "models/recommender", rec_c, 409, ["recommender"]),
        ("route named like a model", "PUT", "routes/rec_b", _route_body(good_arm), 409, ["rec_b"]),
        ("relative base path", "PUT", "models/rec_c", {**rec_c, "base_path": "models/rec_c"}, 400,
         ["absolute"]),
        ("missing base path", "PUT", "models/rec_c", {**rec_c, "base_path": str(tmp_path / "nowhere")}, 400,
         ["nowhere"]),
        ("platform change", "PUT", "models/rec_a", {**rec_c, "base_path": str(served.base("rec_a")),
                                                    "model_platform": "tensorflow"}, 400, ["platform"]),
        ("delete a model a route uses", "DELETE", "models/rec_b", None, 409, ["rec_b", "recommender"]),
        ("delete an unknown model", "DELETE", "models/ghost", None, 404, ["ghost"]),
        ("delete an unknown route", "DELETE", "routes/ghost", None, 404, ["ghost"]),
        ("label to a missing version", "PUT", "models/labelled/labels/stable", {"version": 7}, 409, ["7"]),
        ("label on an unknown model", "PUT", "models/ghost/labels/stable", {"version": 1}, 404, ["ghost"]),
        ("label version not a number", "PUT", "models/labelled/labels/stable", {"version": "two"}, 400,
         ["version"]),
        ("method not allowed", "POST", "models", {}, 405, ["POST"]),
        ("unknown admin path", "GET", "servables", None, 404, ["servables"]),
    ]
    route, direct = Target("recommender"), Target("rec_a")
    traffic = NamedTraffic(served.grpc_port, served.rest_port, [route, direct], ANSWERS)
    with traffic:
        before = admin.config()
        for what, method, path, body, status, names in cases:
            if isinstance(body, bytes):
                response = admin.call(method, path, raw=body)
            else:
                response = admin.call(method, path, body)
            assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
            message = response.json()["error"]
            assert all(name in message for name in names), f"{what}: {message!r} should name {names}"
            assert admin.config() == before, f"{what} changed the config"
            assert served.predict("recommender")[0] in ("rec_a", "rec_b"), what
            assert served.predict("labelled", label="stable") == ("labelled", 1), what
        assert model_states(served.rest_port, "rec_c") == {}

        # protobuf's JSON mapping: both spellings of the arm's field are accepted.
        camel = {"name": "recommender", "arms": [{"name": "control", "modelName": "rec_a", "weight": 3},
                                                 {"name": "treatment", "modelName": "rec_b", "weight": 1}],
                 "segmentKey": "x-user-id"}
        in_force = admin.ok("PUT", "routes/recommender", camel)
        assert in_force == {"name": "recommender", "segment_key": "x-user-id",
                            "arms": [arm("control", "rec_a", 3), arm("treatment", "rec_b", 1)]}
        snake = {"arms": [arm("control", "rec_a", 1), arm("treatment", "rec_b", 2)]}
        assert admin.ok("PUT", "routes/recommender", snake) == {"name": "recommender", **snake}
        assert admin.routes() == {"recommender": {"name": "recommender", **snake}}
        traffic.wait_answered_after(time.monotonic(), [route, direct])
    traffic.assert_no_failures()


# -- 4. HandleReloadConfigRequest alongside ---------------------------------------------------------


def _reload_request(models: Sequence[dict[str, Any]]) -> Any:
    from google.protobuf import json_format
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    for doc in models:
        json_format.ParseDict(doc, request.config.model_config_list.config.add())
    return request


def test_reload_config_rpc_works_alongside_the_admin_api(tmp_path: Path, servers: list[Served]) -> None:
    from tensorflow_serving.apis import model_service_pb2_grpc

    served = start_served(tmp_path, ["rec_a", "rec_b"])
    servers.append(served)
    admin = served.admin
    write_offset_model(served.base("reloaded"), OFFSETS["reloaded"], (1,))
    reloaded = {"name": "reloaded", "base_path": str(served.base("reloaded")), "model_platform": "python"}
    route, direct = Target("recommender"), Target("rec_a")
    traffic = NamedTraffic(served.grpc_port, served.rest_port, [route, direct], ANSWERS)
    with traffic, grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        current = list(admin.models().values())
        response = stub.HandleReloadConfigRequest(_reload_request([*current, reloaded]), timeout=TIMEOUT_S)
        assert response.status.error_code == 0, response.status
        assert served.grpc_predict("reloaded") == ("reloaded", 1)
        assert set(admin.models()) == {"rec_a", "rec_b", "reloaded"}
        assert model_states(served.rest_port, "reloaded") == {"1": "AVAILABLE"}

        # The admin API sees and uses the model the RPC added.
        body = {"name": "recommender", "arms": [arm("control", "rec_a", 0), arm("treatment", "reloaded", 1)]}
        changed_at = _change(admin, "PUT", "routes/recommender", body)[1]
        assert served.predict("recommender") == ("reloaded", 1)

        # A reload that drops a model a route uses is refused; nothing changes.
        before = admin.config()
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(_reload_request(current), timeout=TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION, refused.value
        assert "recommender" in refused.value.details() and "reloaded" in refused.value.details()
        assert admin.config() == before
        assert served.predict("reloaded") == ("reloaded", 1)
        traffic.wait_answered_after(changed_at, [route, direct])
    traffic.assert_no_failures()
    assert all(s.model == "reloaded" for s in traffic.samples(route) if s.start_s > changed_at)


# -- 5. --admin_persist_config ---------------------------------------------------------------------


def _file_models(path: Path) -> dict[str, Any]:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    return {c.name: c for c in config.model_config_list.config}


def test_persisted_changes_survive_a_restart(tmp_path: Path, servers: list[Served]) -> None:
    from pyserving.manager.routes import Arm, HeaderRule, Route
    from pyserving.server.routing_config import load_routing_config

    flags = ["--admin_persist_config"]
    served = start_served(tmp_path, ["rec_a", "rec_b"], flags)
    servers.append(served)
    admin = served.admin
    write_offset_model(served.base("rec_c"), OFFSETS["rec_c"], (1,))
    new_model = admin.ok("PUT", "models/rec_c", {"base_path": str(served.base("rec_c")), "model_platform": "python"})
    body = {"name": "recommender", "arms": [arm("control", "rec_a", 0), arm("treatment", "rec_c", 100)],
            "rules": [RULE_DE]}
    admin.ok("PUT", "routes/recommender", body)
    admin.ok("PUT", "models/rec_a/labels/stable", {"version": 1})
    admin.ok("DELETE", "models/rec_b")  # no route uses it any more

    on_disk = _file_models(served.model_config)
    assert list(on_disk) == ["rec_a", "rec_c"]
    assert on_disk["rec_c"].base_path == str(served.base("rec_c")) and on_disk["rec_c"].model_platform == "python"
    assert dict(on_disk["rec_a"].version_labels) == {"stable": 1}
    expected_route = Route(name="recommender", arms=(Arm("control", "rec_a", 0.0), Arm("treatment", "rec_c", 100.0)),
                           rules=(HeaderRule("x-country", "DE", "control"),))
    assert load_routing_config(served.routing_config) == [expected_route]
    assert sorted(os.listdir(tmp_path)) == ["models", "models.config", "routing.config"], "temporary files left"
    config = admin.config()

    served.process.stop()
    again = start_served(tmp_path, ["rec_a", "rec_c"], flags, write=False)
    servers.append(again)
    assert again.admin.config() == config
    assert again.admin.models()["rec_c"] == new_model
    assert again.predict("recommender") == ("rec_c", 1)
    assert again.predict("recommender", headers={"x-country": "DE"}) == ("rec_a", 1)
    assert again.predict("rec_a", label="stable") == ("rec_a", 1)
    assert again.route_stats("recommender")["arms"]["treatment"]["model_name"] == "rec_c"
    assert rest_predict(again.rest_port, "rec_b").status_code == 404


def test_without_persist_the_config_files_stay_unchanged(tmp_path: Path, servers: list[Served]) -> None:
    served = start_served(tmp_path, ["rec_a", "rec_b", "labelled"])
    servers.append(served)
    files = {path: path.read_bytes() for path in (served.model_config, served.routing_config)}
    admin = served.admin
    write_offset_model(served.base("rec_c"), OFFSETS["rec_c"], (1,))
    admin.ok("PUT", "models/rec_c", {"base_path": str(served.base("rec_c")), "model_platform": "python"})
    admin.ok("PUT", "routes/recommender", {"arms": [arm("control", "rec_a", 1), arm("treatment", "rec_c", 1)]})
    admin.ok("PUT", "models/labelled/labels/stable", {"version": 2})
    admin.ok("DELETE", "models/rec_b")
    admin.ok("PUT", "routes/second", {"arms": [arm("only", "rec_c", 1)]})
    assert set(admin.models()) == {"rec_a", "labelled", "rec_c"}
    assert served.predict("second") == ("rec_c", 1)
    assert {path: path.read_bytes() for path in files} == files
    assert sorted(os.listdir(tmp_path)) == ["models", "models.config", "routing.config"]
