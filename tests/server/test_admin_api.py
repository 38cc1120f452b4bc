"""Tests for pyserving.server.admin_api: every endpoint over a real ServerCore (python models) and Router.

Each refused request is checked for its status, a clear ``{"error": ...}`` message, and for
having changed nothing (models, routes and labels compared with a snapshot).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyserving.manager.router import Router
from pyserving.manager.routes import Arm, Route, Shadow
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.server.admin_api import AdminApi, AdminReply, load_admin_token
from pyserving.server.control_plane import ControlPlane
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.model_config import ModelEntry, load_model_server_config, models_from_config
from pyserving.server.routing_config import load_routing_config
from pyserving.sources.version_policy import AllVersions
from tests.support.model_drops import write_python_version

TOKEN = "s3cret-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = Route(
    "recommender",
    arms=(Arm("control", "rec_a", 90), Arm("treatment", "rec_b", 10, version_label="stable")),
    shadow=Shadow("rec_c"),
)


class Admin:
    def __init__(self, root: Path, core: ServerCore, router: Router, control: ControlPlane) -> None:
        self.root, self.core, self.router, self.control = root, core, router, control
        self.api = AdminApi(control, TOKEN)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> AdminReply:
        raw = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        data = raw.encode() if isinstance(raw, str) else (raw or b"")
        reply = self.api.handle(method, path, AUTH if headers is None else headers, data)
        assert (b"content-type", b"application/json") in reply.headers
        return reply

    def snapshot(self) -> tuple[Any, ...]:
        models = self.control.models()
        return models, self.control.routes(), {m.name: self.core.version_labels(m.name) for m in models}

    def refused(self, status: int, message: str, method: str, path: str, body: Any = None) -> AdminReply:
        before = self.snapshot()
        reply = self.call(method, path, body)
        assert reply.status == status, reply.body
        assert message in reply.json()["error"]
        assert self.snapshot() == before
        return reply


@pytest.fixture()
def admin(tmp_path: Path) -> Iterator[Admin]:
    for name in ("rec_a", "rec_c", "spare"):
        write_python_version(tmp_path / name / "1")
    for version in (1, 2):
        write_python_version(tmp_path / "rec_b" / str(version))
    (tmp_path / "config").mkdir()
    core = ServerCore(ServerCoreOptions(file_system_poll_wait_seconds=0.2, quiet_period_s=0.0,
                                        max_num_load_retries=0, load_wait_timeout_s=30.0))
    router = Router(core, lambda: [m.name for m in core.models()])
    control = ControlPlane(core, router, model_config_file=str(tmp_path / "config" / "models.config"),
                           routing_config_file=str(tmp_path / "config" / "routing.config"), persist=True)
    try:
        core.start([
            ModelEntry("rec_a", str(tmp_path / "rec_a"), "python"),
            ModelEntry("rec_b", str(tmp_path / "rec_b"), "python", AllVersions(), {"stable": 1}),
            ModelEntry("rec_c", str(tmp_path / "rec_c"), "python"),
        ])
        control.reload_routes([ROUTE])
        yield Admin(tmp_path, core, router, control)
    finally:
        router.close()
        core.stop()


def model_json(root: Path, name: str, labels: dict[str, int] | None = None, policy: Any = None) -> dict[str, Any]:
    return {
        "name": name,
        "base_path": str(root / name),
        "model_platform": "python",
        "model_version_policy": policy or {"latest": {"num_versions": 1}},
        "version_labels": labels or {},
    }


# -- authentication -----------------------------------------------------------------------------


def test_token_missing_wrong_and_right(admin: Admin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"authorization": "Bearer"}, {"Authorization": TOKEN}):
        reply = admin.call("GET", "/v1/admin/models", headers=headers)
        assert reply.status == 401
        assert (b"www-authenticate", b"Bearer") in reply.headers
        assert "Authorization: Bearer <token>" in reply.json()["error"]
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        reply = admin.call("DELETE", "/v1/admin/models/rec_a", headers={"Authorization": wrong})
        assert reply.status == 403
        assert reply.json() == {"error": "the admin API token is not valid"}
    assert [m.name for m in admin.control.models()] == ["rec_a", "rec_b", "rec_c"]
    # Unknown paths are not revealed without the token either.
    assert admin.call("GET", "/v1/admin/nothing", headers={}).status == 401
    assert admin.call("GET", "/v1/admin/models", headers={"authorization": f"bearer {TOKEN}"}).status == 200
    assert admin.call("GET", "/v1/admin/models").status == 200
    assert TOKEN not in caplog.text


def test_no_token_configured_means_no_authentication(admin: Admin) -> None:
    api = AdminApi(admin.control, None)
    assert api.handle("GET", "/v1/admin/routes", {}, b"").status == 200
    with pytest.raises(InvalidArgumentError):
        AdminApi(admin.control, "  ")


def test_load_admin_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert load_admin_token(path) == TOKEN
    path.write_text(" \n")
    with pytest.raises(InvalidArgumentError, match="--admin_token_file .* is empty"):
        load_admin_token(path)
    with pytest.raises(NotFoundError, match="Failed to read --admin_token_file"):
        load_admin_token(tmp_path / "missing")


# -- models -------------------------------------------------------------------------------------


def test_get_models(admin: Admin) -> None:
    reply = admin.call("GET", "/v1/admin/models")
    assert reply.status == 200
    assert reply.json() == {"models": [
        model_json(admin.root, "rec_a"),
        model_json(admin.root, "rec_b", {"stable": 1}, {"all": {}}),
        model_json(admin.root, "rec_c"),
    ]}
    assert admin.call("GET", "/v1/admin/models/rec_b").json() == model_json(admin.root, "rec_b", {"stable": 1},
                                                                             {"all": {}})
    admin.refused(404, "model 'nope' is not configured", "GET", "/v1/admin/models/nope")


def test_put_model_answers_what_is_in_force_and_persists(admin: Admin) -> None:
    body = {"basePath": str(admin.root / "spare"), "modelPlatform": "python", "versionLabels": {"v": "1"}}
    reply = admin.call("PUT", "/v1/admin/models/spare", body)
    assert reply.status == 200, reply.body
    expected = model_json(admin.root, "spare", {"v": 1})
    assert reply.json() == expected
    assert admin.call("GET", "/v1/admin/models/spare").json() == expected
    with admin.core.get_handle(ServableRequest.label("spare", "v")) as handle:
        assert handle.id == ServableId("spare", 1)
    saved = models_from_config(load_model_server_config(admin.root / "config" / "models.config"))
    assert saved == admin.control.models()

    reply = admin.call("DELETE", "/v1/admin/models/spare")
    assert (reply.status, reply.json()) == (200, {"deleted": "spare"})
    assert [m.name for m in admin.control.models()] == ["rec_a", "rec_b", "rec_c"]
    admin.refused(404, "model 'spare' is not configured", "DELETE", "/v1/admin/models/spare")


def test_bad_model_bodies_are_400_and_change_nothing(admin: Admin) -> None:
    path = "/v1/admin/models/spare"
    good = {"base_path": str(admin.root / "spare"), "model_platform": "python"}
    admin.refused(400, "The model config is not valid JSON", "PUT", path, b'{"base_path": ')
    admin.refused(400, "must be a JSON object", "PUT", path, b"[]")
    admin.refused(400, 'has no field named "colour"', "PUT", path, {**good, "colour": "red"})
    admin.refused(400, "names model 'other' but the path names model 'spare'", "PUT", path, {**good, "name": "other"})
    admin.refused(400, "Expected model spare to have an absolute path", "PUT", path, {**good, "base_path": "rel"})
    admin.refused(400, "requests unsupported platform onnx", "PUT", path, {**good, "model_platform": "onnx"})
    admin.refused(400, "Illegal to change a model's platform", "PUT", "/v1/admin/models/rec_a",
                  {**good, "base_path": str(admin.root / "rec_a"), "model_platform": "tensorflow"})
    admin.refused(400, "not a readable folder", "PUT", "/v1/admin/models/ghost",
                  {**good, "base_path": str(admin.root / "ghost")})


def test_model_and_route_name_conflicts_are_409(admin: Admin) -> None:
    body = {"base_path": str(admin.root / "spare"), "model_platform": "python"}
    admin.refused(409, "model 'recommender' has the name of route 'recommender'", "PUT",
                  "/v1/admin/models/recommender", body)
    admin.refused(409, "route 'rec_a' has the name of model 'rec_a'", "PUT", "/v1/admin/routes/rec_a",
                  {"arms": [{"name": "x", "model_name": "rec_b"}]})


def test_removing_a_model_a_route_uses_is_409(admin: Admin) -> None:
    admin.refused(409, "cannot remove model 'rec_c': route 'recommender' (shadow) sends requests to it",
                  "DELETE", "/v1/admin/models/rec_c")


# -- labels -------------------------------------------------------------------------------------


def test_put_label(admin: Admin) -> None:
    reply = admin.call("PUT", "/v1/admin/models/rec_b/labels/canary", {"version": 2})
    assert reply.status == 200, reply.body
    assert reply.json()["version_labels"] == {"stable": 1, "canary": 2}
    assert admin.core.version_labels("rec_b") == {"stable": 1, "canary": 2}
    assert admin.call("PUT", "/v1/admin/models/rec_b/labels/stable", {"version": "2"}).status == 200
    assert admin.core.version_labels("rec_b") == {"stable": 2, "canary": 2}


def test_bad_labels_change_nothing(admin: Admin) -> None:
    path = "/v1/admin/models/rec_b/labels/stable"
    admin.refused(409, "Request to assign label to version 9 of model rec_b, which is not currently available",
                  "PUT", path, {"version": 9})
    admin.refused(404, "model 'nope' is not configured", "PUT", "/v1/admin/models/nope/labels/stable", {"version": 1})
    admin.refused(400, "not valid JSON", "PUT", path, b"version=2")
    admin.refused(400, 'needs "version"', "PUT", path, {})
    admin.refused(400, "unknown field(s) colour", "PUT", path, {"version": 1, "colour": "red"})
    admin.refused(400, "version must be an integer >= 0, got -1", "PUT", path, {"version": -1})
    admin.refused(400, "version must be an integer >= 0, got True", "PUT", path, {"version": True})


# -- routes -------------------------------------------------------------------------------------


def test_routes_endpoints(admin: Admin) -> None:
    from pyserving.server.routing_config import route_to_json

    assert admin.call("GET", "/v1/admin/routes").json() == {"routes": [route_to_json(ROUTE)]}
    assert admin.call("GET", "/v1/admin/routes/recommender").json() == route_to_json(ROUTE)
    body = {"arms": [{"name": "a", "modelName": "rec_a", "weight": 50},
                     {"name": "b", "model_name": "rec_b", "weight": 50, "version": 2}],
            "segmentKey": "x-user-id"}
    reply = admin.call("PUT", "/v1/admin/routes/ranker", body)
    assert reply.status == 200, reply.body
    ranker = Route("ranker", arms=(Arm("a", "rec_a", 50), Arm("b", "rec_b", 50, version=2)), segment_key="x-user-id")
    assert reply.json() == route_to_json(ranker)
    assert admin.router.get_route("ranker") == ranker
    assert load_routing_config(admin.root / "config" / "routing.config") == [ranker, ROUTE]

    reply = admin.call("DELETE", "/v1/admin/routes/ranker")
    assert (reply.status, reply.json()) == (200, {"deleted": "ranker"})
    assert admin.control.routes() == [ROUTE]
    admin.refused(404, "route 'ranker' is not configured", "GET", "/v1/admin/routes/ranker")
    admin.refused(404, "route 'ranker' is not configured", "DELETE", "/v1/admin/routes/ranker")


def test_bad_routes_change_nothing(admin: Admin) -> None:
    path = "/v1/admin/routes/ranker"
    admin.refused(400, "Invalid route JSON", "PUT", path, b"{")
    admin.refused(400, "Invalid route JSON", "PUT", path, {"arms": [{"name": "a", "model_name": "rec_a"}], "x": 1})
    admin.refused(400, "has no arms", "PUT", path, {})
    admin.refused(404, "arm 'a' names model 'ghost'", "PUT", path, {"arms": [{"name": "a", "model_name": "ghost"}]})


# -- paths and methods --------------------------------------------------------------------------


def test_unknown_paths_and_wrong_methods(admin: Admin) -> None:
    for path in ("/v1/admin", "/v1/admin/", "/v1/admin/servables", "/v1/admin/models/rec_a/versions",
                 "/v1/admin/models//labels/x", "/v1/models/rec_a"):
        admin.refused(404, "unknown admin API path", "GET", path)
    reply = admin.refused(405, "method POST is not allowed", "POST", "/v1/admin/models/rec_a")
    assert (b"allow", b"GET, PUT, DELETE") in reply.headers
    reply = admin.refused(405, "method DELETE is not allowed", "DELETE", "/v1/admin/models")
    assert (b"allow", b"GET") in reply.headers
    reply = admin.refused(405, "method GET is not allowed", "GET", "/v1/admin/models/rec_b/labels/stable")
    assert (b"allow", b"PUT") in reply.headers


def test_names_in_paths_are_percent_decoded(admin: Admin) -> None:
    (admin.root / "spare").rename(admin.root / "my.model")
    body = {"base_path": str(admin.root / "my.model"), "model_platform": "python"}
    assert admin.call("PUT", "/v1/admin/models/my%2Emodel", body).status == 200
    assert admin.call("GET", "/v1/admin/models/my.model?verbose=1").json()["name"] == "my.model"


def test_a_bug_becomes_a_500_and_is_never_raised(admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[ModelEntry]:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin.control, "models", broken)
    reply = admin.call("GET", "/v1/admin/models")
    assert (reply.status, reply.json()) == (500, {"error": "RuntimeError: boom"})
