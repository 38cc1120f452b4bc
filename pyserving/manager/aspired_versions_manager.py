""":class:`AspiredVersionsManager`: reconciles the loaded versions toward what sources aspire to.

It is the :class:`~pyserving.sources.source.Target` of a source (or adapter) of loaders.
Each callback call carries the complete aspired list of one servable stream; the manager
only enqueues it (the newest list per name wins) and wakes its loop. Each :meth:`step`:

1. forgets versions that are no longer aspired and are NEW, DISABLED or in ERROR;
2. applies the pending lists: a new version is managed (START) as aspired; a managed
   version missing from its list becomes un-aspired and its load retries are cancelled;
   a list that re-aspires a version still present as un-aspired is postponed until that
   version has been forgotten (its load or unload has to finish first) — except a
   version that is still READY and whose unload has not started: it simply becomes
   aspired again and keeps serving (TF Serving would postpone here too, which can stall
   the stream forever when the policy keeps that version as the only one serving);
   an error item for a new version is recorded as END with its error, without touching
   other versions;
3. forgets again, then asks the policy for the next action of every stream on which no
   load or unload is under way, and starts those actions (unloads first). Different
   streams load and unload in parallel on the worker pools; one stream does one action
   at a time.

Guarantees, with example call sequences (``cb`` = the aspired-versions callback):

* **Omission means unload.** ``cb("m", [v1])`` ... v1 AVAILABLE; ``cb("m", [])`` -> v1 is
  UNLOADING, then END. A version absent from the newest list is never loaded again
  under that loader.
* **No spontaneous unloading.** A loaded version that stays in every list is never
  unloaded: ``cb("m", [v1])``, ``cb("m", [v1, v2])`` -> v1 stays AVAILABLE while v2 loads
  (whatever the policy), so sources may add versions incrementally.
* **A failed new version leaves the old one serving** (AvailabilityPreservingPolicy):
  ``cb("m", [v1])`` ... v1 AVAILABLE; ``cb("m", [v2])`` and v2 fails every retry -> v2 is
  END with the error, ``Latest(m)`` keeps resolving to v1.
* **A failed version is retried when its content changes.** Unlike TF Serving, if a list
  names a version that ended in error and the new item's ``Loader.revision`` is not
  ``None`` and differs from the failed one, the failure is forgotten and the new loader
  starts afresh (START). Same or unknown revision: it stays failed while aspired.
* A version whose retries are still running when it is un-aspired ends with
  ``CancelledError`` quickly (the retry wait is interrupted).

Threading: the callback is thread-safe and never blocks on loads. ``_pending_lock``
guards ``_pending``; ``_step_lock`` serializes steps and guards every harness's
``is_aspired``; ``_lifecycle_lock`` guards ``_thread`` / ``_started`` / ``_stopped``.
Loader code never runs under any of them; event-bus subscribers (the monitor) may run
while ``_step_lock`` is held, so they must not call :meth:`step`. With
``run_background_thread=False`` nothing happens until the owner calls :meth:`step`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pyserving.loaders.loader import Loader
from pyserving.manager.basic_manager import BasicManager, BasicManagerOptions
from pyserving.manager.harness import IN_FLIGHT_STATES, HarnessState, LoaderHarness
from pyserving.manager.policy import (
    ActionKind,
    AspiredVersionInfo,
    AspiredVersionPolicy,
    AvailabilityPreservingPolicy,
)
from pyserving.manager.resource_tracker import ResourceTracker
from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.data import ServableData
from pyserving.servable.errors import InvalidArgumentError, ServingError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ServableState
from pyserving.sources.source import AspiredVersionsCallback, Target

__all__ = ["AspiredVersionsManager", "AspiredVersionsManagerOptions"]

_log = logging.getLogger(__name__)

_FORGETTABLE = (HarnessState.NEW, HarnessState.DISABLED, HarnessState.ERROR)


@dataclass(frozen=True)
class AspiredVersionsManagerOptions:
    """``policy``: chooses loads/unloads per stream (default AvailabilityPreservingPolicy()).
    ``num_load_threads``: load workers (default 4; 0 = inline in :meth:`step`).
    ``num_unload_threads``: unload workers (default 2; 0 = inline in :meth:`step`).
    ``max_num_load_retries``: attempts after a failed load (default 5).
    ``load_retry_interval_s``: seconds between load attempts (default 60.0).
    ``resource_tracker``: the resource budget (default ``None`` = unlimited).
    ``event_bus``: where states are published (default ``None`` = a new bus).
    ``manage_state_interval_s``: seconds between background steps (default 0.1); the loop
    also wakes at once on a new aspired list and on a finished load or unload.
    ``run_background_thread``: run steps on a thread after :meth:`start` (default True;
    False = the owner calls :meth:`step`, as tests do)."""

    policy: AspiredVersionPolicy = field(default_factory=AvailabilityPreservingPolicy)
    num_load_threads: int = 4
    num_unload_threads: int = 2
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    resource_tracker: ResourceTracker | None = None
    event_bus: EventBus[ServableState] | None = None
    manage_state_interval_s: float = 0.1
    run_background_thread: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.policy, AspiredVersionPolicy):
            raise InvalidArgumentError(f"policy must be an AspiredVersionPolicy, got {self.policy!r}")
        interval = self.manage_state_interval_s
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise InvalidArgumentError(f"manage_state_interval_s must be a number > 0, got {interval!r}")


class AspiredVersionsManager(Target[Loader]):
    def __init__(self, options: AspiredVersionsManagerOptions | None = None) -> None:
        options = options or AspiredVersionsManagerOptions()
        self._options = options
        self._policy = options.policy
        self._event_bus: EventBus[ServableState] = options.event_bus if options.event_bus is not None else EventBus()
        #: The latest published state of every version (subscribed before anything is published).
        self.monitor = ServableStateMonitor(self._event_bus)
        self._basic = BasicManager(
            BasicManagerOptions(
                num_load_threads=options.num_load_threads,
                num_unload_threads=options.num_unload_threads,
                max_num_load_retries=options.max_num_load_retries,
                load_retry_interval_s=options.load_retry_interval_s,
                resource_tracker=options.resource_tracker,
                event_bus=self._event_bus,
            )
        )
        self._pending_lock = threading.Lock()  # guards _pending
        self._pending: dict[str, list[_PendingItem]] = {}
        self._step_lock = threading.Lock()  # serializes step(); guards harnesses' is_aspired
        self._lifecycle_lock = threading.Lock()  # guards _thread, _started, _stopped
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by new lists and finished actions

    # -- Target ------------------------------------------------------------------------

    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[Loader]:
        return self._on_aspired_versions

    def _on_aspired_versions(self, servable_name: str, versions: Sequence[ServableData[Loader]]) -> None:
        if self._stopping.is_set():
            _log.debug("Ignoring aspired versions of %s: the manager is stopped", servable_name)
            return
        items: dict[ServableId, _PendingItem] = {}
        for data in versions:
            if data.id.name != servable_name:
                _log.error(
                    "Dropping aspired version %s: it was sent in the list of servable %s; "
                    "a source must send each servable's versions under its own name",
                    data.id, servable_name,
                )
                continue
            if data.ok and not isinstance(data.value, Loader):
                data = ServableData.failed(
                    data.id,
                    InvalidArgumentError(
                        f"ServableData for {data.id} must hold a Loader, got {type(data.value).__name__}"
                    ),
                )
            revision = _read_revision(data.value) if data.ok else None  # loader code: outside locks
            items.setdefault(data.id, _PendingItem(data, revision))
        with self._pending_lock:
            self._pending[servable_name] = list(items.values())
        self._wake.set()

    # -- request path ------------------------------------------------------------------

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]:
        """A handle on the version answering ``request``; ``NotFoundError`` if none is available."""
        return self._basic.get_handle(request)

    def list_available_ids(self) -> list[ServableId]:
        return self._basic.list_available_ids()

    def get_available_handles(self) -> dict[ServableId, ServableHandle[Any]]:
        return self._basic.get_available_handles()

    def handle_counts(self) -> dict[ServableId, int]:
        """See :meth:`BasicManager.handle_counts`."""
        return self._basic.handle_counts()

    @property
    def event_bus(self) -> EventBus[ServableState]:
        return self._event_bus

    @property
    def resource_tracker(self) -> ResourceTracker:
        return self._basic.resource_tracker

    def set_version_labels(self, name: str, labels: Mapping[str, int], allow_unavailable: bool = False) -> None:
        """See :meth:`BasicManager.set_version_labels`."""
        self._basic.set_version_labels(name, labels, allow_unavailable)

    def get_version_labels(self, name: str) -> dict[str, int]:
        return self._basic.get_version_labels(name)

    # -- reconciliation ----------------------------------------------------------------

    def step(self) -> bool:
        """Run one reconciliation round (see the module docstring); True if it changed anything.

        Loads and unloads it starts run on the worker pools, or inline before it returns
        when the pool has 0 threads.
        """
        jobs: list[Callable[[], None]] = []
        with self._step_lock:
            if self._stopped:
                return False
            changed = self._forget_finished()
            changed |= self._apply_pending()
            changed |= self._forget_finished()
            changed |= self._start_actions(jobs)
        for job in jobs:
            job()
        return changed

    def _forget_finished(self) -> bool:
        changed = False
        for harness in self._basic.managed_harnesses():
            if not harness.is_aspired and harness.state in _FORGETTABLE:
                try:
                    self._basic.stop_managing(harness.id)
                except ServingError as err:  # changed state meanwhile: try again next step
                    _log.debug("Not forgetting %s yet: %s", harness.id, err)
                    continue
                changed = True
        return changed

    def _apply_pending(self) -> bool:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        changed = False
        postponed: dict[str, list[_PendingItem]] = {}
        for name, items in pending.items():
            applied = self._apply_list(name, items)
            if applied is None:
                postponed[name] = items
            else:
                changed |= applied
        if postponed:
            with self._pending_lock:
                for name, items in postponed.items():
                    self._pending.setdefault(name, items)  # a list that arrived meanwhile wins
        return changed

    def _apply_list(self, name: str, items: list[_PendingItem]) -> bool | None:
        """Apply one stream's list; None = postponed (it re-aspires an un-aspired version)."""
        current = {h.id: h for h in self._basic.managed_harnesses(name)}
        wanted = {item.data.id: item for item in items}
        busy = [
            sid for sid in wanted
            if sid in current and not current[sid].is_aspired and current[sid].state is not HarnessState.READY
        ]
        if busy:
            _log.debug("Postponing the new version list of %s until %s is forgotten", name, busy[0])
            return None
        superseded = [
            sid for sid, item in wanted.items()
            if sid in current and current[sid].is_aspired and _content_changed_while_loading(current[sid], item)
        ]
        if superseded:
            # The files of a version changed while its load (or a retry wait) was under way:
            # stop that load now and, once it has ended, load the new content from scratch
            # instead of retrying the old one (which could wait minutes between attempts).
            for sid in superseded:
                _log.info("Servable %s changed on disk while loading; restarting its load", sid)
                self._basic.cancel_load_retries(sid)
            return None
        changed = False
        for sid, harness in current.items():
            if sid not in wanted and harness.is_aspired:
                harness.is_aspired = False
                self._basic.cancel_load_retries(sid)
                changed = True
        for sid, item in wanted.items():
            harness = current.get(sid)
            if harness is not None and not harness.is_aspired:  # READY, its unload not started
                harness.is_aspired = True
                changed = True
                continue
            if harness is not None and _should_retry(harness, item):
                _log.info("Servable %s changed on disk since it failed; loading it again", sid)
                self._basic.stop_managing(sid)
                harness = None
            if harness is None:
                self._basic.manage(item.data)
                changed = True
        return changed

    def _start_actions(self, jobs: list[Callable[[], None]]) -> bool:
        streams: dict[str, list[tuple[LoaderHarness, HarnessState]]] = defaultdict(list)
        for harness in self._basic.managed_harnesses():
            streams[harness.id.name].append((harness, harness.state))
        actions = []
        for name, versions in streams.items():
            if any(state in IN_FLIGHT_STATES for _, state in versions):
                continue
            infos = [AspiredVersionInfo(h.id, state, h.is_aspired) for h, state in versions]
            try:
                action = self._policy.next_action(infos)
            except Exception:  # noqa: BLE001 - a broken policy must not stop other streams
                _log.exception("The version policy failed for servable %s", name)
                continue
            if action is not None:
                actions.append(action)
        actions.sort(key=lambda a: (a.kind is not ActionKind.UNLOAD, a.id))
        for action in actions:
            try:
                if action.kind is ActionKind.UNLOAD:
                    jobs.append(self._basic._prepare_unload(action.id, self._on_action_done))
                else:
                    jobs.append(self._basic._prepare_load(action.id, self._on_action_done))
            except ServingError as err:
                _log.error("Cannot %s servable %s as the policy asked: %s", action.kind.value, action.id, err)
        return bool(jobs)

    def _on_action_done(self, error: ServingError | None) -> None:
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the background loop (if ``run_background_thread``). Idempotent."""
        with self._lifecycle_lock:
            if self._started or self._stopped:
                return
            self._started = True
            if self._options.run_background_thread:
                self._thread = threading.Thread(target=self._run, name="pyserving-aspired-versions", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - keep managing; the next step retries
                _log.exception("A reconciliation step of the aspired-versions manager failed")
            self._wake.wait(self._options.manage_state_interval_s)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the loop, cancel load retries, unload every version and join all threads.

        Blocks until every handle was released. Idempotent; later aspired lists are ignored.
        """
        with self._lifecycle_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._step_lock:
            with self._lifecycle_lock:
                self._stopped = True
            for harness in self._basic.managed_harnesses():
                harness.is_aspired = False
        with self._pending_lock:
            self._pending.clear()
        self._basic.stop()

    def __enter__(self) -> AspiredVersionsManager:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class _PendingItem:
    data: ServableData[Loader]
    revision: str | None


def _should_retry(harness: LoaderHarness, item: _PendingItem) -> bool:
    """A failed version comes back with different, known content."""
    return (
        harness.state is HarnessState.ERROR
        and item.data.ok
        and item.revision is not None
        and item.revision != harness.revision
    )


_LOADING_STATES = (HarnessState.LOAD_REQUESTED, HarnessState.LOAD_APPROVED, HarnessState.LOADING)


def _content_changed_while_loading(harness: LoaderHarness, item: _PendingItem) -> bool:
    """A version being loaded (or waiting to retry) arrives again with different, known content."""
    return (
        harness.state in _LOADING_STATES
        and item.data.ok
        and item.revision is not None
        and harness.revision is not None
        and item.revision != harness.revision
    )


def _read_revision(loader: Loader) -> str | None:
    try:
        return loader.revision
    except Exception:  # noqa: BLE001 - an unreadable token means "unknown"
        return None
