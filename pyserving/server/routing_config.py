"""The routing config formats (``routing.proto``) <-> the routes of :mod:`pyserving.manager.routes`.

Two forms of the same messages:

* **text format**, a whole ``RoutingConfig`` — the ``--routing_config_file`` that other
  programs write and ``--admin_persist_config`` writes back: :func:`parse_routing_config`,
  :func:`load_routing_config`, :func:`routes_to_text`, :func:`write_routing_config`;
* **JSON**, one ``Route`` — the body of ``/v1/admin/routes/{name}``, in protobuf's JSON
  mapping (``model_name`` and ``modelName`` are both accepted): :func:`route_from_json`,
  :func:`route_to_json`.

:func:`route_from_proto` / :func:`route_to_proto` convert single messages.

Mapping: an arm without ``weight`` has weight 1.0 and a shadow without ``percent`` mirrors
100 %; an explicit 0 stays 0 (the fields are proto3 ``optional``). ``version`` and
``version_label`` are a oneof (both given: an error); an empty ``version_label`` means
none, as in :class:`~pyserving.manager.routes.Arm`. The reverse conversions always write
``weight`` and ``percent`` and write a version only when one is set, so
``parse(routes_to_text(routes)) == routes`` for any routes.

Contracts:

* Every function is a pure function of its arguments (the writer's only effect is the file
  it replaces) and safe to call from any thread at the same time; none keeps state.
* Checks here cover one config on its own: syntax, field names and types, the rules of the
  :mod:`~pyserving.manager.routes` constructors, and (for a whole file) unique route names.
  Checks against the served models (:func:`~pyserving.manager.routes.validate_routes`)
  belong to the caller that applies the routes.
* Errors are :class:`~pyserving.servable.errors.ServingError`: anything wrong with the
  content is :class:`InvalidArgumentError` whose message names the source (file path, or
  "route JSON"), the route and the problem; a text-format syntax error also names the line
  and column. A file that cannot be read or written raises the error of
  :func:`~pyserving.servable.errors.as_serving_error` (``NotFoundError`` for a missing file,
  ``PermissionDeniedError``...).
* ``write_routing_config`` is atomic: the new text goes to a temporary file in the target's
  folder, is flushed and fsynced, keeps the mode of the file it replaces, and takes the
  target's name with ``os.replace``; a reader sees the old file or the new one, never a mix,
  and a failed write leaves the old file and no temporary file behind.
* protobuf is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from pyserving.manager.routes import Arm, HeaderRule, Route, Shadow
from pyserving.servable.errors import InvalidArgumentError, ServingError
from pyserving.server.config_files import atomic_write_text, parse_text_config, read_config_text

__all__ = [
    "parse_routing_config",
    "load_routing_config",
    "routes_to_text",
    "write_routing_config",
    "route_from_json",
    "route_to_json",
    "route_from_proto",
    "route_to_proto",
]

_DEFAULT_WEIGHT = 1.0
_DEFAULT_PERCENT = 100.0


# --- single messages --------------------------------------------------------------------------------------


def _version_choice(message: Any) -> tuple[int | None, str | None]:
    which = message.WhichOneof("version_choice")
    if which == "version":
        return int(message.version), None
    if which == "version_label":
        return None, message.version_label or None
    return None, None


def _in_route(route_name: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """``build(*args, **kwargs)``, its error prefixed with the route it belongs to."""
    try:
        return build(*args, **kwargs)
    except ServingError as exc:
        raise InvalidArgumentError(f"route {route_name!r}: {exc.message}") from exc


def route_from_proto(message: Any) -> Route:
    """The :class:`Route` of a ``pyserving.Route`` message.

    Raises :class:`InvalidArgumentError` when the message breaks a rule of the dataclasses
    (the message names the route, the arm, rule or shadow, and the value).
    """
    name = message.name
    arms = []
    for arm in message.arms:
        version, label = _version_choice(arm)
        weight = float(arm.weight) if arm.HasField("weight") else _DEFAULT_WEIGHT
        arms.append(_in_route(name, Arm, arm.name, arm.model_name, weight, version, label))
    rules = [_in_route(name, HeaderRule, rule.header, rule.equals, rule.arm) for rule in message.rules]
    shadow = None
    if message.HasField("shadow"):
        version, label = _version_choice(message.shadow)
        percent = float(message.shadow.percent) if message.shadow.HasField("percent") else _DEFAULT_PERCENT
        shadow = _in_route(name, Shadow, message.shadow.model_name, percent, version, label)
    try:
        return Route(name=name, arms=tuple(arms), segment_key=message.segment_key, rules=tuple(rules), shadow=shadow)
    except ServingError as exc:
        raise InvalidArgumentError(exc.message) from exc


def _set_version(message: Any, version: int | None, label: str | None) -> None:
    if version is not None:
        message.version = version
    elif label:
        message.version_label = label


def route_to_proto(route: Route) -> Any:
    """The ``pyserving.Route`` message of ``route`` (weight and percent always set)."""
    from pyserving.protos import routing_pb2

    message = routing_pb2.Route(name=route.name, segment_key=route.segment_key)
    for arm in route.arms:
        arm_message = message.arms.add(name=arm.name, model_name=arm.model_name, weight=float(arm.weight))
        _set_version(arm_message, arm.version, arm.version_label)
    for rule in route.rules:
        message.rules.add(header=rule.header, equals=rule.equals, arm=rule.arm)
    if route.shadow is not None:
        message.shadow.model_name = route.shadow.model_name
        message.shadow.percent = float(route.shadow.percent)
        _set_version(message.shadow, route.shadow.version, route.shadow.version_label)
    return message


# --- text format: the routing config file ------------------------------------------------------------------


def parse_routing_config(text: str, source: str = "<text>") -> list[Route]:
    """The routes of a text-format ``RoutingConfig``, in file order; ``source`` names it in errors.

    Errors (all :class:`InvalidArgumentError`): a syntax error, an unknown field or a wrong
    type — "Cannot parse routing config {source} line L column C: ..."; a route breaking a
    rule, or two routes with one name — "Invalid routing config {source}: ...".
    """
    from pyserving.protos import routing_pb2

    config = parse_text_config(text, routing_pb2.RoutingConfig(), "routing config", source)
    routes: list[Route] = []
    seen: set[str] = set()
    for message in config.routes:
        try:
            route = route_from_proto(message)
        except ServingError as exc:
            raise InvalidArgumentError(f"Invalid routing config {source}: {exc.message}") from exc
        if route.name in seen:
            raise InvalidArgumentError(
                f"Invalid routing config {source}: route {route.name!r} is defined more than once"
            )
        seen.add(route.name)
        routes.append(route)
    return routes


def load_routing_config(path: str | os.PathLike[str]) -> list[Route]:
    """Read and parse the routing config file at ``path`` (see :func:`parse_routing_config`).

    A file that cannot be read raises :func:`as_serving_error`'s error (``NotFoundError``
    when missing); text that is not UTF-8 raises :class:`InvalidArgumentError`.
    """
    return parse_routing_config(read_config_text(path, "routing config"), os.fspath(path))


def routes_to_text(routes: Sequence[Route]) -> str:
    """The text-format ``RoutingConfig`` of ``routes`` (in the given order)."""
    from google.protobuf import text_format

    from pyserving.protos import routing_pb2

    config = routing_pb2.RoutingConfig()
    for route in routes:
        config.routes.append(route_to_proto(route))
    return text_format.MessageToString(config)


def write_routing_config(path: str | os.PathLike[str], routes: Sequence[Route]) -> None:
    """Replace the file at ``path`` with :func:`routes_to_text` of ``routes``, atomically
    (:func:`~pyserving.server.config_files.atomic_write_text`: through a symbolic link the
    file it points to is replaced; permission bits are kept; owner and comments are not).
    Raises a ServingError naming the file when it cannot be written; the old file is then
    unchanged."""
    atomic_write_text(path, routes_to_text(routes), what="routing config file")


# --- JSON: one route, the admin API's body -----------------------------------------------------------------


def route_from_json(doc: bytes | str | Mapping[str, Any], name: str | None = None) -> Route:
    """The :class:`Route` of a JSON ``Route`` (text, UTF-8 bytes, or an already decoded object).

    protobuf's JSON mapping: ``model_name`` and ``modelName`` are both accepted, ``version``
    may be a number or a string of digits. ``name`` (the one in the URL) fills a missing or
    empty ``"name"`` and must equal a given one. Raises :class:`InvalidArgumentError`
    naming the problem for text that is not JSON, a document that is not an object, an
    unknown field, a value of the wrong type, both ``version`` and ``version_label``, a
    name that differs from ``name``, or a route breaking a rule of the dataclasses.
    """
    from google.protobuf import json_format

    from pyserving.protos import routing_pb2

    if isinstance(doc, (bytes, bytearray, str)):
        try:
            doc = json.loads(doc)
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
            raise InvalidArgumentError(f"Invalid route JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise InvalidArgumentError(f"Invalid route JSON: expected an object, got {type(doc).__name__}")
    message = routing_pb2.Route()
    try:
        json_format.ParseDict(dict(doc), message)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"Invalid route JSON: {exc}") from exc
    if name is not None:
        if not message.name:
            message.name = name
        elif message.name != name:
            raise InvalidArgumentError(
                f"Invalid route JSON: the body names route {message.name!r} but the URL names {name!r}"
            )
    try:
        return route_from_proto(message)
    except ServingError as exc:
        raise InvalidArgumentError(f"Invalid route JSON: {exc.message}") from exc


def route_to_json(route: Route) -> dict[str, Any]:
    """The JSON object of ``route``: protobuf's JSON mapping with the proto field names.

    Fields at their default (empty ``segment_key`` or ``rules``, no shadow, no version) are
    left out; ``weight`` and ``percent`` are always present, and ``version`` is a JSON
    number (protobuf's mapping would write the int64 as a string; both parse back).
    """
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(route_to_proto(route), preserving_proto_field_name=True)
    for target in [*doc.get("arms", ()), *([doc["shadow"]] if "shadow" in doc else [])]:
        if "version" in target:
            target["version"] = int(target["version"])
    return doc
