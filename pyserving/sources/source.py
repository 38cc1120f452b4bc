"""Sources, targets and the callback that joins them.

A *source* discovers versions of servables and tells a *target* which versions it
aspires to, one servable stream at a time::

    callback(servable_name, [ServableData(id, data_or_error), ...])

Guarantees of every source in pyserving:

* Each call carries the **complete** aspired list of that stream; it supersedes every
  earlier call for the same name. Omitting a version asks the target to unload it; an
  empty list asks it to unload every version of that name.
* Items in one call all name ``servable_name``.
* Sources are stateless towards the target: they may repeat an unchanged list at any
  time (a poll does), and the target must treat that as a no-op.
* A version whose data cannot be produced is sent as ``ServableData.failed`` instead of
  being dropped, so the target can record the error.

Threading: ``set_aspired_versions_callback`` is called once, before the source starts
calling; the callback may then be called from any of the source's threads, never
concurrently for the same source. Targets' callbacks are thread-safe and return quickly
(they enqueue; they do not load).

:class:`SourceAdapter` is both a target (of ``In``) and a source (of ``Out``): it converts
each incoming item, e.g. a storage path into a loader. :func:`connect` wires a source to
a target.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Callable, Generic, Sequence, TypeVar

from pyserving.servable.data import ServableData
from pyserving.servable.errors import FailedPreconditionError

__all__ = [
    "AspiredVersionsCallback",
    "Source",
    "Target",
    "SourceAdapter",
    "UnarySourceAdapter",
    "connect",
]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

AspiredVersionsCallback = Callable[[str, Sequence[ServableData[T]]], None]

_log = logging.getLogger(__name__)


class Source(abc.ABC, Generic[T]):
    """Something that emits aspired-version lists."""

    @abc.abstractmethod
    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[T]) -> None:
        """Give the source its one target callback.

        Called at most once (a second call raises ``FailedPreconditionError``). The source
        may call ``callback`` from this call onwards.
        """


class Target(abc.ABC, Generic[T]):
    """Something that accepts aspired-version lists."""

    @abc.abstractmethod
    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[T]:
        """The callback to hand to a source: thread-safe and quick to return."""


def connect(source: Source[T], target: Target[T]) -> None:
    """Send ``source``'s aspired versions to ``target``."""
    source.set_aspired_versions_callback(target.get_aspired_versions_callback())


class SourceAdapter(Source[Out], Target[In], Generic[In, Out]):
    """Converts aspired-version lists of ``In`` into lists of ``Out``.

    Subclasses implement :meth:`adapt`. Lists that arrive before the adapter has its own
    outgoing callback are kept (the latest per stream) and forwarded once it is set, so
    the order of wiring does not matter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _callback and _pending
        self._callback: AspiredVersionsCallback[Out] | None = None
        self._pending: dict[str, Sequence[ServableData[In]]] = {}

    @abc.abstractmethod
    def adapt(self, servable_name: str, versions: Sequence[ServableData[In]]) -> list[ServableData[Out]]:
        """Convert one complete aspired list. Errors belong in the items, not raised."""

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[Out]) -> None:
        with self._lock:
            if self._callback is not None:
                raise FailedPreconditionError(
                    f"{type(self).__name__} already has an aspired-versions callback"
                )
            self._callback = callback
            pending, self._pending = self._pending, {}
        for name, versions in pending.items():
            callback(name, self.adapt(name, versions))

    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[In]:
        return self._on_aspired_versions

    def _on_aspired_versions(self, servable_name: str, versions: Sequence[ServableData[In]]) -> None:
        with self._lock:
            callback = self._callback
            if callback is None:
                self._pending[servable_name] = list(versions)
                return
        callback(servable_name, self.adapt(servable_name, versions))


class UnarySourceAdapter(SourceAdapter[In, Out]):
    """A :class:`SourceAdapter` that converts each item on its own with :meth:`convert`.

    An exception raised by ``convert`` becomes that item's error.
    """

    @abc.abstractmethod
    def convert(self, data: ServableData[In]) -> Out:
        """Convert one healthy item's value (``data.value``) for ``data.id``."""

    def adapt(self, servable_name: str, versions: Sequence[ServableData[In]]) -> list[ServableData[Out]]:
        from pyserving.servable.errors import as_serving_error

        out: list[ServableData[Out]] = []
        for item in versions:
            if not item.ok:
                out.append(ServableData.failed(item.id, item.error))  # type: ignore[arg-type]
                continue
            try:
                out.append(ServableData.of(item.id, self.convert(item)))
            except Exception as exc:  # noqa: BLE001 - errors travel as data
                err = as_serving_error(exc, f"Cannot prepare {item.id}: ")
                _log.warning("%s", err.message)
                out.append(ServableData.failed(item.id, err))
        return out
