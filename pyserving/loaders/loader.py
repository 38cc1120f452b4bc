""":class:`Loader`: knows how to load, size and unload one servable version.

Contract (the manager is the only caller):

* Construction is cheap: a loader usually only remembers a path. No I/O beyond a stat.
* :meth:`estimate_resources` returns an upper bound of what the loaded version will use.
  It may be called before ``load()`` and again later; a later answer is never larger.
  It must be quick and must not raise for a healthy version (raise a ``ServingError`` to
  report a version that cannot be loaded at all).
* :meth:`load` does the expensive work and may block for a long time. It is called on a
  load worker thread, never concurrently with ``load()`` or ``unload()`` of the same loader.
  It raises on failure (any exception; the manager translates it into a ``ServingError``
  and may call ``load()`` again, up to the retry policy). A failed ``load()`` must leave
  nothing behind that needs ``unload()``.
* :meth:`unload` frees everything ``load()`` took. It is called once, on an unload worker
  thread, only after a successful ``load()`` and after every request using the version
  has released its handle. The loader is not reused afterwards.
* :attr:`servable` is the object requests use: valid only between a successful ``load()``
  and ``unload()`` (``None`` otherwise). The manager owns the loader; requests only
  borrow ``servable`` through a ``ServableHandle``.
* :attr:`revision` is an opaque token for the *content* of the version (for a folder:
  its files' names, sizes and modification times). When a version that ended in error
  is sent again with a different revision, the manager forgets the failure and tries
  the new loader; ``None`` (the default) means "unknown" and never triggers a retry.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from pyserving.servable.errors import InvalidArgumentError

__all__ = ["Loader", "Resources"]


@dataclass(frozen=True, slots=True)
class Resources:
    """A resource amount. ``ram_bytes``: main memory in bytes (default 0 = not counted)."""

    ram_bytes: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ram_bytes, bool) or not isinstance(self.ram_bytes, int):
            raise InvalidArgumentError(f"ram_bytes must be an int, got {self.ram_bytes!r}")
        if self.ram_bytes < 0:
            raise InvalidArgumentError(f"ram_bytes must be >= 0, got {self.ram_bytes}")

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.ram_bytes + other.ram_bytes)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(max(0, self.ram_bytes - other.ram_bytes))

    def fits_in(self, available: Resources) -> bool:
        return self.ram_bytes <= available.ram_bytes

    def __str__(self) -> str:
        return _format_bytes(self.ram_bytes)


def _format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Loader(abc.ABC):
    """Loads, sizes and unloads one servable version. See the module docstring."""

    @abc.abstractmethod
    def estimate_resources(self) -> Resources:
        """Upper bound of the resources the loaded version will hold."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the version; raise on failure."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Free everything ``load()`` took."""

    @property
    @abc.abstractmethod
    def servable(self) -> Any:
        """The loaded object requests use; ``None`` when not loaded."""

    @property
    def revision(self) -> str | None:
        """Opaque content token of the version; see the module docstring."""
        return None
