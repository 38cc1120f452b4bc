"""Watching a model server's model status while a test changes its models.

:class:`StatusWatcher` polls ``GET /v1/models/{name}`` for a few models on one thread,
back to back with a short pause, and keeps every poll (start and end time, and per model
``{version: (state, error message)}``). From those a test reads:

* :meth:`StatusWatcher.history` — the distinct states one version went through, in order
  (a poll can miss a short state such as LOADING, never reorder them);
* :meth:`StatusWatcher.polls_without_available` — polls in which a model that had been
  AVAILABLE before had no AVAILABLE version (availability-preserving swaps never do that);
* :meth:`StatusWatcher.seen_before` — whether a version showed up in a poll that *ended*
  before a given time (a version copied in slowly must not).

:func:`check_history` compares a history with the states a version is allowed to go
through. Bounded like the traffic helpers: the thread stops on :meth:`stop` (which then
polls once more) or after ``max_duration_s``. Times are ``time.monotonic()`` readings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

from tests.support.traffic import describe_error, rest_status

__all__ = ["Poll", "StatusWatcher", "check_history", "LOAD_AND_UNLOAD", "FAIL_THEN_LOAD"]

#: A version dropped in and later replaced: every state, in this order.
LOAD_AND_UNLOAD = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")
#: A version that failed to load and was retried after its files were repaired.
FAIL_THEN_LOAD = ("START", "LOADING", "END!", "START", "LOADING", "AVAILABLE")


@dataclass(frozen=True, slots=True)
class Poll:
    start_s: float
    end_s: float
    models: dict[str, dict[int, tuple[str, str]]]  # model -> version -> (state, error message)


class StatusWatcher:
    def __init__(self, rest_port: int, models: Sequence[str], *, pause_s: float = 0.02,
                 max_duration_s: float = 120.0) -> None:
        self._rest_port, self._models = rest_port, list(models)
        self._pause_s, self._max_duration_s = pause_s, max_duration_s
        self._lock = threading.Lock()  # guards _polls and _errors
        self._polls: list[Poll] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._first_poll = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="status-watcher")

    def start(self) -> StatusWatcher:
        self._thread.start()
        if not self._first_poll.wait(30):
            raise AssertionError(f"the status watcher could not poll in 30 s: {self.errors()}")
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_duration_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._poll()
            self._stop.wait(self._pause_s)

    def _poll(self) -> None:
        start = time.monotonic()
        models: dict[str, dict[int, tuple[str, str]]] = {}
        try:
            for model in self._models:
                models[model] = rest_status(self._rest_port, model)
        except Exception as exc:  # noqa: BLE001 - recorded; the test asserts there are none
            with self._lock:
                self._errors.append(describe_error(exc))
        else:
            with self._lock:
                self._polls.append(Poll(start, time.monotonic(), models))
            self._first_poll.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop polling, then poll once more on the caller's thread, so whatever the caller
        saw before stopping is in the record too."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"status watcher still running {timeout_s} s after stop")
        self._poll()

    def __enter__(self) -> StatusWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading -------------------------------------------------------------------------

    def polls(self) -> list[Poll]:
        with self._lock:
            return list(self._polls)

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def history(self, model: str, version: int) -> list[tuple[str, str]]:
        """The distinct consecutive (state, error message) of ``version``, oldest first."""
        seen: list[tuple[str, str]] = []
        for poll in self.polls():
            entry = poll.models.get(model, {}).get(version)
            if entry is not None and (not seen or seen[-1] != entry):
                seen.append(entry)
        return seen

    def polls_without_available(self, model: str) -> list[Poll]:
        """Polls after the model's first AVAILABLE version in which none was AVAILABLE."""
        found, bad = False, []
        for poll in self.polls():
            available = any(state == "AVAILABLE" for state, _ in poll.models.get(model, {}).values())
            found = found or available
            if found and not available:
                bad.append(poll)
        return bad

    def seen_before(self, model: str, version: int, before_s: float) -> list[Poll]:
        """Polls that ended before ``before_s`` and listed ``version``."""
        return [p for p in self.polls() if p.end_s < before_s and version in p.models.get(model, {})]

    def changes(self, model: str, after_s: float) -> list[Poll]:
        """Polls started after ``after_s`` whose view of ``model`` differs from the one before."""
        previous, changed = None, []
        for poll in self.polls():
            view = poll.models.get(model)
            if previous is not None and view != previous and poll.start_s > after_s:
                changed.append(poll)
            previous = view
        return changed


def check_history(history: Sequence[tuple[str, str]], allowed: Sequence[str]) -> str | None:
    """None when ``history`` is ``allowed`` with some states missed by the polls, else why not.

    ``allowed`` lists states in order; ``"END!"`` is END with an error message, ``"END"``
    END without one. The last allowed state must have been seen.
    """
    names = [(state + "!") if state == "END" and message else state for state, message in history]
    position = 0
    for name in names:
        while position < len(allowed) and allowed[position] != name:
            position += 1
        if position == len(allowed):
            return f"states {names} are not in the order {list(allowed)}"
        position += 1
    if not names or names[-1] != allowed[-1]:
        return f"states {names} do not end in {allowed[-1]}"
    return None
