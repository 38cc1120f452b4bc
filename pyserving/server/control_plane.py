""":class:`ControlPlane`: the one owner of the server's configuration — models and routes.

Every change of what the server serves goes through it: the admin API (one model, one
label, one route at a time), ``HandleReloadConfigRequest`` and the config-file poll (a
whole model list), the routing-file poll and SIGHUP (a whole route set). It keeps the two
halves consistent: a route and a model never share a name, and no model that a route's arm
or shadow sends requests to is removed.

Guarantees of every change method:

* **Serialised**: one lock (``_lock``) orders all changes and the file writes; the request
  path never takes it (it reads the core's and the router's immutable snapshots).
* **Validated first**: a change that breaks a rule raises before anything changes.
* **Atomic and in force on return**: a model list goes to
  :meth:`ServerCore.reload_config`, which returns once new models settled and the labels
  are set; a removed model's versions are waited for until they unloaded (bounded by
  ``load_wait_timeout_s``); routes are swapped in one step by the :class:`Router`.
* **Nothing changes on failure**: if the core refuses or a new model fails to load, the
  previous model list is installed again before the error is raised (the versions that
  served keep serving throughout: the core never unloads a model the new list keeps).
* **Persisted** (``persist=True``): after an admin change the file whose content changed
  is rewritten atomically — the model list to ``model_config_file`` (text-format
  ``ModelServerConfig``), the routes to ``routing_config_file`` (text-format
  ``RoutingConfig``). If the write fails the change is undone and the error raised.
  :meth:`reload_models` / :meth:`reload_routes` come from those files (or the RPC) and are
  never written back.

Errors (:class:`ServingError`): unknown model or route -> :class:`NotFoundError`; a model
named like a route (or the reverse) -> :class:`AlreadyExistsError` naming both; removing a
model a route uses, a route arm (or shadow) naming a label its model does not define or a
version its model's ``specific`` policy does not serve (also when a model change would
drop that label or version), a label naming a version outside the model's ``specific``
policy (INVALID_ARGUMENT), a label naming a version that is not AVAILABLE, or changing a route
while persisting without ``--routing_config_file`` -> :class:`FailedPreconditionError`;
invalid values -> :class:`InvalidArgumentError`; a model that does not load -> the core's
error (UNKNOWN).

File polls: :meth:`reload_models_from_file` / :meth:`reload_routes_from_file` read the file
*under the lock* and act only when its content differs from what this object last read or
wrote there. So a poll that re-reads a file just persisted is a no-op, and a poll that read
the file before an admin change can never undo that change; admin changes made without
``persist`` survive until the file itself changes (or a restart).

Versions that a changed version policy of an existing model adds load in the background
(the core waits only for new models); :meth:`put_model` returns once the new entry and its
labels are in force. Blocking: the change methods block for as long as loads take; call
them from a worker thread, never from an event loop or while holding a handle.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Mapping, Sequence

from pyserving.manager.router import Router
from pyserving.manager.routes import Arm, Route, Shadow
from pyserving.servable.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from pyserving.servable.ids import ServableRequest
from pyserving.servable.state import ManagerState
from pyserving.server.core import ServerCore
from pyserving.server.model_config import ModelEntry, load_model_server_config, models_from_config, uri_is_relative_path
from pyserving.sources.version_policy import SpecificVersions

__all__ = ["ControlPlane", "ConfigFileError"]

_log = logging.getLogger(__name__)


class ConfigFileError(ServingError):
    """A config file that cannot be read, parsed or validated (as opposed to a config that
    could not be applied); the code and message are those of the underlying error."""

    def __init__(self, error: ServingError) -> None:
        super().__init__(error.message, error.code)


class ControlPlane:
    """Owns the model list (through ``core``) and the routes (through ``router``).

    ``core`` must be started before the first change; ``router`` should validate against
    this plane's models (``model_names=lambda: [m.name for m in core.models()]``).
    Raises :class:`InvalidArgumentError` when ``persist`` is set without
    ``model_config_file``.
    """

    def __init__(
        self,
        core: ServerCore,
        router: Router,
        *,
        model_config_file: str = "",
        routing_config_file: str = "",
        persist: bool = False,
    ) -> None:
        if persist and not model_config_file:
            raise InvalidArgumentError(
                "--admin_persist_config needs --model_config_file: the model list is written back to that file"
            )
        self._core = core
        self._router = router
        self._model_config_file = model_config_file
        self._routing_config_file = routing_config_file
        self._persist = persist
        # Serialises every change of models and routes and every file read/write done here.
        self._lock = threading.Lock()
        # What the config files held when last read or written here (None = not yet known);
        # guarded by _lock.
        self._file_models: list[ModelEntry] | None = None
        self._file_routes: list[Route] | None = None

    @property
    def persist(self) -> bool:
        return self._persist

    # -- reading (lock-free) -----------------------------------------------------------------

    def models(self) -> list[ModelEntry]:
        """The models in force, in config order."""
        return self._core.models()

    def routes(self) -> list[Route]:
        """The routes in force, sorted by name."""
        return self._router.routes()

    def get_model(self, name: str) -> ModelEntry:
        for entry in self._core.models():
            if entry.name == name:
                return entry
        raise NotFoundError(f"model {name!r} is not configured; models: {_names(self._core.models())}")

    def get_route(self, name: str) -> Route:
        route = self._router.get_route(name)
        if route is None:
            raise NotFoundError(f"route {name!r} is not configured; routes: {_names(self._router.routes())}")
        return route

    # -- whole lists: config files, ReloadConfig RPC, SIGHUP (never persisted) -----------------

    def reload_models(self, models: Sequence[ModelEntry]) -> None:
        """Replace the model list (validated against the routes first); not persisted."""
        with self._lock:
            self._check_against_routes(list(models), self._router.routes())
            self._apply_models(list(models))

    def reload_routes(self, routes: Sequence[Route]) -> None:
        """Replace every route (validated against the models first); not persisted."""
        with self._lock:
            self._check_route_targets(self._core.models(), routes)
            self._router.set_routes(routes)

    def reload_models_from_file(self, force: bool = False) -> bool:
        """Read ``model_config_file`` and apply it if it changed since last read or written
        here, or always with ``force`` (an explicit re-read such as SIGHUP); True if the
        model list in force changed. A file that cannot be read or is invalid raises
        :class:`ConfigFileError`; a change that cannot be applied raises its own error."""
        if not self._model_config_file:
            raise FailedPreconditionError("no --model_config_file is configured")
        with self._lock:
            try:
                models = models_from_config(load_model_server_config(self._model_config_file), self._core.models())
            except ServingError as exc:
                raise ConfigFileError(exc) from exc
            if self._file_models is None:
                self._file_models = self._core.models()
            if models == self._file_models and not force:
                return False
            self._check_against_routes(models, self._router.routes())
            changed = models != self._core.models()
            self._apply_models(models)
            self._file_models = models
            return changed

    def reload_routes_from_file(self, force: bool = False) -> bool:
        """Like :meth:`reload_models_from_file`, for ``routing_config_file``."""
        from pyserving.server.routing_config import load_routing_config

        if not self._routing_config_file:
            raise FailedPreconditionError("no --routing_config_file is configured")
        with self._lock:
            try:
                routes = sorted(load_routing_config(self._routing_config_file), key=lambda r: r.name)
            except ServingError as exc:
                raise ConfigFileError(exc) from exc
            if self._file_routes is None:
                self._file_routes = self._router.routes()
            if routes == self._file_routes and not force:
                return False
            changed = routes != self._router.routes()
            self._check_route_targets(self._core.models(), routes)
            self._router.set_routes(routes)
            self._file_routes = routes
            return changed

    # -- one model at a time (admin API) --------------------------------------------------------

    def put_model(self, entry: ModelEntry) -> ModelEntry:
        """Add ``entry``, or replace the model of its name; return the entry in force."""
        if not isinstance(entry, ModelEntry):
            raise InvalidArgumentError(f"entry must be a ModelEntry, got {entry!r}")
        with self._lock:
            self._remember_file_state()
            previous = self._core.models()
            old = next((m for m in previous if m.name == entry.name), None)
            self._check_entry(entry, old)
            if old == entry:
                return old
            models = [entry if m.name == entry.name else m for m in previous]
            if old is None:
                models.append(entry)
            else:
                self._check_labels(entry.name, entry.version_labels)
            self._check_route_targets(models, self._router.routes())
            self._apply_models(models)
            self._persist_models(previous)
            _log.info("Model %s %s through the admin API", entry.name, "replaced" if old else "added")
            return self.get_model(entry.name)

    def remove_model(self, name: str) -> None:
        """Stop serving model ``name`` (NotFoundError if unknown; refused while a route uses it)."""
        with self._lock:
            self._remember_file_state()
            previous = self._core.models()
            if all(m.name != name for m in previous):
                raise NotFoundError(f"model {name!r} is not configured; models: {_names(previous)}")
            models = [m for m in previous if m.name != name]
            self._check_against_routes(models, self._router.routes())
            self._apply_models(models)
            self._persist_models(previous)
            _log.info("Model %s removed through the admin API", name)

    def set_label(self, name: str, label: str, version: int) -> ModelEntry:
        """Point ``label`` of model ``name`` at ``version``; return the model's entry now.

        The version must be AVAILABLE (TF Serving's rule; with
        ``allow_version_labels_for_unavailable_models`` only moving an existing label needs
        that). Requests for the label switch at once; none fails.
        """
        if not isinstance(label, str) or not label:
            raise InvalidArgumentError(f"label must be a non-empty string, got {label!r}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise InvalidArgumentError(f"version of label {label!r} must be an int >= 0, got {version!r}")
        with self._lock:
            self._remember_file_state()
            previous = self._core.models()
            old = next((m for m in previous if m.name == name), None)
            if old is None:
                raise NotFoundError(f"model {name!r} is not configured; models: {_names(previous)}")
            if old.version_labels.get(label) == version:
                return old
            labels = {**old.version_labels, label: version}
            self._check_labels(name, labels)
            entry = dataclasses.replace(old, version_labels=labels)
            self._apply_models([entry if m.name == name else m for m in previous])
            self._persist_models(previous)
            _log.info("Label %s of model %s now points to version %d (admin API)", label, name, version)
            return self.get_model(name)

    # -- one route at a time (admin API) --------------------------------------------------------

    def put_route(self, route: Route) -> Route:
        """Add ``route``, or replace the route of its name; return the route in force."""
        if not isinstance(route, Route):
            raise InvalidArgumentError(f"route must be a Route, got {route!r}")
        with self._lock:
            self._remember_file_state()
            self._check_routing_file()
            if any(m.name == route.name for m in self._core.models()):
                raise AlreadyExistsError(
                    f"route {route.name!r} has the name of model {route.name!r}; "
                    "a route and a model may not share a name"
                )
            previous = self._router.routes()
            if self._router.get_route(route.name) == route:
                return route
            self._check_route_targets(self._core.models(), [route])
            self._router.put_route(route)
            self._persist_routes(previous)
            _log.info("Route %s %s through the admin API", route.name,
                      "replaced" if any(r.name == route.name for r in previous) else "added")
            return self.get_route(route.name)

    def remove_route(self, name: str) -> None:
        """Stop serving route ``name`` (NotFoundError if unknown)."""
        with self._lock:
            self._remember_file_state()
            previous = self._router.routes()
            if all(r.name != name for r in previous):
                raise NotFoundError(f"route {name!r} is not configured; routes: {_names(previous)}")
            self._check_routing_file()
            self._router.remove_route(name)
            self._persist_routes(previous)
            _log.info("Route %s removed through the admin API", name)

    # -- checks (caller holds _lock) ----------------------------------------------------------

    def _remember_file_state(self) -> None:
        """Before the first admin change: what is in force now came from the files (or the
        command line), so a later poll of an unchanged file must not undo the change."""
        if self._file_models is None:
            self._file_models = self._core.models()
        if self._file_routes is None:
            self._file_routes = self._router.routes()

    def _check_entry(self, entry: ModelEntry, old: ModelEntry | None) -> None:
        if not entry.name:
            raise InvalidArgumentError("a model needs a non-empty name")
        if self._router.is_route(entry.name):
            raise AlreadyExistsError(
                f"model {entry.name!r} has the name of route {entry.name!r}; a route and a model may not share a name"
            )
        if uri_is_relative_path(entry.base_path):
            raise InvalidArgumentError(
                f"Expected model {entry.name} to have an absolute path or URI; got base_path()={entry.base_path}"
            )
        if old is not None and old.platform != entry.platform:
            raise InvalidArgumentError(
                f"Illegal to change a model's platform. For model {entry.name} platform was "
                f"{old.platform} and new platform requested is {entry.platform}"
            )
        policy = entry.version_policy
        if isinstance(policy, SpecificVersions):
            for label, version in sorted(entry.version_labels.items()):
                if version not in policy.versions:
                    raise InvalidArgumentError(
                        f"label {label!r} of model {entry.name} names version {version}, which its version "
                        f"policy does not serve (versions: {', '.join(map(str, policy.versions))})"
                    )
        if "://" not in entry.base_path and not os.path.isdir(entry.base_path):
            raise InvalidArgumentError(
                f"base_path of model {entry.name} is not a readable folder: {entry.base_path}"
            )

    def _check_labels(self, name: str, labels: Mapping[str, int]) -> None:
        """Refuse labels of an existing model that would name a version that is not
        AVAILABLE (the manager's rule and message), before anything changes."""
        in_force = self._core.version_labels(name)
        allow = self._core.options.allow_version_labels_for_unavailable_models
        available = {
            s.id.version for s in self._core.version_states(name) if s.manager_state is ManagerState.AVAILABLE
        }
        for label, version in sorted(labels.items()):
            if in_force.get(label) == version or (allow and label not in in_force):
                continue
            if version not in available:
                raise FailedPreconditionError(
                    f"Request to assign label to version {version} of model {name}, "
                    "which is not currently available for inference"
                )

    @staticmethod
    def _check_route_targets(models: Sequence[ModelEntry], routes: Sequence[Route]) -> None:
        """Every label an arm or shadow sends requests to is defined by its model, and every
        version it names is one its model's ``specific`` policy serves (models that do not
        exist are the router's error to report). FailedPreconditionError names both."""
        entries = {m.name: m for m in models}
        for route in routes:
            for user, target in _targets(route):
                entry = entries.get(target.model_name)
                if entry is None:
                    continue
                if target.version_label and target.version_label not in entry.version_labels:
                    raise FailedPreconditionError(
                        f"route {route.name!r} ({user}) sends requests to label {target.version_label!r} of model "
                        f"{entry.name!r}, which the model does not define (labels: "
                        f"{', '.join(sorted(entry.version_labels)) or 'none'})"
                    )
                policy = entry.version_policy
                if target.version is not None and isinstance(policy, SpecificVersions) \
                        and target.version not in policy.versions:
                    raise FailedPreconditionError(
                        f"route {route.name!r} ({user}) sends requests to version {target.version} of model "
                        f"{entry.name!r}, which its version policy does not serve (versions: "
                        f"{', '.join(map(str, policy.versions))})"
                    )

    @staticmethod
    def _check_against_routes(models: list[ModelEntry], routes: list[Route]) -> None:
        names = {m.name for m in models}
        for route in routes:
            if route.name in names:
                raise AlreadyExistsError(
                    f"model {route.name!r} has the name of route {route.name!r}; "
                    "a route and a model may not share a name"
                )
        for route in routes:
            users = [(f"arm {arm.name!r}", arm.model_name) for arm in route.arms]
            if route.shadow is not None:
                users.append(("shadow", route.shadow.model_name))
            for user, model in users:
                if model not in names:
                    raise FailedPreconditionError(
                        f"cannot remove model {model!r}: route {route.name!r} ({user}) sends requests to it; "
                        "change or remove the route first"
                    )
        ControlPlane._check_route_targets(models, routes)

    def _check_routing_file(self) -> None:
        if self._persist and not self._routing_config_file:
            raise FailedPreconditionError(
                "routes cannot be changed through the admin API while --admin_persist_config is set "
                "without --routing_config_file: the change could not be saved; start the server "
                "with --routing_config_file"
            )

    # -- applying (caller holds _lock) ----------------------------------------------------------

    def _apply_models(self, models: list[ModelEntry]) -> None:
        """Put ``models`` in force, or restore the previous list and raise."""
        previous = self._core.models()
        if models == previous:
            return
        try:
            self._core.reload_config(models)
        except Exception:
            self._restore_models(previous)
            raise
        kept = {m.name for m in models}
        self._await_unloaded([m.name for m in previous if m.name not in kept])

    def _restore_models(self, previous: list[ModelEntry]) -> None:
        failed = self._core.models()
        if failed == previous:
            return
        try:
            self._core.reload_config(previous)
        except Exception as exc:  # noqa: BLE001 - the original error is what the caller sees
            _log.error("Could not restore the previous model list after a failed change: %s", exc)
            return
        kept = {m.name for m in previous}
        self._await_unloaded([m.name for m in failed if m.name not in kept])

    def _await_unloaded(self, names: list[str]) -> None:
        """Wait (bounded) until every version of each removed model is END."""
        requests = [
            ServableRequest.specific(name, state.id.version)
            for name in names
            for state in self._core.version_states(name)
            if state.manager_state is not ManagerState.END
        ]
        if not requests:
            return
        try:
            self._core.manager.monitor.wait_until(
                requests, ManagerState.END, timeout_s=self._core.options.load_wait_timeout_s
            )
        except DeadlineExceededError as exc:
            _log.warning("Removed model(s) %s are still unloading: %s", ", ".join(names), exc.message)

    def _persist_models(self, previous: list[ModelEntry]) -> None:
        """Write the model list if persisting; on failure undo the change and raise."""
        if not self._persist:
            return
        from pyserving.server.model_config_io import write_model_server_config

        models = self._core.models()
        try:
            write_model_server_config(self._model_config_file, models)
        except ServingError as exc:
            self._restore_models(previous)
            raise InternalError(f"{exc.message}; the change was undone") from exc
        self._file_models = models

    def _persist_routes(self, previous: list[Route]) -> None:
        if not self._persist:
            return
        from pyserving.server.routing_config import write_routing_config

        routes = self._router.routes()
        try:
            write_routing_config(self._routing_config_file, routes)
        except ServingError as exc:
            try:
                self._router.set_routes(previous)
            except ServingError as undo:
                _log.error("Could not restore the previous routes after a failed write: %s", undo)
            raise InternalError(f"{exc.message}; the change was undone") from exc
        self._file_routes = routes


def _targets(route: Route) -> list[tuple[str, Arm | Shadow]]:
    """(who, target) for each arm and the shadow of ``route``."""
    targets: list[tuple[str, Arm | Shadow]] = [(f"arm {arm.name!r}", arm) for arm in route.arms]
    if route.shadow is not None:
        targets.append(("shadow", route.shadow))
    return targets


def _names(items: Sequence[ModelEntry] | Sequence[Route]) -> str:
    return ", ".join(sorted(item.name for item in items)) or "none"
