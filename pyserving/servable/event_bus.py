"""A small publish/subscribe bus, used for :class:`ServableState` events.

Contract:

* ``publish`` calls every current subscriber, in subscription order, on the publisher's
  thread, and returns when all have run. Subscribers must be quick and must not publish
  on the same bus (they would run nested; no lock is held while they run, so this does
  not deadlock, but ordering is then undefined).
* An exception in a subscriber is logged and does not reach the publisher or the other
  subscribers.
* ``subscribe`` returns a :class:`Subscription`; ``cancel()`` removes it. Subscribing and
  cancelling are thread-safe and may happen during a publish (taking effect from the next
  publish).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Generic, TypeVar

__all__ = ["EventBus", "Subscription"]

E = TypeVar("E")
_log = logging.getLogger(__name__)


class Subscription:
    __slots__ = ("_cancel",)

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel: Callable[[], None] | None = cancel

    def cancel(self) -> None:
        """Stop receiving events; idempotent."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()


class EventBus(Generic[E]):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _subscribers (the tuple is replaced, never mutated)
        self._subscribers: tuple[Callable[[E], None], ...] = ()

    def subscribe(self, callback: Callable[[E], None]) -> Subscription:
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

        def cancel() -> None:
            with self._lock:
                subs = list(self._subscribers)
                for i, sub in enumerate(subs):
                    if sub is callback:
                        del subs[i]
                        break
                self._subscribers = tuple(subs)

        return Subscription(cancel)

    def publish(self, event: E) -> None:
        for callback in self._subscribers:  # a snapshot: the tuple is immutable
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - a subscriber must not break the publisher
                _log.exception("an event-bus subscriber failed on %s", event)
