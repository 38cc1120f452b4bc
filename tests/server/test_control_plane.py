"""Tests for pyserving.server.control_plane: a real ServerCore (python-platform models) and Router.

Every refused change is followed by a check that nothing changed: the model list, the
routes and the labels in force are compared with a snapshot taken before.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyserving.manager.router import Router
from pyserving.manager.routes import Arm, Route, Shadow
from pyserving.servable.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnknownError,
)
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.server.control_plane import ControlPlane
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.model_config import ModelEntry, load_model_server_config, models_from_config
from pyserving.server.model_config_io import write_model_server_config
from pyserving.server.routing_config import load_routing_config, write_routing_config
from pyserving.sources.version_policy import AllVersions, SpecificVersions
from tests.support.model_drops import write_python_version

ROUTE = Route(
    "recommender",
    arms=(Arm("control", "rec_a", 90), Arm("treatment", "rec_b", 10, version_label="stable")),
    shadow=Shadow("rec_c"),
)


@dataclass
class World:
    root: Path
    core: ServerCore
    router: Router
    control: ControlPlane
    models: list[ModelEntry] = field(default_factory=list)

    def entry(self, name: str, **changes: Any) -> ModelEntry:
        return ModelEntry(name, str(self.root / name), "python", **changes)

    def snapshot(self) -> tuple[Any, ...]:
        models = self.control.models()
        return models, self.control.routes(), {m.name: self.core.version_labels(m.name) for m in models}

    def answer(self, request: ServableRequest) -> ServableId:
        with self.core.get_handle(request) as handle:
            return handle.id


def write_models(root: Path) -> None:
    for name in ("rec_a", "rec_c", "spare"):
        write_python_version(root / name / "1")
    write_python_version(root / "rec_b" / "1")
    write_python_version(root / "rec_b" / "2")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.py").write_text("def create_servable(d):\n    raise ValueError('broken')\n")


@pytest.fixture()
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(*, persist: bool = False, model_file: bool = True, routing_file: bool = True,
             **options: Any) -> World:
        root = tmp_path / f"world{len(made)}"
        write_models(root)
        settings: dict[str, Any] = dict(file_system_poll_wait_seconds=0.2, quiet_period_s=0.0,
                                        max_num_load_retries=0, load_wait_timeout_s=30.0)
        settings.update(options)
        core = ServerCore(ServerCoreOptions(**settings))
        router = Router(core, lambda: [m.name for m in core.models()])
        models = [
            ModelEntry("rec_a", str(root / "rec_a"), "python"),
            ModelEntry("rec_b", str(root / "rec_b"), "python", AllVersions(), {"stable": 1}),
            ModelEntry("rec_c", str(root / "rec_c"), "python"),
        ]
        model_config_file = str(root / "config" / "models.config") if model_file else ""
        routing_config_file = str(root / "config" / "routing.config") if routing_file else ""
        (root / "config").mkdir()
        if model_file:
            write_model_server_config(model_config_file, models)
        if routing_file:
            write_routing_config(routing_config_file, [ROUTE])
        control = ControlPlane(core, router, model_config_file=model_config_file,
                               routing_config_file=routing_config_file, persist=persist)
        world = World(root, core, router, control, models)
        made.append(world)
        core.start(models)
        control.reload_routes([ROUTE])
        return world

    yield make
    for world in made:
        world.router.close()
        world.core.stop()


# -- models ------------------------------------------------------------------------------------


def test_put_model_adds_a_model_that_serves_when_put_returns(make_world: Callable[..., World]) -> None:
    w = make_world()
    entry = w.entry("spare")
    assert w.control.put_model(entry) == entry
    assert w.answer(ServableRequest.latest("spare")) == ServableId("spare", 1)
    assert [m.name for m in w.control.models()] == ["rec_a", "rec_b", "rec_c", "spare"]
    assert w.control.get_model("spare") == entry
    assert w.control.put_model(entry) == entry  # the same again: no change


def test_put_model_replaces_in_place(make_world: Callable[..., World]) -> None:
    w = make_world()
    replaced = w.entry("rec_b", version_policy=AllVersions(), version_labels={"stable": 1, "canary": 2})
    assert w.control.put_model(replaced) == replaced
    assert [m.name for m in w.control.models()] == ["rec_a", "rec_b", "rec_c"]
    assert w.answer(ServableRequest.label("rec_b", "canary")) == ServableId("rec_b", 2)


def test_failed_load_restores_the_previous_models(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(UnknownError, match="broken"):
        w.control.put_model(w.entry("broken"))
    assert w.snapshot() == before
    assert w.answer(ServableRequest.latest("rec_a")) == ServableId("rec_a", 1)


def test_invalid_entries_change_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(InvalidArgumentError, match="base_path of model nowhere is not a readable folder"):
        w.control.put_model(w.entry("nowhere"))
    with pytest.raises(InvalidArgumentError, match="Illegal to change a model's platform"):
        w.control.put_model(ModelEntry("rec_a", str(w.root / "rec_a"), "tensorflow"))
    with pytest.raises(InvalidArgumentError, match="absolute path"):
        w.control.put_model(ModelEntry("rel", "relative/path", "python"))
    assert w.snapshot() == before


def test_model_named_like_a_route_is_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(AlreadyExistsError, match="model 'recommender' has the name of route 'recommender'"):
        w.control.put_model(ModelEntry("recommender", str(w.root / "spare"), "python"))
    with pytest.raises(AlreadyExistsError, match="model 'recommender' has the name of route"):
        w.control.reload_models([*w.models, ModelEntry("recommender", str(w.root / "spare"), "python")])
    assert w.snapshot() == before


def test_removing_a_model_a_route_uses_is_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError, match="cannot remove model 'rec_b': route 'recommender' "
                                                      r"\(arm 'treatment'\) sends requests to it"):
        w.control.remove_model("rec_b")
    with pytest.raises(FailedPreconditionError, match=r"model 'rec_c': route 'recommender' \(shadow\)"):
        w.control.reload_models(w.models[:2])
    assert w.snapshot() == before


def test_remove_model_then_add_it_again(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.control.put_route(Route("recommender", arms=(Arm("only", "rec_a"),)))
    with pytest.raises(NotFoundError, match="model 'nope' is not configured"):
        w.control.remove_model("nope")
    for _ in range(3):  # a re-added model must load again, not report its old unload as a failure
        w.control.remove_model("rec_b")
        assert [m.name for m in w.control.models()] == ["rec_a", "rec_c"]
        with pytest.raises(NotFoundError):
            w.answer(ServableRequest.latest("rec_b"))
        w.control.put_model(w.models[1])
        assert w.answer(ServableRequest.label("rec_b", "stable")) == ServableId("rec_b", 1)


# -- labels -------------------------------------------------------------------------------------


def test_set_label_to_a_loaded_version(make_world: Callable[..., World]) -> None:
    w = make_world()
    entry = w.control.set_label("rec_b", "stable", 2)
    assert dict(entry.version_labels) == {"stable": 2}
    assert w.core.version_labels("rec_b") == {"stable": 2}
    assert w.answer(ServableRequest.label("rec_b", "stable")) == ServableId("rec_b", 2)
    w.control.set_label("rec_b", "canary", 1)
    assert w.core.version_labels("rec_b") == {"stable": 2, "canary": 1}


def test_set_label_to_a_missing_version_changes_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError, match="Request to assign label to version 7 of model rec_b, "
                                                      "which is not currently available for inference"):
        w.control.set_label("rec_b", "stable", 7)
    with pytest.raises(FailedPreconditionError, match="version 7 of model rec_b"):
        w.control.set_label("rec_b", "canary", 7)
    with pytest.raises(NotFoundError, match="model 'nope' is not configured"):
        w.control.set_label("nope", "stable", 1)
    with pytest.raises(InvalidArgumentError, match="version of label 'stable' must be an int >= 0"):
        w.control.set_label("rec_b", "stable", -1)
    assert w.snapshot() == before


def test_new_model_whose_label_names_a_missing_version_is_not_added(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError, match="version 5 of model spare"):
        w.control.put_model(w.entry("spare", version_labels={"stable": 5}))
    assert w.snapshot() == before
    w.control.put_model(w.entry("spare", version_labels={"stable": 1}))  # and it can be added right after
    assert w.answer(ServableRequest.label("spare", "stable")) == ServableId("spare", 1)


def test_new_label_may_name_an_unavailable_version_when_allowed(make_world: Callable[..., World]) -> None:
    w = make_world(allow_version_labels_for_unavailable_models=True)
    w.control.set_label("rec_b", "canary", 7)
    assert w.core.version_labels("rec_b") == {"stable": 1, "canary": 7}
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError):  # moving an existing label still needs an available version
        w.control.set_label("rec_b", "stable", 8)
    assert w.snapshot() == before


# -- routes -------------------------------------------------------------------------------------


def test_changes_that_would_break_a_route_target_are_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    # ROUTE's treatment arm sends to label "stable" of rec_b: a rec_b without it is refused...
    with pytest.raises(FailedPreconditionError, match="route 'recommender' \\(arm 'treatment'\\).*label 'stable'"):
        w.control.put_model(w.entry("rec_b", version_policy=AllVersions()))
    # ...as is a route arm naming a label or a version its model does not serve.
    with pytest.raises(FailedPreconditionError, match="label 'canary' of model 'rec_a'"):
        w.control.put_route(Route("other", arms=(Arm("a", "rec_a", version_label="canary"),)))
    with pytest.raises(FailedPreconditionError, match="label 'canary'"):
        w.control.reload_routes([ROUTE, Route("other", arms=(Arm("a", "rec_a", version_label="canary"),))])
    assert w.snapshot() == before


def test_label_outside_a_specific_policy_is_refused(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(InvalidArgumentError, match="label 'stable' of model rec_b names version 1, which its version"):
        w.control.put_model(w.entry("rec_b", version_policy=SpecificVersions((2,)), version_labels={"stable": 1}))
    assert w.snapshot() == before


def test_put_and_remove_route(make_world: Callable[..., World]) -> None:
    w = make_world()
    second = Route("ranker", arms=(Arm("a", "rec_a", 50), Arm("c", "rec_c", 50)))
    assert w.control.put_route(second) == second
    assert [r.name for r in w.control.routes()] == ["ranker", "recommender"]
    w.control.remove_route("ranker")
    assert w.control.routes() == [ROUTE]
    with pytest.raises(NotFoundError, match="route 'ranker' is not configured"):
        w.control.remove_route("ranker")
    with pytest.raises(NotFoundError, match="route 'ranker' is not configured"):
        w.control.get_route("ranker")


def test_invalid_routes_change_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    before = w.snapshot()
    with pytest.raises(AlreadyExistsError, match="route 'rec_a' has the name of model 'rec_a'"):
        w.control.put_route(Route("rec_a", arms=(Arm("x", "rec_b"),)))
    with pytest.raises(NotFoundError, match="arm 'x' names model 'ghost'"):
        w.control.put_route(Route("other", arms=(Arm("x", "ghost"),)))
    with pytest.raises(NotFoundError, match="names model 'ghost'"):
        w.control.reload_routes([ROUTE, Route("other", arms=(Arm("x", "ghost"),))])
    assert w.snapshot() == before


# -- persistence and file polls ------------------------------------------------------------------


def _listing(world: World) -> list[str]:
    return sorted(os.listdir(world.root / "config"))


def test_persist_writes_both_files_and_they_load_back_the_same(make_world: Callable[..., World]) -> None:
    w = make_world(persist=True)
    model_file, routing_file = w.root / "config" / "models.config", w.root / "config" / "routing.config"
    routing_inode = routing_file.stat().st_ino

    w.control.put_model(w.entry("spare"))
    w.control.set_label("rec_b", "stable", 2)
    assert routing_file.stat().st_ino == routing_inode  # only the file whose content changed is written
    ranker = Route("ranker", arms=(Arm("a", "rec_a"), Arm("s", "spare")))
    w.control.put_route(ranker)
    w.control.remove_route("recommender")
    w.control.remove_model("rec_c")

    assert _listing(w) == ["models.config", "routing.config"]  # no temporary files left
    assert models_from_config(load_model_server_config(model_file)) == w.control.models()
    assert load_routing_config(routing_file) == w.control.routes() == [ranker]
    # A poll that re-reads what was just written does nothing.
    assert w.control.reload_models_from_file() is False
    assert w.control.reload_routes_from_file() is False

    # A fresh control plane over a fresh core loads the same configuration from the files.
    core = ServerCore(ServerCoreOptions(quiet_period_s=0.0, max_num_load_retries=0, load_wait_timeout_s=30.0))
    router = Router(core, lambda: [m.name for m in core.models()])
    try:
        core.start(models_from_config(load_model_server_config(model_file)))
        router.set_routes(load_routing_config(routing_file))
        assert core.models() == w.control.models()
        assert router.routes() == w.control.routes()
        assert core.version_labels("rec_b") == {"stable": 2}
    finally:
        router.close()
        core.stop()


def test_persist_needs_the_files(make_world: Callable[..., World]) -> None:
    w = make_world()
    with pytest.raises(InvalidArgumentError, match="--admin_persist_config needs --model_config_file"):
        ControlPlane(w.core, w.router, persist=True)

    w = make_world(persist=True, routing_file=False)
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError, match="--routing_config_file"):
        w.control.put_route(Route("ranker", arms=(Arm("a", "rec_a"),)))
    with pytest.raises(FailedPreconditionError, match="--routing_config_file"):
        w.control.remove_route("recommender")
    assert w.snapshot() == before
    w.control.put_model(w.entry("spare"))  # models persist without a routing file
    assert [m.name for m in models_from_config(load_model_server_config(w.root / "config" / "models.config"))] == [
        "rec_a", "rec_b", "rec_c", "spare"]


def test_failed_write_undoes_the_change(make_world: Callable[..., World]) -> None:
    w = make_world(persist=True)
    before = w.snapshot()
    config = w.root / "config"
    config.rename(w.root / "config-gone")  # the folder of both files is gone: writes fail
    with pytest.raises(InternalError, match="Failed to write ModelServerConfig file .*; the change was undone"):
        w.control.put_model(w.entry("spare"))
    with pytest.raises(InternalError, match="routing config file .*; the change was undone"):
        w.control.put_route(Route("ranker", arms=(Arm("a", "rec_a"),)))
    assert w.snapshot() == before


def test_file_polls_apply_changed_files_only(make_world: Callable[..., World]) -> None:
    w = make_world()
    model_file, routing_file = w.root / "config" / "models.config", w.root / "config" / "routing.config"
    assert w.control.reload_models_from_file() is False
    assert w.control.reload_routes_from_file() is False

    # Admin changes without persist survive polls of the unchanged files.
    w.control.put_model(w.entry("spare"))
    w.control.put_route(Route("ranker", arms=(Arm("s", "spare"),)))
    assert w.control.reload_models_from_file() is False
    assert w.control.reload_routes_from_file() is False
    assert [m.name for m in w.control.models()] == ["rec_a", "rec_b", "rec_c", "spare"]

    # An explicit re-read (SIGHUP) applies the file even when it did not change.
    assert w.control.reload_routes_from_file(force=True) is True
    assert w.control.routes() == [ROUTE]

    # A changed routing file replaces the routes; a model file that drops a model a route uses is refused.
    ranker = Route("ranker", arms=(Arm("a", "rec_a"),))
    write_routing_config(routing_file, [ranker, ROUTE])
    assert w.control.reload_routes_from_file() is True
    assert w.control.routes() == [ranker, ROUTE]
    write_model_server_config(model_file, w.models[:2])
    before = w.snapshot()
    with pytest.raises(FailedPreconditionError, match="cannot remove model 'rec_c'"):
        w.control.reload_models_from_file()
    assert w.snapshot() == before
    write_model_server_config(model_file, [*w.models, w.entry("spare", version_labels={"v": 1})])
    assert w.control.reload_models_from_file() is True
    assert w.core.version_labels("spare") == {"v": 1}


# -- live changes under load ---------------------------------------------------------------------


def test_changes_under_concurrent_requests_fail_none(make_world: Callable[..., World]) -> None:
    w = make_world()
    stop = threading.Event()
    failures: list[str] = []
    calls = [0]

    def client() -> None:
        while not stop.is_set():
            try:
                _, answered = w.router.call("recommender", lambda servable: servable.factor)
                assert answered.name in ("rec_a", "rec_b")
                with w.core.get_handle(ServableRequest.label("rec_b", "stable")) as handle:
                    assert handle.id.name == "rec_b"
                calls[0] += 1
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(3):
            for weights in ((50, 50), (0, 100), (90, 10)):
                w.control.put_route(Route("recommender", arms=(
                    Arm("control", "rec_a", weights[0]),
                    Arm("treatment", "rec_b", weights[1], version_label="stable"),
                ), shadow=Shadow("rec_c")))
            w.control.set_label("rec_b", "stable", 2 - round_ % 2)
            w.control.put_model(w.entry("spare"))
            w.control.remove_model("spare")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert calls[0] > 0
