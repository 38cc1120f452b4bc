""":class:`SimpleLoader`: a :class:`Loader` made from a factory function.

For servables that are plain Python objects built in code (a lookup table, a rule set, a
test double), without a file format or platform::

    loader = SimpleLoader(lambda: Table.read(path), resources=Resources(ram_bytes=64 << 20))

Contract (in addition to :mod:`pyserving.loaders.loader`'s):

* Construction stores the arguments and calls nothing.
* :meth:`load` calls ``factory()`` once and keeps what it returns as :attr:`servable`.
  Whatever ``factory`` raises propagates unchanged (the manager translates it and may
  call ``load()`` again); nothing is kept then. ``factory`` returning ``None`` is an
  error (``FailedPreconditionError``), since ``None`` means "not loaded".
* :meth:`unload` drops the loader's reference first, then calls ``unloader(servable)``:
  by default the servable's ``close()`` when it has one, else nothing. An error raised
  by the unloader propagates after the reference is dropped; the loader is unloaded
  either way. Once the caller's last reference goes, the servable can be collected.
* :meth:`estimate_resources` returns the fixed ``resources`` given at construction.
* :attr:`revision` is the ``revision`` given at construction (``None``: unknown).
* ``load()`` on a loaded loader and ``unload()`` on one that is not loaded raise
  ``FailedPreconditionError``: the manager never does either, so it is a bug.

Threading: the manager never calls ``load()`` and ``unload()`` concurrently; request
threads may read :attr:`servable` at any time. ``factory`` and ``unloader`` run on the
calling thread with no lock held. The loader owns the servable between ``load()`` and
``unload()``; requests only borrow it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar

from pyserving.loaders.loader import Loader, Resources
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError

__all__ = ["SimpleLoader", "close_if_closable"]

T = TypeVar("T")


def close_if_closable(servable: Any) -> None:
    """The default unloader: call ``servable.close()`` when it exists and is callable."""
    close = getattr(servable, "close", None)
    if callable(close):
        close()


class SimpleLoader(Loader, Generic[T]):
    """Loads by calling ``factory``; see the module docstring for the contract."""

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        unloader: Callable[[T], None] | None = None,
        resources: Resources = Resources(),
        revision: str | None = None,
    ) -> None:
        if not callable(factory):
            raise InvalidArgumentError(f"factory must be callable, got {factory!r}")
        if unloader is not None and not callable(unloader):
            raise InvalidArgumentError(f"unloader must be callable or None, got {unloader!r}")
        if not isinstance(resources, Resources):
            raise InvalidArgumentError(f"resources must be a Resources, got {resources!r}")
        if revision is not None and not isinstance(revision, str):
            raise InvalidArgumentError(f"revision must be a str or None, got {revision!r}")
        self._factory = factory
        self._unloader: Callable[[T], None] = unloader if unloader is not None else close_if_closable
        self._resources = resources
        self._revision = revision
        self._lock = threading.Lock()  # guards _servable; never held while factory/unloader run
        self._servable: T | None = None

    def estimate_resources(self) -> Resources:
        return self._resources

    def load(self) -> None:
        with self._lock:
            if self._servable is not None:
                raise FailedPreconditionError(f"{self._describe()} is already loaded; load() called twice")
        servable = self._factory()
        if servable is None:
            raise FailedPreconditionError(
                f"{self._describe()}: factory returned None; it must return the servable object"
            )
        with self._lock:
            self._servable = servable

    def unload(self) -> None:
        with self._lock:
            servable, self._servable = self._servable, None
        if servable is None:
            raise FailedPreconditionError(f"{self._describe()} is not loaded; unload() called without load()")
        self._unloader(servable)

    @property
    def servable(self) -> T | None:
        return self._servable

    @property
    def revision(self) -> str | None:
        return self._revision

    def _describe(self) -> str:
        name = getattr(self._factory, "__qualname__", None) or repr(self._factory)
        return f"SimpleLoader({name})"

    def __repr__(self) -> str:
        state = "loaded" if self._servable is not None else "not loaded"
        return f"<{self._describe()} {state}>"
