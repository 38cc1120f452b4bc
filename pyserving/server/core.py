""":class:`ServerCore`: the model server's pipeline, built from a list of models.

    FileSystemSource ──StoragePath──▶ PlatformRouter ──Loader──▶ AspiredVersionsManager
     (one watched base        (per model: the platform's              (+ state monitor,
      path per model)          loader factory and options)             labels, resources)

The gRPC and REST servers sit on top through :class:`~pyserving.server.data_plane.DataPlane`,
which needs only :meth:`get_handle`, :meth:`version_labels` and :meth:`version_states`.

Life cycle: :meth:`start` installs the first model list and blocks until every model's
newest version, and every version a label names, is AVAILABLE or END (TF Serving's startup,
except that a model whose base path cannot be read fails at once, where TF Serving waits
forever); :meth:`reload_config` replaces the whole list (models left out are unloaded;
models it does not touch keep serving) and blocks only until the *new* models settle (same
base-path rule); :meth:`stop` unloads everything. ``start``,
``reload_config`` and ``stop`` are serialised by one lock; request methods never take it.

Observability: :attr:`lifecycle` (a :class:`LifecycleLog`) writes one line per version
state change and counts loads, failures, unloads and swaps; :attr:`readiness` (a
:class:`Readiness`) says whether every configured model has an AVAILABLE version, for
the health endpoints; every change of readiness is logged. Both are attached before
anything is published, so they see every event.

Memory budget: ``total_model_memory_limit_bytes`` becomes the manager's
:class:`ResourceTracker`. A version whose estimate does not fit in what is free ends in
END with RESOURCE_EXHAUSTED naming it, its estimate and what is free; the versions that
serve keep serving.

Version labels are applied after the models they name have settled, so a label may point
at a version that is loading at startup (TF Serving rejects that unless
``--allow_version_labels_for_unavailable_models``; see README "Differences").
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pyserving.loaders.loader import Loader
from pyserving.loaders.platform import get_platform
from pyserving.loaders.loader import Resources
from pyserving.manager import AspiredVersionsManager, AspiredVersionsManagerOptions, LifecycleLog, ResourceTracker
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    Code,
    DeadlineExceededError,
    NotFoundError,
    ServingError,
    UnavailableError,
    UnknownError,
)
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableRequest
from pyserving.servable.state import ManagerState, ServableState
from pyserving.sources.file_system_source import FileSystemSource, WatchedServable
from pyserving.sources.source import UnarySourceAdapter, connect
from pyserving.sources.storage_path import StoragePath
from pyserving.server.model_config import ModelEntry
from pyserving.server.readiness import Readiness, ReadinessStatus

__all__ = ["ServerCore", "ServerCoreOptions", "ModelEntry"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerCoreOptions:
    """Settings of the pipeline. Times in seconds unless the name says otherwise."""

    file_system_poll_wait_seconds: float = 1.0
    quiet_period_s: float = 0.2
    num_load_threads: int = 4
    num_unload_threads: int = 2
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    #: platform name -> the platform's options (e.g. {"tensorflow": {"saved_model_tags": ["serve"]}})
    platform_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    allow_version_labels_for_unavailable_models: bool = False
    #: total main memory models may use, in bytes (their estimates); None = no budget
    total_model_memory_limit_bytes: int | None = None
    #: how long start()/reload_config() wait for new models; None = no limit (TF Serving's)
    load_wait_timeout_s: float | None = None


class _PlatformRouter(UnarySourceAdapter[StoragePath, Loader]):
    """Turns each model's storage paths into loaders of that model's platform."""

    def __init__(self, platform_options: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        self._platform_options = platform_options
        self._platform_by_model: dict[str, str] = {}  # replaced whole, never mutated

    def set_models(self, models: Sequence[ModelEntry]) -> None:
        self._platform_by_model = {m.name: m.platform for m in models}

    def convert(self, data: ServableData[StoragePath]) -> Loader:
        platform_name = self._platform_by_model.get(data.id.name)
        if platform_name is None:
            raise NotFoundError(f"No platform found for model {data.id.name}")
        options = self._platform_options.get(platform_name, {})
        return get_platform(platform_name).create_loader(data.id, data.value, options)


class ServerCore:
    def __init__(self, options: ServerCoreOptions | None = None) -> None:
        self.options = options or ServerCoreOptions()
        o = self.options
        tracker = None
        if o.total_model_memory_limit_bytes is not None:
            tracker = ResourceTracker(Resources(ram_bytes=o.total_model_memory_limit_bytes))
        self.manager = AspiredVersionsManager(
            AspiredVersionsManagerOptions(
                num_load_threads=o.num_load_threads,
                num_unload_threads=o.num_unload_threads,
                max_num_load_retries=o.max_num_load_retries,
                load_retry_interval_s=o.load_retry_interval_s,
                resource_tracker=tracker,
            )
        )
        #: One readable line per state change, and load / unload / swap counters.
        self.lifecycle = LifecycleLog(self.manager.event_bus)
        #: Whether every configured model has an AVAILABLE version (after the manager: its
        #: monitor must record each event before readiness reads it).
        self.readiness = Readiness(self.manager.monitor, self.manager.event_bus)
        self.readiness.add_listener(_ReadinessLogger())
        self._router = _PlatformRouter(o.platform_options)
        self._source = FileSystemSource(
            [],
            poll_interval_s=o.file_system_poll_wait_seconds,
            quiet_period_s=o.quiet_period_s,
        )
        connect(self._source, self._router)
        connect(self._router, self.manager)
        self._lock = threading.Lock()  # serialises start / reload_config / stop; never held by requests
        self._models: list[ModelEntry] = []
        self._model_listeners: list[Callable[[list[ModelEntry]], None]] = []
        self._started = False
        self._stopped = False

    # -- request path (lock-free) ------------------------------------------------------

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]:
        return self.manager.get_handle(request)

    def version_labels(self, name: str) -> Mapping[str, int]:
        return self.manager.get_version_labels(name)

    def version_states(self, name: str) -> list[ServableState]:
        return self.manager.monitor.get_version_states(name)

    def models(self) -> list[ModelEntry]:
        return list(self._models)

    # -- configuration -----------------------------------------------------------------

    def start(self, models: Sequence[ModelEntry]) -> None:
        """Install the first model list and wait until each model settled.

        Raises ``UnknownError`` naming every version that ended in error (the caller, the
        server binary, exits as TF Serving does).
        """
        with self._lock:
            self.manager.start()
            self._install(models)
            self._source.start()
            self._started = True
            self._await_and_label(models, [m.name for m in models], initial=True)

    def reload_config(self, models: Sequence[ModelEntry]) -> None:
        """Replace the model list; block until the newly added models settled."""
        with self._lock:
            if not self._started:
                raise UnknownError("ServerCore.reload_config called before start()")
            if self._stopped:
                raise UnavailableError("Cannot reload the model config: the server is shutting down")
            old_names = {m.name for m in self._models}
            for model in models:
                if model.name not in old_names:
                    # Added again after a removal: its old END records would answer the
                    # wait below at once ("unloaded"); the new load is what counts.
                    self.manager.monitor.forget_unloaded(model.name)
            self._install(models)
            new_names = [m.name for m in models if m.name not in old_names]
            self._await_and_label(models, new_names, initial=False)

    def _install(self, models: Sequence[ModelEntry]) -> None:
        self._models = list(models)
        self._router.set_models(models)
        watched = []
        for model in models:
            platform = get_platform(model.platform)
            watched.append(
                WatchedServable(
                    name=model.name,
                    base_path=str(Path(model.base_path)),
                    version_policy=model.version_policy,
                    is_version_ready=platform.is_version_ready,
                )
            )
        self._source.update_config(watched)
        self.readiness.set_models(m.name for m in models)
        for listener in list(self._model_listeners):
            try:
                listener(list(models))
            except Exception:  # noqa: BLE001 - a listener must not break a reload
                _log.exception("A model-list listener failed")

    def add_models_listener(self, listener: Callable[[list[ModelEntry]], None]) -> None:
        """Call ``listener(models)`` each time a model list is installed (start, reload,
        admin change, restore), under the configuration lock; it must be quick and not call
        back into this core's configuration methods (the request loggers use it)."""
        self._model_listeners.append(listener)

    def _await_and_label(self, models: Sequence[ModelEntry], wait_for: Sequence[str], initial: bool) -> None:
        noun = "servable(s)" if initial else "model(s)"
        # The source scanned every new base path before this is called. One that cannot be
        # read would never produce a version, so fail now instead of waiting forever (TF
        # Serving waits, and its ports never open; README "Differences").
        source_errors = self._source.servable_errors()
        failures = [
            f"{{{{name: {name}}} due to error: {source_errors[name].message}}}"
            for name in wait_for
            if name in source_errors
        ]
        if failures:
            raise UnknownError(f"{len(failures)} {noun} did not become available: {{{', '.join(failures)}}}")
        pending = list(wait_for)
        limit = self.options.load_wait_timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        while pending:
            requests = [ServableRequest.latest(name) for name in pending]
            try:
                states = self.manager.monitor.wait_until(
                    requests, ManagerState.AVAILABLE,
                    timeout_s=None if deadline is None else max(0.0, deadline - time.monotonic()),
                )
            except DeadlineExceededError as exc:
                raise UnknownError(f"Models did not become available in time: {exc.message}") from exc
            pending = []
            for state in states.values():
                if state.manager_state is not ManagerState.END:
                    continue
                if self._superseded(state, deadline):
                    pending.append(state.id.name)  # a newer version took over while it loaded: wait for that
                    continue
                error = state.health.message if state.health else "unloaded"
                failures.append(f"{{{state.id} due to error: {error}}}")
        if failures:
            raise UnknownError(f"{len(failures)} {noun} did not become available: {{{', '.join(failures)}}}")
        self._await_labelled_versions(models, wait_for)
        for model in models:
            self.manager.set_version_labels(
                model.name,
                dict(model.version_labels),
                allow_unavailable=self.options.allow_version_labels_for_unavailable_models,
            )

    def _superseded(self, state: ServableState, deadline: float | None) -> bool:
        """Whether ``state`` (END) is a load cancelled because a newer version of the model
        became aspired meanwhile (a version completed on disk while the server started): then
        that newer version is the one to wait for. Polls briefly (bounded) for the newer
        version to be published, since the cancellation may be seen first."""
        if state.health is None or state.health.code is not Code.CANCELLED:
            return False
        until = time.monotonic() + 2.0 if deadline is None else min(deadline, time.monotonic() + 2.0)
        while True:
            if any(s.id.version > state.id.version for s in self.version_states(state.id.name)):
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(0.01)  # bounded poll of the monitor's published states

    def _await_labelled_versions(self, models: Sequence[ModelEntry], names: Sequence[str]) -> None:
        """Wait until every version a label of a just-added model names has settled.

        Waiting for Latest alone is not enough: with ``all`` or ``specific`` policies an older
        labelled version may still be loading when the newest is AVAILABLE. Only versions the
        manager already knows are awaited (one aspired list starts all of a model's versions
        at once); a label naming a version that does not exist fails in ``set_version_labels``.
        """
        wanted = set(names)
        requests = []
        for model in models:
            if model.name not in wanted or not model.version_labels:
                continue
            known = {state.id.version for state in self.version_states(model.name)}
            requests += [
                ServableRequest.specific(model.name, version)
                for version in sorted(set(model.version_labels.values()))
                if version in known
            ]
        if not requests:
            return
        try:
            self.manager.monitor.wait_until(requests, ManagerState.AVAILABLE, timeout_s=self.options.load_wait_timeout_s)
        except DeadlineExceededError as exc:
            raise UnknownError(f"Labelled versions did not become available in time: {exc.message}") from exc

    def stop(self) -> None:
        """Not ready from now on; stop watching, unload every version, join threads. Idempotent.

        Blocks until every request holding a handle has released it."""
        self.readiness.begin_shutdown()
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._source.stop()
            self.manager.stop()
        self.readiness.close()

    def source_errors(self) -> Mapping[str, ServingError]:
        """Per model, the last error reading its base path (empty when all are fine)."""
        return self._source.servable_errors()


class _ReadinessLogger:
    """Logs each change of readiness once the server was ready (startup is logged elsewhere).
    Called in order under the readiness notify lock, so ``_was_ready`` needs no lock."""

    def __init__(self) -> None:
        self._was_ready = False

    def __call__(self, status: ReadinessStatus) -> None:
        if status.ready:
            _log.info("The server is ready: every model has an AVAILABLE version")
        elif self._was_ready:
            level = logging.INFO if status.shutting_down else logging.WARNING
            _log.log(level, "The server is not ready: %s", status.reason)
        self._was_ready = status.ready
