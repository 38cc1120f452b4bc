""":class:`WatchedServable`: one servable a :class:`FileSystemSource` watches.

A frozen, validated value: a servable name, its base path (made absolute at
construction), its version policy and optionally its own readiness check. Construction
raises ``InvalidArgumentError`` naming the field and the value; a valid object never
changes, so it may be shared between threads. :func:`check_servables` validates a whole
configuration (unique names). Nothing here touches the file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from pyserving.servable.errors import InvalidArgumentError
from pyserving.sources.version_policy import LatestVersions, ServableVersionPolicy
from pyserving.sources.version_scan import ReadinessCheck

__all__ = ["WatchedServable", "check_servables"]


@dataclass(frozen=True, slots=True)
class WatchedServable:
    """One servable to watch: ``name``, ``base_path`` (made absolute), its version policy
    (default latest 1) and optionally its own readiness check."""

    name: str
    base_path: str
    version_policy: ServableVersionPolicy = LatestVersions(1)
    is_version_ready: ReadinessCheck | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"servable name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.base_path, (str, os.PathLike)) or not os.fspath(self.base_path):
            raise InvalidArgumentError(
                f"base_path of servable {self.name} must be a non-empty path, got {self.base_path!r}"
            )
        if not isinstance(self.version_policy, ServableVersionPolicy):
            raise InvalidArgumentError(
                f"version_policy of servable {self.name} must be a ServableVersionPolicy, "
                f"got {self.version_policy!r}"
            )
        object.__setattr__(self, "base_path", os.path.abspath(os.fspath(self.base_path)))


def check_servables(servables: Sequence[WatchedServable]) -> dict[str, WatchedServable]:
    """``{name: servable}`` in the given order; raises ``InvalidArgumentError`` for an
    object that is not a :class:`WatchedServable` or a name given twice."""
    by_name: dict[str, WatchedServable] = {}
    for servable in servables:
        if not isinstance(servable, WatchedServable):
            raise InvalidArgumentError(f"servables must be WatchedServable objects, got {servable!r}")
        if servable.name in by_name:
            raise InvalidArgumentError(f"servable names must be unique, got {servable.name!r} twice")
        by_name[servable.name] = servable
    return by_name
