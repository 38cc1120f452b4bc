""":class:`StoragePath`: what a file-system source sends for one version.

``path`` is the version directory (absolute). ``revision`` is an opaque token of the
directory's content (file names, sizes and modification times): it changes whenever a
file in it changes, so a version that failed to load can be retried once it is repaired
(see ``Loader.revision``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoragePath"]


@dataclass(frozen=True, slots=True)
class StoragePath:
    path: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.path
