"""The REST management API (``--enable_admin_api``): models, labels and routes, changed live.

A plain function of one request, ``AdminApi.handle(method, path, headers, body) ->
AdminReply``, so any HTTP server can mount it; it blocks for as long as a change takes
(loading a model), so the REST server runs it in a worker thread. It never raises.

Endpoints (names in paths are percent-decoded; bodies and answers are JSON)::

    GET    /v1/admin/models                        {"models": [ModelConfig, ...]}
    GET    /v1/admin/models/{name}                 ModelConfig
    PUT    /v1/admin/models/{name}                 body ModelConfig -> ModelConfig in force
    DELETE /v1/admin/models/{name}                 {"deleted": name}
    PUT    /v1/admin/models/{name}/labels/{label}  body {"version": N} -> ModelConfig in force
    GET    /v1/admin/routes                        {"routes": [Route, ...]}
    GET    /v1/admin/routes/{name}                 Route
    PUT    /v1/admin/routes/{name}                 body Route -> Route in force
    DELETE /v1/admin/routes/{name}                 {"deleted": name}

``ModelConfig`` is TF Serving's message in protobuf's JSON mapping
(:mod:`~pyserving.server.model_config_io`), ``Route`` the ``pyserving.Route`` message
(:mod:`~pyserving.server.routing_config`); both ``base_path`` and ``basePath`` spellings
are accepted. A body's ``name`` may be left out (the path's name is used) and must equal
the path's otherwise. Every change goes through the :class:`ControlPlane`: validated,
atomic, answered (200) once in force; on any error nothing changed.

Authentication, when a token is configured (``--admin_token_file``): every request needs
``Authorization: Bearer <token>``. Missing, or another scheme -> 401 with
``WWW-Authenticate: Bearer``; a wrong token -> 403. Tokens are compared in constant time;
the token never appears in a log line or an answer.

Errors are ``{"error": "<message>"}`` with these statuses: invalid JSON, unknown fields,
invalid values -> 400; unknown model or route (also a route arm naming a model that is not
served) -> 404; a route and a model with one name -> 409 (ALREADY_EXISTS); a change the
current state forbids -> 409 (FAILED_PRECONDITION: removing a model a route uses, a label
naming a version that is not AVAILABLE, route changes that could not be persisted); an
unknown path under ``/v1/admin`` -> 404; a method the path does not have -> 405 with
``Allow``; a model that fails to load -> 500 (UNKNOWN). Other codes follow
:data:`pyserving.server.status.HTTP_STATUS`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from pyserving.servable.errors import (
    Code,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ServingError,
    UnauthenticatedError,
    as_serving_error,
)
from pyserving.server.control_plane import ControlPlane
from pyserving.server.status import http_status, to_serving_error

__all__ = ["AdminApi", "AdminReply", "load_admin_token", "ADMIN_PREFIX"]

_log = logging.getLogger(__name__)

ADMIN_PREFIX = "/v1/admin"
_JSON = ((b"content-type", b"application/json"),)
#: Statuses that differ from the data plane's table (pyserving.server.status).
_ADMIN_STATUS = {Code.FAILED_PRECONDITION: 409, Code.ALREADY_EXISTS: 409}


@dataclass(frozen=True, slots=True)
class AdminReply:
    """One HTTP answer: status, JSON body, and headers (lower-case names, as bytes)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = _JSON

    def json(self) -> Any:
        return json.loads(self.body)


def load_admin_token(path: str | os.PathLike[str]) -> str:
    """The bearer token in ``--admin_token_file`` (surrounding whitespace removed).

    A file that cannot be read raises the matching ServingError naming the path; an empty
    one :class:`InvalidArgumentError`. The token itself is never part of a message.
    """
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise as_serving_error(exc, f"Failed to read --admin_token_file {os.fspath(path)}: ") from exc
    if not token:
        raise InvalidArgumentError(f"--admin_token_file {os.fspath(path)} is empty; it must hold the bearer token")
    return token


class AdminApi:
    """The admin endpoints over ``control``; ``token`` None = no authentication.

    Thread-safe: any number of threads may call :meth:`handle` at once (the control plane
    serialises the changes).
    """

    def __init__(self, control: ControlPlane, token: str | None = None) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise InvalidArgumentError("the admin token must be a non-empty string")
        self._control = control
        self._token = token.encode("utf-8") if token is not None else None

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> AdminReply:
        """Answer one request; never raises (a bug becomes a 500 and is logged)."""
        try:
            denied = self._authenticate(headers)
            if denied is not None:
                return denied
            return self._dispatch(method.upper(), path, body)
        except ServingError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            _log.exception("Admin API %s %s failed", method, path.split("?", 1)[0])
            return _error(to_serving_error(exc))

    # -- authentication ------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str]) -> AdminReply | None:
        if self._token is None:
            return None
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        scheme, _, given = (value or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            reply = _error(
                UnauthenticatedError("the admin API needs an 'Authorization: Bearer <token>' header")
            )
            return AdminReply(reply.status, reply.body, reply.headers + ((b"www-authenticate", b"Bearer"),))
        if not hmac.compare_digest(given.strip().encode("utf-8"), self._token):
            return _error(PermissionDeniedError("the admin API token is not valid"))
        return None

    # -- routing -------------------------------------------------------------------------

    def _dispatch(self, method: str, path: str, body: bytes) -> AdminReply:
        raw = path.split("?", 1)[0]
        if raw != ADMIN_PREFIX and not raw.startswith(ADMIN_PREFIX + "/"):
            raise NotFoundError(f"unknown admin API path {raw!r}")
        parts = [unquote(part) for part in raw[len(ADMIN_PREFIX) + 1 :].split("/")]
        if any(not part for part in parts):
            raise NotFoundError(f"unknown admin API path {raw!r}")
        handlers = self._handlers(parts, body)
        if handlers is None:
            raise NotFoundError(
                f"unknown admin API path {raw!r}; paths: {ADMIN_PREFIX}/models[/{{name}}[/labels/{{label}}]], "
                f"{ADMIN_PREFIX}/routes[/{{name}}]"
            )
        handler = handlers.get(method)
        if handler is None:
            allow = ", ".join(handlers)
            reply = _error(
                ServingError(f"method {method} is not allowed on {raw}; allowed: {allow}"), status=405
            )
            return AdminReply(405, reply.body, reply.headers + ((b"allow", allow.encode("ascii")),))
        return _json_reply(200, handler())

    def _handlers(self, parts: list[str], body: bytes) -> dict[str, Callable[[], Any]] | None:
        c = self._control
        match parts:
            case ["models"]:
                return {"GET": lambda: {"models": [_model_json(m) for m in c.models()]}}
            case ["models", name]:
                return {
                    "GET": lambda: _model_json(c.get_model(name)),
                    "PUT": lambda: self._put_model(name, body),
                    "DELETE": lambda: self._delete(c.remove_model, name),
                }
            case ["models", name, "labels", label]:
                return {"PUT": lambda: self._put_label(name, label, body)}
            case ["routes"]:
                return {"GET": lambda: {"routes": [_route_json(r) for r in c.routes()]}}
            case ["routes", name]:
                return {
                    "GET": lambda: _route_json(c.get_route(name)),
                    "PUT": lambda: self._put_route(name, body),
                    "DELETE": lambda: self._delete(c.remove_route, name),
                }
        return None

    # -- changes -------------------------------------------------------------------------

    def _put_model(self, name: str, body: bytes) -> Any:
        from pyserving.server.model_config_io import model_entry_from_json

        entry = model_entry_from_json(body, name, self._control.models())
        return _model_json(self._control.put_model(entry))

    def _put_label(self, name: str, label: str, body: bytes) -> Any:
        doc = _json_object(body, "label body")
        unknown = sorted(set(doc) - {"version"})
        if unknown:
            raise InvalidArgumentError(f"label body has unknown field(s) {', '.join(unknown)}; expected {{\"version\": N}}")
        if "version" not in doc:
            raise InvalidArgumentError('label body needs "version", e.g. {"version": 2}')
        version = doc["version"]
        if isinstance(version, str) and version.isdigit():
            version = int(version)  # protobuf's JSON mapping writes int64 as a string
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidArgumentError(f"label body: version must be an integer >= 0, got {version!r}")
        self._control.get_model(name)  # 404 for an unknown model before anything else
        return _model_json(self._control.set_label(name, label, version))

    def _put_route(self, name: str, body: bytes) -> Any:
        from pyserving.server.routing_config import route_from_json

        return _route_json(self._control.put_route(route_from_json(body, name)))

    @staticmethod
    def _delete(remove: Callable[[str], None], name: str) -> Any:
        remove(name)
        return {"deleted": name}


def _model_json(entry: Any) -> Any:
    from pyserving.server.model_config_io import model_config_to_json

    return model_config_to_json(entry)


def _route_json(route: Any) -> Any:
    from pyserving.server.routing_config import route_to_json

    return route_to_json(route)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"The {what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"The {what} must be a JSON object, got {type(doc).__name__}")
    return doc


def _json_reply(status: int, doc: Any) -> AdminReply:
    return AdminReply(status, json.dumps(doc).encode("utf-8"))


def _error(exc: ServingError, status: int | None = None) -> AdminReply:
    if status is None:
        status = _ADMIN_STATUS.get(exc.code, http_status(exc.code))
    return _json_reply(status, {"error": exc.message})
