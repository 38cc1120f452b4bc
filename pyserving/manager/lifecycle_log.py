""":class:`LifecycleLog`: one readable log line per version state change, plus counters.

Attach it to the ``EventBus[ServableState]`` of any manager (``manager.event_bus``);
:class:`~pyserving.server.core.ServerCore` attaches one as ``core.lifecycle``::

    manager = AspiredVersionsManager()
    lifecycle = LifecycleLog(manager.event_bus)   # before manager.start(): sees every event
    ...
    lifecycle.statistics().models["m"].loads       # successful loads of model m
    lifecycle.close()                              # stop listening (counters stay readable)

Lines (logger ``pyserving.manager.lifecycle_log``; failures at WARNING, the rest at INFO;
each record carries the extras ``model``, ``version`` and ``event``, a machine name:
``version_found``, ``version_loading``, ``version_available``, ``version_unloading``,
``version_unloaded``, ``version_load_failed``, ``version_load_cancelled``,
``version_unload_failed``, ``version_not_loaded``; JSON logs show them as fields)::

    {name: m version: 7} START: found, waiting to load
    {name: m version: 7} LOADING
    {name: m version: 7} AVAILABLE after 0.42 s load
    {name: m version: 6} UNLOADING
    {name: m version: 6} END after 0.01 s unload
    {name: m version: 8} END: load failed: <the loader's message>
    {name: m version: 9} END: load cancelled (no longer wanted)
    {name: m version: 5} END: unload failed: <message>

Counters, per model name (:class:`ModelLifecycleStatistics`): successful ``loads``,
``load_failures`` (END with an error from LOADING, or an error item from the source),
``load_cancellations`` (CANCELLED: the version stopped being wanted while loading),
``unloads`` and ``unload_failures``, ``swaps`` (a version became AVAILABLE while another
version of the same model was already AVAILABLE: the served version moved), and load /
unload durations (seconds on ``clock``, from LOADING to AVAILABLE and from UNLOADING to
END: the last one, the sum and count, and the ``max_recent`` most recent).

Threading: events arrive on the publishers' threads (the manager's load and unload
workers), possibly several at once. ``_lock`` guards every counter and the per-version
bookkeeping and is held only for arithmetic; log lines are written and listeners run
after it is released. Following the :class:`EventBus` contract the callback is quick and
never calls back into the manager. :meth:`statistics` returns a frozen snapshot and may
be called from any thread.

Listeners (:meth:`add_listener`) receive a :class:`LifecycleEvent` per state change, on
the publisher's thread, after the counters were updated. They must be quick and must not
call into the manager. An exception in one is logged and does not reach the others.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from pyserving.servable.errors import Code, InvalidArgumentError, ServingError
from pyserving.servable.event_bus import EventBus, Subscription
from pyserving.servable.ids import ServableId
from pyserving.servable.state import ManagerState, ServableState

__all__ = ["LifecycleLog", "LifecycleEvent", "LifecycleStatistics", "ModelLifecycleStatistics"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One state change, as a listener sees it.

    ``previous``: the version's state before (``None`` when this is its first event).
    ``duration_s``: for AVAILABLE and for END after LOADING, the load time; for END after
    UNLOADING, the unload time; else ``None``. ``swap``: AVAILABLE while another version of
    the model was AVAILABLE. ``message``: the log line written for it.
    """

    state: ServableState
    previous: ManagerState | None
    duration_s: float | None
    swap: bool
    message: str


@dataclass(frozen=True, slots=True)
class ModelLifecycleStatistics:
    """Counters of one model name since the log was attached. Durations in seconds."""

    loads: int = 0
    load_failures: int = 0
    load_cancellations: int = 0
    unloads: int = 0
    unload_failures: int = 0
    swaps: int = 0
    last_load_s: float | None = None
    load_s_sum: float = 0.0
    #: loads timed (all of ``loads`` unless the log was attached while one was LOADING)
    load_s_count: int = 0
    recent_load_s: tuple[float, ...] = ()
    last_unload_s: float | None = None
    unload_s_sum: float = 0.0
    unload_s_count: int = 0
    recent_unload_s: tuple[float, ...] = ()
    #: versions whose latest state is AVAILABLE, ascending
    available_versions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LifecycleStatistics:
    """A snapshot: per model name (sorted), its counters; ``events``: state changes seen."""

    models: Mapping[str, ModelLifecycleStatistics] = field(default_factory=dict)
    events: int = 0


class _ModelCounters:
    """Mutable counters of one model; guarded by the owning LifecycleLog's ``_lock``."""

    __slots__ = (
        "loads", "load_failures", "load_cancellations", "unloads", "unload_failures", "swaps",
        "load_s_sum", "unload_s_sum", "load_s_count", "unload_s_count", "last_load_s", "last_unload_s",
        "recent_load_s", "recent_unload_s", "available",
    )

    def __init__(self, max_recent: int) -> None:
        self.loads = self.load_failures = self.load_cancellations = 0
        self.unloads = self.unload_failures = self.swaps = 0
        self.load_s_sum = self.unload_s_sum = 0.0
        self.load_s_count = self.unload_s_count = 0
        self.last_load_s: float | None = None
        self.last_unload_s: float | None = None
        self.recent_load_s: collections.deque[float] = collections.deque(maxlen=max_recent)
        self.recent_unload_s: collections.deque[float] = collections.deque(maxlen=max_recent)
        self.available: set[int] = set()

    def snapshot(self) -> ModelLifecycleStatistics:
        return ModelLifecycleStatistics(
            loads=self.loads,
            load_failures=self.load_failures,
            load_cancellations=self.load_cancellations,
            unloads=self.unloads,
            unload_failures=self.unload_failures,
            swaps=self.swaps,
            last_load_s=self.last_load_s,
            load_s_sum=self.load_s_sum,
            load_s_count=self.load_s_count,
            recent_load_s=tuple(self.recent_load_s),
            last_unload_s=self.last_unload_s,
            unload_s_sum=self.unload_s_sum,
            unload_s_count=self.unload_s_count,
            recent_unload_s=tuple(self.recent_unload_s),
            available_versions=tuple(sorted(self.available)),
        )


class LifecycleLog:
    """``event_bus``: the manager's bus (subscribed at once). ``logger``: where lines go
    (default this module's). ``clock``: seconds for durations (default ``time.monotonic``).
    ``max_recent``: durations kept per model and kind (default 32, >= 1)."""

    def __init__(
        self,
        event_bus: EventBus[ServableState],
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_recent: int = 32,
    ) -> None:
        if isinstance(max_recent, bool) or not isinstance(max_recent, int) or max_recent < 1:
            raise InvalidArgumentError(f"max_recent must be an int >= 1, got {max_recent!r}")
        self._logger = logger or _log
        self._clock = clock
        self._max_recent = max_recent
        self._listeners: EventBus[LifecycleEvent] = EventBus()
        self._lock = threading.Lock()  # guards everything below
        self._phase: dict[ServableId, tuple[ManagerState, float]] = {}  # live versions: state, since
        self._models: dict[str, _ModelCounters] = {}
        self._events = 0
        self._subscription = event_bus.subscribe(self._on_event)

    def close(self) -> None:
        """Stop listening; the counters stay readable. Idempotent."""
        self._subscription.cancel()

    def add_listener(self, listener: Callable[[LifecycleEvent], None]) -> Subscription:
        """Call ``listener`` for every later state change; ``cancel()`` the result to stop."""
        return self._listeners.subscribe(listener)

    def statistics(self) -> LifecycleStatistics:
        with self._lock:
            models = {name: counters.snapshot() for name, counters in sorted(self._models.items())}
            return LifecycleStatistics(models=models, events=self._events)

    # -- the subscriber -------------------------------------------------------------------

    def _on_event(self, state: ServableState) -> None:
        now = self._clock()
        with self._lock:
            event, failed = self._record(state, now)
        extra = {"model": state.id.name, "version": state.id.version, "event": _event_name(event)}
        if failed:
            self._logger.warning("%s", event.message, extra=extra)
        else:
            self._logger.info("%s", event.message, extra=extra)
        self._listeners.publish(event)

    def _record(self, state: ServableState, now: float) -> tuple[LifecycleEvent, bool]:
        """Update the counters; return the event and whether it is a failure. Holds ``_lock``."""
        sid, new = state.id, state.manager_state
        self._events += 1
        counters = self._models.get(sid.name)
        if counters is None:
            counters = self._models[sid.name] = _ModelCounters(self._max_recent)
        previous, since = self._phase.get(sid, (None, now))
        if new is ManagerState.START:
            previous = None  # a version managed again (retried with new content) starts over
        duration = max(0.0, now - since) if previous in (ManagerState.LOADING, ManagerState.UNLOADING) else None
        swap, failed = False, False
        if new is ManagerState.END:
            self._phase.pop(sid, None)
        else:
            self._phase[sid] = (new, now)

        if new is ManagerState.START:
            text = "START: found, waiting to load"
        elif new is ManagerState.LOADING:
            text = "LOADING"
        elif new is ManagerState.AVAILABLE:
            swap = bool(counters.available - {sid.version})
            counters.swaps += swap
            counters.available.add(sid.version)
            counters.loads += 1
            if duration is not None:
                counters.load_s_sum += duration
                counters.load_s_count += 1
                counters.recent_load_s.append(duration)
                counters.last_load_s = duration
                text = f"AVAILABLE after {duration:.2f} s load"
            else:
                text = "AVAILABLE"
        elif new is ManagerState.UNLOADING:
            counters.available.discard(sid.version)
            text = "UNLOADING"
        else:
            counters.available.discard(sid.version)
            text, failed = self._end_text(counters, state, previous, duration)
        return LifecycleEvent(state, previous, duration, swap, f"{sid} {text}"), failed

    def _end_text(
        self,
        counters: _ModelCounters,
        state: ServableState,
        previous: ManagerState | None,
        duration: float | None,
    ) -> tuple[str, bool]:
        error = state.health
        if previous is ManagerState.UNLOADING:
            if error is not None:
                counters.unload_failures += 1
                return f"END: unload failed: {_message(error, state.id, 'Unloading')}", True
            counters.unloads += 1
            if duration is None:
                return "END", False
            counters.unload_s_sum += duration
            counters.unload_s_count += 1
            counters.recent_unload_s.append(duration)
            counters.last_unload_s = duration
            return f"END after {duration:.2f} s unload", False
        if error is None:
            return "END: never loaded (no longer wanted)", False
        if error.code is Code.CANCELLED:
            counters.load_cancellations += 1
            return "END: load cancelled (no longer wanted)", False
        counters.load_failures += 1
        return f"END: load failed: {_message(error, state.id, 'Loading')}", True


def _event_name(event: LifecycleEvent) -> str:
    """The line's machine name (the ``event`` extra of its log record, a field of JSON logs)."""
    new, error = event.state.manager_state, event.state.health
    if new is not ManagerState.END:
        return _EVENT_NAMES[new]
    if event.previous is ManagerState.UNLOADING:
        return "version_unload_failed" if error is not None else "version_unloaded"
    if error is None:
        return "version_not_loaded"
    return "version_load_cancelled" if error.code is Code.CANCELLED else "version_load_failed"


_EVENT_NAMES = {
    ManagerState.START: "version_found",
    ManagerState.LOADING: "version_loading",
    ManagerState.AVAILABLE: "version_available",
    ManagerState.UNLOADING: "version_unloading",
}


def _message(error: ServingError, sid: ServableId, verb: str) -> str:
    """The error's message without the manager's "<verb> servable <id> failed: " prefix,
    since the line already names the servable."""
    prefix = f"{verb} servable {sid} failed: "
    message = error.message
    return message[len(prefix):] if message.startswith(prefix) else message
