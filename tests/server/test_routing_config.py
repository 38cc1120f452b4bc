"""Tests of the routing config formats (pyserving.server.routing_config) and the generated
routing_pb2 module: the issue's example, text and JSON round trips, error messages, and the
atomic writer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyserving.manager.routes import Arm, HeaderRule, Route, Shadow
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.routing_config import (
    load_routing_config,
    parse_routing_config,
    route_from_json,
    route_from_proto,
    route_to_json,
    route_to_proto,
    routes_to_text,
    write_routing_config,
)

ROOT = Path(__file__).resolve().parents[2]

#: The issue's example, verbatim (comments included).
ISSUE_EXAMPLE = """
routes {
  name: "recommender"            # the name clients call, like a model name
  segment_key: "x-user-id"       # optional: REST header / gRPC metadata key; same value -> same arm
  arms { name: "control"   model_name: "rec_a" weight: 90 }
  arms { name: "treatment" model_name: "rec_b" weight: 10 version_label: "canary" }
  rules { header: "x-country" equals: "DE" arm: "treatment" }   # audience segmentation, first match wins
  shadow { model_name: "rec_c" percent: 100 }                   # optional mirror
}
"""

RECOMMENDER = Route(
    name="recommender",
    segment_key="x-user-id",
    arms=(Arm("control", "rec_a", weight=90), Arm("treatment", "rec_b", weight=10, version_label="canary")),
    rules=(HeaderRule(header="x-country", equals="DE", arm="treatment"),),
    shadow=Shadow(model_name="rec_c", percent=100),
)

PINNED = Route(
    name="pinned",
    arms=(Arm("v0", "m", weight=0, version=0), Arm("v7", "m", weight=2.5, version=7)),
    rules=(HeaderRule("x-beta", "1", "v0"), HeaderRule("x-beta", "", "v7")),
    shadow=Shadow("s", percent=0, version_label="next"),
)

MINIMAL = Route(name="minimal", arms=(Arm("only", "m"),))


def test_issue_example_parses_unchanged() -> None:
    assert parse_routing_config(ISSUE_EXAMPLE) == [RECOMMENDER]
    assert parse_routing_config("") == []


def test_unset_weight_and_percent_take_defaults_but_zero_stays_zero() -> None:
    (route,) = parse_routing_config(
        'routes { name: "r" arms { name: "a" model_name: "m" } arms { name: "b" model_name: "m" weight: 0 }'
        ' shadow { model_name: "s" } }'
    )
    assert [arm.weight for arm in route.arms] == [1.0, 0.0]
    assert route.shadow == Shadow("s", percent=100.0)
    (route,) = parse_routing_config(
        'routes { name: "r" arms { name: "a" model_name: "m" } shadow { model_name: "s" percent: 0 } }'
    )
    assert route.shadow is not None and route.shadow.percent == 0.0


def test_versions_map_to_requests() -> None:
    (route,) = parse_routing_config(
        'routes { name: "r" arms { name: "a" model_name: "m" version: 0 }'
        ' arms { name: "b" model_name: "m" version_label: "" } arms { name: "c" model_name: "m" version: 3 } }'
    )
    assert [str(arm.request()) for arm in route.arms] == ["Specific(m, 0)", "Latest(m)", "Specific(m, 3)"]


def test_text_round_trip() -> None:
    routes = [RECOMMENDER, PINNED, MINIMAL]
    text = routes_to_text(routes)
    assert parse_routing_config(text) == routes
    assert routes_to_text(parse_routing_config(text)) == text
    assert routes_to_text([]) == ""


def test_proto_round_trip() -> None:
    for route in (RECOMMENDER, PINNED, MINIMAL):
        message = route_to_proto(route)
        assert message.arms[0].HasField("weight")
        assert route_from_proto(message) == route
    assert not route_to_proto(MINIMAL).HasField("shadow")
    assert route_to_proto(PINNED).arms[0].WhichOneof("version_choice") == "version"


def test_json_round_trip_and_form() -> None:
    doc = route_to_json(RECOMMENDER)
    assert doc == {
        "name": "recommender",
        "segment_key": "x-user-id",
        "arms": [
            {"name": "control", "model_name": "rec_a", "weight": 90.0},
            {"name": "treatment", "model_name": "rec_b", "weight": 10.0, "version_label": "canary"},
        ],
        "rules": [{"header": "x-country", "equals": "DE", "arm": "treatment"}],
        "shadow": {"model_name": "rec_c", "percent": 100.0},
    }
    assert route_to_json(MINIMAL) == {"name": "minimal", "arms": [{"name": "only", "model_name": "m", "weight": 1.0}]}
    pinned = route_to_json(PINNED)
    assert pinned["arms"][1]["version"] == 7 and pinned["shadow"] == {"model_name": "s", "percent": 0.0,
                                                                        "version_label": "next"}
    for route in (RECOMMENDER, PINNED, MINIMAL):
        doc = route_to_json(route)
        assert route_from_json(json.dumps(doc)) == route
        assert route_from_json(json.dumps(doc).encode()) == route
        assert route_from_json(doc) == route
        assert route_to_json(route_from_json(doc)) == doc


def test_json_accepts_both_field_name_forms() -> None:
    snake = {"name": "r", "segment_key": "k", "arms": [{"name": "a", "model_name": "m", "version_label": "x"}],
             "shadow": {"model_name": "s", "percent": 5}}
    camel = {"name": "r", "segmentKey": "k", "arms": [{"name": "a", "modelName": "m", "versionLabel": "x"}],
             "shadow": {"modelName": "s", "percent": 5}}
    expected = Route("r", (Arm("a", "m", version_label="x"),), segment_key="k", shadow=Shadow("s", 5))
    assert route_from_json(snake) == route_from_json(camel) == expected
    # protobuf's mapping writes int64 as a string; a plain number works as well.
    as_string = {"name": "r", "arms": [{"name": "a", "modelName": "m", "version": "4"}]}
    assert route_from_json(as_string).arms[0].version == 4


def test_json_name_from_the_url() -> None:
    body = {"arms": [{"name": "a", "model_name": "m"}]}
    assert route_from_json(body, name="from_url").name == "from_url"
    assert route_from_json({**body, "name": "same"}, name="same").name == "same"
    with pytest.raises(InvalidArgumentError) as info:
        route_from_json({**body, "name": "body_name"}, name="url_name")
    assert info.value.message == (
        "Invalid route JSON: the body names route 'body_name' but the URL names 'url_name'"
    )
    with pytest.raises(InvalidArgumentError, match="route name must be non-empty"):
        route_from_json(body)  # no name anywhere


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ("{not json", r"^Invalid route JSON: Expecting property name"),
        (b"\xff\xfe", r"^Invalid route JSON: "),
        ("[1, 2]", r"^Invalid route JSON: expected an object, got list$"),
        ('"recommender"', r"^Invalid route JSON: expected an object, got str$"),
        ([{"name": "r"}], r"^Invalid route JSON: expected an object, got list$"),
        ({"name": "r", "arms": [], "colour": "red"}, r'^Invalid route JSON: .*no field named "colour"'),
        ({"name": "r", "arms": [{"name": "a", "model_name": "m", "weight": "heavy"}]},
         r"^Invalid route JSON: .*weight"),
        ({"name": "r", "arms": {"name": "a"}}, r"^Invalid route JSON: .*arms"),
        ({"name": 5, "arms": []}, r"^Invalid route JSON: .*name"),
        ({"name": "r", "arms": [{"name": "a", "model_name": "m", "version": 1, "version_label": "x"}]},
         r'^Invalid route JSON: .*multiple "version_choice" oneof fields'),
        ({"name": "r", "arms": [{"name": "a", "model_name": "m", "weight": -1}]},
         r"^Invalid route JSON: route 'r': arm 'a': weight must be a finite number >= 0, got -1.0$"),
        ({"name": "r", "arms": [{"name": "a", "model_name": "m"}],
          "rules": [{"header": "h", "equals": "v", "arm": "b"}]},
         r"^Invalid route JSON: route 'r': rule on header 'h' names arm 'b', which the route does not have "
         r"\(arms: a\)$"),
        ({"name": "r", "arms": [{"name": "a", "model_name": "m"}], "shadow": {"model_name": "s", "percent": 101}},
         r"^Invalid route JSON: route 'r': shadow of model 's': percent must be in \[0, 100\], got 101.0$"),
        ({"name": "r", "arms": []}, r"^Invalid route JSON: route 'r' has no arms$"),
    ],
)
def test_bad_json_is_invalid_argument(doc: object, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        route_from_json(doc)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('routes {\n  name: "r"\n  arms { name: "a" model_name: "m" weight: }\n}',
         r"^Cannot parse routing config /etc/routes.txt line 3 column \d+: "),
        ('routes {\n  name: "r"\n  colour: "red"\n}',
         r'^Cannot parse routing config /etc/routes.txt line 3 column \d+: .*no field named "colour"'),
        ('routes { name: "r"\n arms { name: "a" model_name: "m" version: 1 version_label: "x" } }',
         r'^Cannot parse routing config /etc/routes.txt line 2 column \d+: '
         r'Field "version_label" is specified along with field "version"'),
        ('routes { name: "r" arms { name: "a" model_name: "m" weight: -2 } }',
         r"^Invalid routing config /etc/routes.txt: route 'r': arm 'a': weight must be a finite number >= 0, "
         r"got -2.0$"),
        ('routes { name: "r" arms { name: "a" model_name: "m" } rules { header: "h" equals: "v" arm: "b" } }',
         r"^Invalid routing config /etc/routes.txt: route 'r': rule on header 'h' names arm 'b', which the route "
         r"does not have \(arms: a\)$"),
        ('routes { name: "r" arms { name: "a" model_name: "m" } shadow { model_name: "s" percent: 150 } }',
         r"^Invalid routing config /etc/routes.txt: route 'r': shadow of model 's': percent must be in \[0, 100\], "
         r"got 150.0$"),
        ('routes { name: "r" arms { name: "a" model_name: "m" version: -1 } }',
         r"^Invalid routing config /etc/routes.txt: route 'r': arm 'a': version must be an int >= 0, got -1$"),
        ('routes { name: "r" arms { name: "a" model_name: "m" } }\n'
         'routes { name: "r" arms { name: "b" model_name: "m" } }',
         r"^Invalid routing config /etc/routes.txt: route 'r' is defined more than once$"),
        ('routes { name: "a/b" arms { name: "a" model_name: "m" } }',
         r"^Invalid routing config /etc/routes.txt: route name must be non-empty without '/', ':' or spaces, "
         r"got 'a/b'$"),
    ],
)
def test_bad_text_is_invalid_argument(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_routing_config(text, "/etc/routes.txt")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.txt"
    path.write_text(ISSUE_EXAMPLE)
    assert load_routing_config(path) == [RECOMMENDER]
    assert load_routing_config(str(path)) == [RECOMMENDER]
    missing = tmp_path / "missing.txt"
    with pytest.raises(NotFoundError, match=f"^Cannot read routing config file {missing}: "):
        load_routing_config(missing)
    path.write_text('routes {\n  name: "r"\n  arms { oops }\n}')
    with pytest.raises(InvalidArgumentError, match=f"^Cannot parse routing config {path} line 3 column"):
        load_routing_config(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(InvalidArgumentError, match=f"^Cannot parse routing config {path}: not UTF-8 text"):
        load_routing_config(path)


# --- the atomic writer ----------------------------------------------------------------------------------------


def test_write_creates_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "routes.txt"
    write_routing_config(path, [RECOMMENDER])
    assert load_routing_config(path) == [RECOMMENDER]
    assert path.read_text() == routes_to_text([RECOMMENDER])
    write_routing_config(str(path), [PINNED, MINIMAL])
    assert load_routing_config(path) == [PINNED, MINIMAL]
    write_routing_config(path, [])
    assert load_routing_config(path) == []
    assert os.listdir(tmp_path) == ["routes.txt"]  # no temporary file remains


def test_write_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "routes.txt"
    path.write_text(ISSUE_EXAMPLE)
    path.chmod(0o640)
    write_routing_config(path, [MINIMAL])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_routing_config(path) == [MINIMAL]


def test_write_through_a_symlink_replaces_the_linked_file(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text(ISSUE_EXAMPLE)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_routing_config(link, [MINIMAL])
    assert link.is_symlink() and load_routing_config(real) == [MINIMAL]
    assert sorted(os.listdir(tmp_path)) == ["link.txt", "real.txt"]


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="^Failed to write routing config file .*missing_dir"):
        write_routing_config(tmp_path / "missing_dir" / "routes.txt", [MINIMAL])
    if os.geteuid() == 0:
        return  # root ignores folder permissions
    path = tmp_path / "routes.txt"
    write_routing_config(path, [RECOMMENDER])
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(Exception, match="^Failed to write routing config file"):
            write_routing_config(path, [MINIMAL])
    finally:
        tmp_path.chmod(0o700)
    assert load_routing_config(path) == [RECOMMENDER] and os.listdir(tmp_path) == ["routes.txt"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """A reader thread parses the file while a writer replaces it; every read is one whole version."""
    path = tmp_path / "routes.txt"
    versions = [[RECOMMENDER], [PINNED, MINIMAL], [Route(f"r{i}", (Arm("a", "m"),)) for i in range(200)]]
    write_routing_config(path, versions[0])
    done = threading.Event()
    seen: list[list[Route]] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(load_routing_config(path))
            seen.append(load_routing_config(path))
        except BaseException as exc:  # recorded and asserted on below
            failures.append(exc)

    reader = threading.Thread(target=read, name="routing-config-reader")
    reader.start()
    try:
        for i in range(60):
            write_routing_config(path, versions[i % len(versions)])
    finally:
        done.set()
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert failures == []
    assert seen and all(routes in versions for routes in seen)
    assert seen[-1] == versions[59 % len(versions)]
    assert os.listdir(tmp_path) == ["routes.txt"]


# --- the generated proto module --------------------------------------------------------------------------------


def test_generated_module_matches_its_proto() -> None:
    proto = ROOT / "pyserving" / "protos" / "routing.proto"
    generated = (ROOT / "pyserving" / "protos" / "routing_pb2.py").read_text()
    assert f"Source SHA-256: {hashlib.sha256(proto.read_bytes()).hexdigest()}" in generated, (
        "routing.proto changed: run python tools/gen_protos.py"
    )
    assert "ValidateProtobufRuntimeVersion" not in generated  # imports with protobuf >= 4.21


def test_message_fields_are_the_documented_interface() -> None:
    from pyserving.protos import routing_pb2

    def fields(message: type) -> dict[str, tuple[int, str]]:
        return {f.name: (f.number, f.message_type.name if f.message_type else f.type)
                for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    double, int64, string = 1, 3, 9
    assert routing_pb2.DESCRIPTOR.package == "pyserving"
    assert fields(routing_pb2.RoutingConfig) == {"routes": (1, "Route")}
    assert fields(routing_pb2.Route) == {"name": (1, string), "segment_key": (2, string), "arms": (3, "Arm"),
                                         "rules": (4, "HeaderRule"), "shadow": (5, "Shadow")}
    assert fields(routing_pb2.Arm) == {"name": (1, string), "model_name": (2, string), "weight": (3, double),
                                       "version": (4, int64), "version_label": (5, string)}
    assert fields(routing_pb2.HeaderRule) == {"header": (1, string), "equals": (2, string), "arm": (3, string)}
    assert fields(routing_pb2.Shadow) == {"model_name": (1, string), "percent": (2, double), "version": (3, int64),
                                          "version_label": (4, string)}
    for message in (routing_pb2.Arm, routing_pb2.Shadow):
        oneof = message.DESCRIPTOR.oneofs_by_name["version_choice"]
        assert [f.name for f in oneof.fields] == ["version", "version_label"]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed")
def test_generator_reproduces_the_committed_module() -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"], check=True, timeout=120)
