""":class:`ServableStateMonitor`: remembers the latest published state of every version.

The monitor subscribes to a manager's ``EventBus[ServableState]`` and keeps, per
(name, version), the latest :class:`ServableState` and when it arrived, plus an optional
bounded log of every event. Model-status APIs and startup waits read it.

Contract:

* Thread-safe. One lock guards the state table, the log and the pending notifications;
  it is held only to copy or update them. ``_changed`` (a Condition on that lock) is
  notified on every event, so waiters wake at once — no polling.
* States are recorded as published. A version that is managed again after it ended
  (a failed version retried with a new revision) starts over at START.
* :meth:`wait_until` / :meth:`notify_when` treat a request as satisfied when its version
  reaches the goal state **or END** (so a waiter always gets an answer). A ``Specific``
  request (or a plain ``ServableId``) waits for that version; a ``Latest`` or ``Earliest``
  request is satisfied by *any* version of the name reaching the goal (preferred) or END.
* ``notify_when`` callbacks run exactly once, without the lock held, on the thread that
  published the satisfying event (or on the caller's thread if already satisfied).
* :meth:`forget_unloaded` drops versions in END; nothing else forgets states.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from pyserving.servable.errors import DeadlineExceededError, InvalidArgumentError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import RequestKind, ServableId, ServableRequest
from pyserving.servable.state import ManagerState, ServableState

__all__ = ["ServableStateMonitor", "ServableStateAndTime"]

_log = logging.getLogger(__name__)

StatesCallback = Callable[[dict[ServableId, ServableState]], None]


@dataclass(frozen=True, slots=True)
class ServableStateAndTime:
    """A published state and ``time_s``, the monitor clock's reading (seconds) when it arrived."""

    state: ServableState
    time_s: float


@dataclass(slots=True)
class _Notification:
    requests: list[ServableRequest]
    goal: ManagerState
    callback: StatesCallback


class ServableStateMonitor:
    """``max_log_events``: events kept in the log (default 1000; 0 = no log).
    ``clock``: seconds for ``time_s`` (default ``time.time``, wall-clock)."""

    def __init__(
        self,
        event_bus: EventBus[ServableState],
        max_log_events: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_log_events, bool) or not isinstance(max_log_events, int) or max_log_events < 0:
            raise InvalidArgumentError(f"max_log_events must be an int >= 0, got {max_log_events!r}")
        self._clock = clock
        self._lock = threading.Lock()  # guards _states, _log and _notifications
        self._changed = threading.Condition(self._lock)  # notified on every recorded event
        self._states: dict[str, dict[int, ServableStateAndTime]] = {}
        self._log: collections.deque[ServableStateAndTime] = collections.deque(maxlen=max_log_events)
        self._notifications: list[_Notification] = []
        self._subscription = event_bus.subscribe(self._on_event)

    def close(self) -> None:
        """Stop listening to the bus; recorded states stay readable. Idempotent."""
        self._subscription.cancel()

    # -- recording ---------------------------------------------------------------------

    def _on_event(self, state: ServableState) -> None:
        entry = ServableStateAndTime(state, self._clock())
        due: list[tuple[StatesCallback, dict[ServableId, ServableState]]] = []
        with self._changed:
            self._states.setdefault(state.id.name, {})[state.id.version] = entry
            if self._log.maxlen:
                self._log.append(entry)
            still_waiting = []
            for note in self._notifications:
                reached, pending = self._evaluate(note.requests, note.goal)
                if pending:
                    still_waiting.append(note)
                else:
                    due.append((note.callback, reached))
            self._notifications = still_waiting
            self._changed.notify_all()
        for callback, reached in due:
            try:
                callback(reached)
            except Exception:  # noqa: BLE001 - one failing callback must not starve the others
                _log.exception("A servable-state notification callback failed")

    # -- reading -----------------------------------------------------------------------

    def get_state(self, servable_id: ServableId) -> ServableState | None:
        entry = self.get_state_and_time(servable_id)
        return entry.state if entry is not None else None

    def get_state_and_time(self, servable_id: ServableId) -> ServableStateAndTime | None:
        with self._lock:
            return self._states.get(servable_id.name, {}).get(servable_id.version)

    def get_version_states(self, name: str) -> list[ServableState]:
        """Every known version of ``name``, highest version first."""
        return [entry.state for entry in self.get_version_states_and_times(name)]

    def get_version_states_and_times(self, name: str) -> list[ServableStateAndTime]:
        with self._lock:
            versions = dict(self._states.get(name, {}))
        return [versions[v] for v in sorted(versions, reverse=True)]

    def get_all_states(self) -> dict[str, list[ServableState]]:
        """Per name (sorted), its versions' states, highest version first."""
        return self._filtered(lambda s: True)

    def get_live_states(self) -> dict[str, list[ServableState]]:
        """Like :meth:`get_all_states`, without versions in END."""
        return self._filtered(lambda s: s.manager_state is not ManagerState.END)

    def get_available_states(self) -> dict[str, list[ServableState]]:
        """Like :meth:`get_all_states`, only versions in AVAILABLE."""
        return self._filtered(lambda s: s.manager_state is ManagerState.AVAILABLE)

    def _filtered(self, keep: Callable[[ServableState], bool]) -> dict[str, list[ServableState]]:
        with self._lock:
            snapshot = {name: dict(versions) for name, versions in self._states.items()}
        out: dict[str, list[ServableState]] = {}
        for name in sorted(snapshot):
            states = [snapshot[name][v].state for v in sorted(snapshot[name], reverse=True)]
            states = [s for s in states if keep(s)]
            if states:
                out[name] = states
        return out

    def get_log(self) -> list[ServableStateAndTime]:
        """The most recent events, oldest first (at most ``max_log_events``)."""
        with self._lock:
            return list(self._log)

    def forget_unloaded(self, name: str | None = None) -> None:
        """Drop every version whose latest state is END (only ``name``'s, when given).

        A server that adds a model again after removing it forgets the old END records
        first, so a wait for the model's newest version sees the new load, not the old end.
        """
        with self._lock:
            for stream in [name] if name is not None else list(self._states):
                versions = self._states.get(stream)
                if versions is None:
                    continue
                for version in [v for v, e in versions.items() if e.state.manager_state is ManagerState.END]:
                    del versions[version]
                if not versions:
                    del self._states[stream]

    # -- waiting -----------------------------------------------------------------------

    def wait_until(
        self,
        requests: Iterable[ServableId | ServableRequest],
        goal_state: ManagerState,
        timeout_s: float | None = None,
    ) -> dict[ServableId, ServableState]:
        """Block until every request reached ``goal_state`` or END; return those states.

        The result maps the id of the version that satisfied each request to its state
        (check ``manager_state`` / ``health`` to tell success from failure). With
        ``timeout_s`` (seconds, ``None`` = no limit) it raises ``DeadlineExceededError``
        naming the requests still waiting.
        """
        targets = _as_requests(requests)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            while True:
                reached, pending = self._evaluate(targets, goal_state)
                if not pending:
                    return reached
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceededError(
                        f"Timed out after {timeout_s} s waiting for {', '.join(str(r) for r in pending)} "
                        f"to reach {goal_state.name} (or END)"
                    )
                self._changed.wait(remaining)

    def notify_when(
        self,
        requests: Iterable[ServableId | ServableRequest],
        goal_state: ManagerState,
        callback: StatesCallback,
    ) -> None:
        """Call ``callback(states)`` once, when every request reached ``goal_state`` or END."""
        targets = _as_requests(requests)
        with self._lock:
            reached, pending = self._evaluate(targets, goal_state)
            if pending:
                self._notifications.append(_Notification(targets, goal_state, callback))
                return
        callback(reached)

    def _evaluate(
        self, requests: Sequence[ServableRequest], goal: ManagerState
    ) -> tuple[dict[ServableId, ServableState], list[ServableRequest]]:
        """Caller holds ``_lock``."""
        reached: dict[ServableId, ServableState] = {}
        pending: list[ServableRequest] = []
        for request in requests:
            state = self._satisfying_state(request, goal)
            if state is None:
                pending.append(request)
            else:
                reached[state.id] = state
        return reached, pending

    def _satisfying_state(self, request: ServableRequest, goal: ManagerState) -> ServableState | None:
        versions = self._states.get(request.name, {})
        if request.kind is RequestKind.SPECIFIC:
            entry = versions.get(request.version)  # type: ignore[arg-type]
            if entry is not None and entry.state.manager_state in (goal, ManagerState.END):
                return entry.state
            return None
        order = sorted(versions, reverse=request.kind is RequestKind.LATEST)
        ended: ServableState | None = None
        for version in order:
            state = versions[version].state
            if state.manager_state is goal:
                return state
            if ended is None and state.manager_state is ManagerState.END:
                ended = state
        return ended


def _as_requests(requests: Iterable[ServableId | ServableRequest]) -> list[ServableRequest]:
    out: list[ServableRequest] = []
    for item in requests:
        if isinstance(item, ServableId):
            out.append(ServableRequest.for_id(item))
        elif isinstance(item, ServableRequest):
            if item.kind is RequestKind.LABEL:
                raise InvalidArgumentError(f"cannot wait for a label request, got {item}; wait for a version")
            out.append(item)
        else:
            raise InvalidArgumentError(f"requests must hold ServableId or ServableRequest, got {item!r}")
    return out
