""":class:`Readiness`: is the server ready to take traffic?

Ready means: the server is not shutting down, a model list was installed, and every
model on it has at least one version whose latest published state is AVAILABLE.
Because the manager publishes a new version's AVAILABLE before the old version's
UNLOADING (the availability-preserving policy loads first), a server stays ready
through a version swap. A model that is added by a config reload makes the server not
ready until it has loaded; a model whose every version ended (its base path was
emptied, its only version failed) keeps the server not ready until one is AVAILABLE.

The health endpoints read it: gRPC ``grpc.health.v1`` (SERVING / NOT_SERVING) and REST
``GET /v1/health/ready`` (200 / 503 with :attr:`ReadinessStatus.reason`).

Inputs: the manager's :class:`ServableStateMonitor` and its ``EventBus[ServableState]``.
The status is recomputed on every state event, on :meth:`set_models` (config changes)
and on :meth:`begin_shutdown` (permanent: once shutting down, never ready again).
Construct it after the manager, so that the monitor has recorded each event before this
class reads it (subscribers run in subscription order).

Threading: :meth:`status` is lock-free (it reads one immutable snapshot). ``_lock``
guards the configuration and the computed status; recomputations are serialised by it,
each reading the monitor under it, so the last recomputation always sees every event.
Listeners (:meth:`add_listener`) are called with each *change*, in order, on the thread
that caused it (a manager worker, the config thread, or the one shutting down).
``_notify_lock`` exists only to deliver changes in order and guards ``_delivered`` and
the listener list; it is held while listeners run, so a listener must be quick and must
not call :meth:`set_models`, :meth:`begin_shutdown` or :meth:`add_listener` (reading
:meth:`status` is fine). An exception in a listener is logged and does not reach others.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.event_bus import EventBus, Subscription
from pyserving.servable.state import ServableState

__all__ = ["Readiness", "ReadinessStatus", "ReadinessListener"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReadinessStatus:
    """``ready``; ``reason``: why not, worded for a user ("" when ready);
    ``unavailable_models``: configured models without an AVAILABLE version, sorted;
    ``shutting_down``: the server began shutting down."""

    ready: bool
    reason: str = ""
    unavailable_models: tuple[str, ...] = ()
    shutting_down: bool = False


ReadinessListener = Callable[[ReadinessStatus], None]

_STARTING = ReadinessStatus(False, "starting: no model list installed yet")
_SHUTTING_DOWN = ReadinessStatus(False, "shutting down", shutting_down=True)


class Readiness:
    def __init__(self, monitor: ServableStateMonitor, event_bus: EventBus[ServableState]) -> None:
        self._monitor = monitor
        self._lock = threading.Lock()  # guards _models, _shutting_down and _status
        self._models: tuple[str, ...] | None = None
        self._shutting_down = False
        self._status = _STARTING
        self._notify_lock = threading.Lock()  # delivers changes in order; guards _delivered, _listeners
        self._delivered = _STARTING
        self._listeners: list[ReadinessListener] = []
        self._subscription = event_bus.subscribe(self._on_event)

    # -- reading -----------------------------------------------------------------------

    def status(self) -> ReadinessStatus:
        return self._status

    def is_ready(self) -> bool:
        return self._status.ready

    def add_listener(self, listener: ReadinessListener) -> Subscription:
        """Call ``listener(status)`` now with the current status, then on every change."""
        with self._notify_lock:
            self._listeners.append(listener)
            _call(listener, self._delivered)

        def remove() -> None:
            with self._notify_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return Subscription(remove)

    # -- inputs ------------------------------------------------------------------------

    def set_models(self, names: Iterable[str]) -> None:
        """The complete list of model names that must be served (replaces the last one)."""
        with self._lock:
            self._models = tuple(sorted(set(names)))
        self._recompute()

    def begin_shutdown(self) -> None:
        """Not ready from now on, whatever the models do. Idempotent."""
        with self._lock:
            self._shutting_down = True
        self._recompute()

    def refresh(self) -> None:
        """Recompute from the monitor now (the events already do this)."""
        self._recompute()

    def close(self) -> None:
        """Stop listening to state events; the last status stays readable. Idempotent."""
        self._subscription.cancel()

    # -- computing -----------------------------------------------------------------------

    def _on_event(self, state: ServableState) -> None:
        self._recompute()

    def _recompute(self) -> None:
        with self._lock:
            status = self._compute()
            if status == self._status:
                return
            self._status = status
        self._deliver()

    def _compute(self) -> ReadinessStatus:
        """Caller holds ``_lock``."""
        if self._shutting_down:
            return _SHUTTING_DOWN
        if self._models is None:
            return _STARTING
        available = self._monitor.get_available_states()
        missing = tuple(name for name in self._models if name not in available)
        if missing:
            return ReadinessStatus(
                False, f"no version of model(s) {', '.join(missing)} is AVAILABLE", unavailable_models=missing
            )
        return ReadinessStatus(True)

    def _deliver(self) -> None:
        with self._notify_lock:
            status = self._status  # the newest, even if a later change raced this one
            if status == self._delivered:
                return
            self._delivered = status
            for listener in list(self._listeners):
                _call(listener, status)


def _call(listener: ReadinessListener, status: ReadinessStatus) -> None:
    try:
        listener(status)
    except Exception:  # noqa: BLE001 - one failing listener must not starve the others
        _log.exception("A readiness listener failed on %s", status)
