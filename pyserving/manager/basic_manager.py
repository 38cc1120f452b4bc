""":class:`BasicManager`: loads, serves and unloads servable versions on explicit request.

The caller decides *what* happens (``manage``, ``load``, ``unload``, ``stop_managing``);
the manager does it safely and reports every step on its ``EventBus[ServableState]``.
:class:`~pyserving.manager.aspired_versions_manager.AspiredVersionsManager` builds on it.

Life of a version (published states in capitals)::

    manage(data)       -> START                    (an error item goes straight to END + error)
    load(id)           -> LOADING -> reserve resources -> Loader.load() with retries
                          -> into the serving map -> AVAILABLE
                          (any failure -> END with health = the error, naming the servable)
    unload(id)         -> UNLOADING -> out of the serving map -> wait until every handle is
                          released (quiesce) -> Loader.unload() -> END
    stop_managing(id)  -> forgets a NEW, ERROR or DISABLED version (a NEW one is reported END)

Contract:

* ``load`` / ``unload`` check the version's state synchronously and raise
  ``FailedPreconditionError`` ("Duplicate load request", "Servable not loaded, or unload
  already requested/ongoing") without calling ``done``. The work then runs on the load or
  unload worker pool (FIFO), or inline in the caller when the pool has 0 threads, and
  ``done(error_or_None)`` is called exactly once when it finished.
* Resources: a load reserves ``Loader.estimate_resources()`` in the ResourceTracker. If it
  does not fit while other loads/unloads are executing, it waits for one of them to end
  and tries again; when nothing else is executing it fails with ``ResourceExhaustedError``.
* A load whose retries were cancelled (:meth:`cancel_load_retries`, :meth:`stop`) ends with
  ``CancelledError`` "Loading of servable {id} cancelled"; if ``Loader.load()`` succeeded
  after the cancellation, the version is unloaded at once.
* :meth:`get_handle` is the request path: a lock-free read of the serving-map snapshot and
  one refcount increment. A handle keeps its version loaded until released.
* No loader code and no event-bus subscriber runs while a lock of this class is held.
  Locks: ``_lock`` guards ``_harnesses`` and ``_stopped``; ``_map_lock`` serializes
  replacing ``_serving_map`` (readers never take it); ``_executions`` guards
  ``_num_executing``. Order: ``_lock`` before a harness's lock; the others are never nested.
* Logging: failures travel on the event bus (END + health) and are logged at DEBUG here;
  the user-facing line per state change comes from
  :class:`~pyserving.manager.lifecycle_log.LifecycleLog` (the server core attaches one;
  library users call ``LifecycleLog(manager.event_bus)``).
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pyserving.loaders.loader import Loader, Resources
from pyserving.loaders.retry import RetryPolicy
from pyserving.manager.harness import HarnessState, LoaderHarness
from pyserving.manager.resource_tracker import ResourceTracker
from pyserving.manager.serving_map import ServingMap
from pyserving.servable.data import ServableData
from pyserving.servable.errors import CancelledError, FailedPreconditionError, InvalidArgumentError, NotFoundError
from pyserving.servable.errors import ResourceExhaustedError, ServingError, as_serving_error
from pyserving.servable.event_bus import EventBus
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState, ServableState

__all__ = ["BasicManager", "BasicManagerOptions", "DoneCallback"]

_log = logging.getLogger(__name__)

#: Called once when a load or unload finished: ``None`` on success, else the error.
DoneCallback = Callable[[ServingError | None], None]


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class BasicManagerOptions:
    """``num_load_threads``: load workers (default 4; 0 = loads run inline in the caller).
    ``num_unload_threads``: unload workers (default 2; 0 = inline).
    ``max_num_load_retries``: attempts after the first failed ``load()`` (default 5).
    ``load_retry_interval_s``: seconds between attempts (default 60.0; <= 0 = no wait).
    ``resource_tracker``: the budget loads reserve against (default ``None`` = no budget).
    ``event_bus``: where states are published (default ``None`` = a new bus)."""

    num_load_threads: int = 4
    num_unload_threads: int = 2
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    resource_tracker: ResourceTracker | None = None
    event_bus: EventBus[ServableState] | None = None

    def __post_init__(self) -> None:
        _check_count("num_load_threads", self.num_load_threads)
        _check_count("num_unload_threads", self.num_unload_threads)
        _check_count("max_num_load_retries", self.max_num_load_retries)
        if isinstance(self.load_retry_interval_s, bool) or not isinstance(self.load_retry_interval_s, (int, float)):
            raise InvalidArgumentError(f"load_retry_interval_s must be a number, got {self.load_retry_interval_s!r}")


class _WorkerPool:
    """Runs jobs on ``num_threads`` worker threads, FIFO, or inline when ``num_threads`` is 0."""

    def __init__(self, num_threads: int, name: str) -> None:
        self._executor = (
            ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix=name) if num_threads > 0 else None
        )

    def submit(self, job: Callable[[], None]) -> None:
        if self._executor is not None:
            try:
                self._executor.submit(job)
                return
            except RuntimeError:  # shut down: run inline so the job still gets its answer
                pass
        job()

    def shutdown(self) -> None:
        """Wait for every submitted job, then join the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


class BasicManager:
    def __init__(self, options: BasicManagerOptions | None = None) -> None:
        options = options or BasicManagerOptions()
        self._options = options
        self._event_bus: EventBus[ServableState] = options.event_bus if options.event_bus is not None else EventBus()
        self._tracker = options.resource_tracker if options.resource_tracker is not None else ResourceTracker(None)
        self._retry = RetryPolicy(options.max_num_load_retries, float(options.load_retry_interval_s))
        self._lock = threading.Lock()  # guards _harnesses and _stopped
        self._harnesses: dict[ServableId, LoaderHarness] = {}
        self._stopped = False
        self._map_lock = threading.Lock()  # serializes replacing _serving_map; readers take no lock
        self._serving_map: ServingMap[LoaderHarness] = ServingMap()
        self._executions = threading.Condition(threading.Lock())  # guards _num_executing
        self._num_executing = 0  # loads past their reservation, plus unloads, still running
        self._load_pool = _WorkerPool(options.num_load_threads, "pyserving-load")
        self._unload_pool = _WorkerPool(options.num_unload_threads, "pyserving-unload")

    @property
    def event_bus(self) -> EventBus[ServableState]:
        return self._event_bus

    @property
    def resource_tracker(self) -> ResourceTracker:
        return self._tracker

    # -- request path ------------------------------------------------------------------

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]:
        """A handle on the version that answers ``request``; ``NotFoundError`` if none is available."""
        while True:
            snapshot = self._serving_map
            handle = snapshot.lookup(request).try_acquire()
            if handle is not None:
                return handle
            # The version began quiescing after we read the snapshot; it was removed from the
            # map before that, so the current snapshot no longer returns it.
            if self._serving_map is snapshot:
                raise NotFoundError(f"Servable not found for request: {request}")

    def list_available_ids(self) -> list[ServableId]:
        """Every version that can be handed out now, sorted."""
        return self._serving_map.ids()

    def get_available_handles(self) -> dict[ServableId, ServableHandle[Any]]:
        """A handle on every available version; the caller releases each."""
        handles: dict[ServableId, ServableHandle[Any]] = {}
        for harness in self._serving_map.entries():
            handle = harness.try_acquire()
            if handle is not None:
                handles[harness.id] = handle
        return handles

    def handle_counts(self) -> dict[ServableId, int]:
        """Handles held now, by available version (the requests each version is answering;
        versions with none are left out). Lock-free, for metrics."""
        counts = {}
        for harness in self._serving_map.entries():
            count = harness.refcount
            if count:
                counts[harness.id] = count
        return counts

    # -- managing ----------------------------------------------------------------------

    def manage(self, data: ServableData[Loader]) -> None:
        """Start managing ``data.id`` (START), or record an error item (END with its error)."""
        if data.ok and not isinstance(data.value, Loader):
            raise InvalidArgumentError(
                f"ServableData for {data.id} must hold a Loader, got {type(data.value).__name__}"
            )
        harness = LoaderHarness(data.id, data.value if data.ok else None, error=data.error)
        with self._lock:
            if self._stopped:
                raise FailedPreconditionError(f"Cannot manage servable {data.id}: the manager is stopped")
            if data.id in self._harnesses:
                raise FailedPreconditionError(f"This servable is already being managed: {data.id}")
            self._harnesses[data.id] = harness
        if data.ok:
            self._publish(ServableState(data.id, ManagerState.START))
        else:
            _log.debug("Servable %s cannot be loaded: %s", data.id, data.error)  # LifecycleLog words it
            self._publish(ServableState(data.id, ManagerState.END, data.error))

    def stop_managing(self, servable_id: ServableId) -> None:
        """Forget a version that is NEW, ERROR or DISABLED; a NEW one is reported END."""
        with self._lock:
            harness = self._get_locked(servable_id)
            state = harness.state
            if state not in (HarnessState.NEW, HarnessState.ERROR, HarnessState.DISABLED):
                raise FailedPreconditionError(
                    f"Cannot stop managing servable {servable_id}: it is {state.name}; "
                    "only NEW, ERROR or DISABLED versions can be forgotten"
                )
            del self._harnesses[servable_id]
        if state is HarnessState.NEW:
            self._publish(ServableState(servable_id, ManagerState.END))

    def managed_harnesses(self, name: str | None = None) -> list[LoaderHarness]:
        """The managed versions (of ``name``, or all), sorted by id. For this package's managers."""
        with self._lock:
            harnesses = [h for h in self._harnesses.values() if name is None or h.id.name == name]
        return sorted(harnesses, key=lambda h: h.id)

    def cancel_load_retries(self, servable_id: ServableId) -> None:
        """Stop the load of ``servable_id`` at its next retry (or resource wait). No-op if unknown."""
        with self._lock:
            harness = self._harnesses.get(servable_id)
        if harness is not None:
            harness.cancel_load()
            with self._executions:
                self._executions.notify_all()

    def _get_locked(self, servable_id: ServableId) -> LoaderHarness:
        harness = self._harnesses.get(servable_id)
        if harness is None:
            raise NotFoundError(f"Servable {servable_id} is not being managed")
        return harness

    # -- loading -----------------------------------------------------------------------

    def load(self, servable_id: ServableId, done: DoneCallback | None = None) -> None:
        """Load a NEW version on the load pool; ``done`` is called when it is AVAILABLE or END."""
        self._prepare_load(servable_id, done)()

    def _prepare_load(self, servable_id: ServableId, done: DoneCallback | None) -> Callable[[], None]:
        """The synchronous half of :meth:`load` (state check); returns what submits the work."""
        with self._lock:
            if self._stopped:
                raise FailedPreconditionError(f"Cannot load servable {servable_id}: the manager is stopped")
            harness = self._get_locked(servable_id)
            harness.request_load()
        return functools.partial(self._load_pool.submit, functools.partial(self._execute_load, harness, done))

    def _execute_load(self, harness: LoaderHarness, done: DoneCallback | None) -> None:
        sid = harness.id
        error: ServingError | None = None
        if harness.load_cancelled:
            error = CancelledError(f"Loading of servable {sid} cancelled")
        else:
            self._publish(ServableState(sid, ManagerState.LOADING))
            try:
                self._approve_load(harness)
            except Exception as exc:  # noqa: BLE001 - becomes the version's END health
                error = as_serving_error(exc)
            else:
                try:
                    harness.load(self._retry)
                    with self._map_lock:
                        self._serving_map = self._serving_map.with_entry(harness)
                    harness.mark_ready()
                except Exception as exc:  # noqa: BLE001 - becomes the version's END health
                    error = as_serving_error(exc)
                    self._tracker.release(sid)
                finally:
                    self._end_execution()
        if error is None:
            self._publish(ServableState(sid, ManagerState.AVAILABLE))
        else:
            harness.fail(error)
            _log.debug("%s", error.message)  # the END event carries it; LifecycleLog words it
            self._publish(ServableState(sid, ManagerState.END, error))
        _call_done(done, error, sid)

    def _approve_load(self, harness: LoaderHarness) -> None:
        """Reserve the estimate (waiting for executing loads/unloads while it does not fit)."""
        sid = harness.id
        assert harness.loader is not None
        try:
            estimate = harness.loader.estimate_resources()
        except Exception as exc:
            raise as_serving_error(exc, f"Estimating the resources of servable {sid} failed: ") from exc
        if not isinstance(estimate, Resources):
            raise InvalidArgumentError(
                f"estimate_resources() of servable {sid} must return Resources, got {estimate!r}"
            )
        with self._executions:
            while True:
                if harness.load_cancelled:
                    raise CancelledError(f"Loading of servable {sid} cancelled")
                try:
                    self._tracker.reserve(sid, estimate)
                    break
                except ResourceExhaustedError:
                    if self._num_executing == 0:
                        raise
                    self._executions.wait()
            self._num_executing += 1
        harness.approve_load()

    def _end_execution(self) -> None:
        with self._executions:
            self._num_executing -= 1
            self._executions.notify_all()

    # -- unloading ---------------------------------------------------------------------

    def unload(self, servable_id: ServableId, done: DoneCallback | None = None) -> None:
        """Unload a READY version on the unload pool; ``done`` is called once it is END."""
        self._prepare_unload(servable_id, done)()

    def _prepare_unload(self, servable_id: ServableId, done: DoneCallback | None) -> Callable[[], None]:
        """The synchronous half of :meth:`unload` (state check); returns what submits the work."""
        with self._lock:
            harness = self._get_locked(servable_id)
            harness.request_unload()
        return functools.partial(self._unload_pool.submit, functools.partial(self._execute_unload, harness, done))

    def _execute_unload(self, harness: LoaderHarness, done: DoneCallback | None) -> None:
        sid = harness.id
        with self._executions:
            self._num_executing += 1
        error: ServingError | None = None
        try:
            self._publish(ServableState(sid, ManagerState.UNLOADING))
            with self._map_lock:
                self._serving_map = self._serving_map.without(sid)
            harness.quiesce()
            harness.unload()
        except Exception as exc:  # noqa: BLE001 - becomes the version's END health
            error = as_serving_error(exc)
            harness.fail(error)
            _log.debug("%s", error.message)  # the END event carries it; LifecycleLog words it
        finally:
            self._tracker.release(sid)
            self._end_execution()
        self._publish(ServableState(sid, ManagerState.END, error))
        _call_done(done, error, sid)

    # -- labels ------------------------------------------------------------------------

    def set_version_labels(self, name: str, labels: Mapping[str, int], allow_unavailable: bool = False) -> None:
        """Make ``labels`` ({label: version}) the complete label map of ``name``.

        Each label must point to an AVAILABLE version, else ``FailedPreconditionError``
        and nothing changes. With ``allow_unavailable`` the check is skipped for labels
        that are new or keep their version; moving an existing label still needs an
        available target.
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"servable name must be a non-empty string, got {name!r}")
        for label, version in labels.items():
            if not isinstance(label, str) or not label:
                raise InvalidArgumentError(f"version label of model {name} must be a non-empty string, got {label!r}")
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise InvalidArgumentError(f"label {label} of model {name} must name a version >= 0, got {version!r}")
        with self._map_lock:
            current = self._serving_map
            old = current.labels(name)
            for label, version in sorted(labels.items()):
                if allow_unavailable and old.get(label, version) == version:
                    continue
                if ServableId(name, version) not in current:
                    raise FailedPreconditionError(
                        f"Request to assign label to version {version} of model {name}, "
                        "which is not currently available for inference"
                    )
            self._serving_map = current.with_labels(name, labels)

    def get_version_labels(self, name: str) -> dict[str, int]:
        """The label map of ``name`` (empty when it has none)."""
        return dict(self._serving_map.labels(name))

    # -- shutdown ----------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel load retries, wait for running loads, unload every loaded version, join workers.

        Blocks until the unloads finished, i.e. until every handle was released.
        Idempotent; afterwards ``manage`` and ``load`` raise ``FailedPreconditionError``.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            harnesses = list(self._harnesses.values())
        for harness in harnesses:
            harness.cancel_load()
        with self._executions:
            self._executions.notify_all()
        self._load_pool.shutdown()
        for harness in self.managed_harnesses():
            if harness.state is HarnessState.READY:
                try:
                    self._prepare_unload(harness.id, None)()
                except FailedPreconditionError:
                    continue  # an unload is already under way
        self._unload_pool.shutdown()

    def _publish(self, state: ServableState) -> None:
        self._event_bus.publish(state)


def _call_done(done: DoneCallback | None, error: ServingError | None, servable_id: ServableId) -> None:
    if done is None:
        return
    try:
        done(error)
    except Exception:  # noqa: BLE001 - a caller's callback must not break the worker
        _log.exception("The completion callback for servable %s failed", servable_id)
