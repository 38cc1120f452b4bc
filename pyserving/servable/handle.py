""":class:`ServableHandle`: a request's lease on one loaded version.

Contract:

* A handle is created by a manager (``get_handle``) for one request and keeps its
  version alive: the manager does not call the loader's ``unload()`` while any handle of
  that version is unreleased (the unload *quiesces*, waiting for them).
* Hold it for one request only; holding handles indefinitely blocks unloads.
* Use it as a context manager, or call :meth:`release` exactly once; a second release is
  a no-op. After release, :attr:`servable` raises ``FailedPreconditionError``.
* A handle may be used from any thread but is not meant to be shared between requests.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from pyserving.servable.errors import FailedPreconditionError
from pyserving.servable.ids import ServableId

__all__ = ["ServableHandle"]

T = TypeVar("T")


class ServableHandle(Generic[T]):
    __slots__ = ("_id", "_servable", "_release", "_released")

    def __init__(self, servable_id: ServableId, servable: T, release: Callable[[], None]) -> None:
        self._id = servable_id
        self._servable = servable
        self._release: Callable[[], None] | None = release
        self._released = False

    @property
    def id(self) -> ServableId:
        """The version this handle serves (the one that actually answered the request)."""
        return self._id

    @property
    def servable(self) -> T:
        if self._released:
            raise FailedPreconditionError(f"the handle of {self._id} was already released")
        return self._servable

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the version back; the first call counts, later calls do nothing."""
        if self._released:
            return
        self._released = True
        release, self._release = self._release, None
        self._servable = None  # type: ignore[assignment]
        if release is not None:
            release()

    def __enter__(self) -> ServableHandle[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def __del__(self) -> None:
        # A forgotten handle must not block an unload forever.
        if not getattr(self, "_released", True):
            self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"ServableHandle({self._id}, {state})"
