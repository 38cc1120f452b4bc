"""Which versions on disk a file-system source aspires to: :class:`ServableVersionPolicy`.

TF Serving's ``ServableVersionPolicy`` proto has three choices; each is a frozen value
object here with one pure method, :meth:`ServableVersionPolicy.select`, mapping the
versions that are *available* (present and complete on disk) to the versions to aspire::

    LatestVersions(2).select([1, 5, 3])      -> [3, 5]
    AllVersions().select([1, 5, 3])          -> [1, 3, 5]
    SpecificVersions((3, 4)).select([1, 3])  -> [3]

Rules (TF Serving's, ``file_system_storage_path_source.cc``):

* ``LatestVersions(num_versions)``: the ``num_versions`` largest versions; a value below 1
  is treated as 1. This is the default policy.
* ``AllVersions()``: every available version.
* ``SpecificVersions(versions)``: the requested versions that are available. Requested
  versions that are absent are simply not selected (:meth:`SpecificVersions.missing` lists
  them so the source can warn). An empty request selects nothing, i.e. unloads all.

Results are always sorted ascending and free of duplicates. Policies hold no state and
are safe to share between threads.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterable, Sequence

from pyserving.servable.errors import InvalidArgumentError

__all__ = ["ServableVersionPolicy", "LatestVersions", "AllVersions", "SpecificVersions"]


def _check_version(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise InvalidArgumentError(f"{name} must be >= 0, got {value}")
    return value


class ServableVersionPolicy(abc.ABC):
    """Chooses the versions to aspire among those available. Pure and immutable."""

    @abc.abstractmethod
    def select(self, available: Sequence[int]) -> list[int]:
        """The versions to aspire, ascending; a subset of ``available``."""


@dataclass(frozen=True, slots=True)
class LatestVersions(ServableVersionPolicy):
    """The ``num_versions`` largest available versions (default 1; < 1 counts as 1)."""

    num_versions: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.num_versions, bool) or not isinstance(self.num_versions, int):
            raise InvalidArgumentError(f"num_versions must be an int, got {self.num_versions!r}")
        if self.num_versions < 1:
            # TF Serving treats num_versions < 1 as 1; keep the stored value meaningful.
            object.__setattr__(self, "num_versions", 1)

    def select(self, available: Sequence[int]) -> list[int]:
        return sorted(set(available))[-self.num_versions :]

    def __str__(self) -> str:
        return f"latest {{ num_versions: {self.num_versions} }}"


@dataclass(frozen=True, slots=True)
class AllVersions(ServableVersionPolicy):
    """Every available version."""

    def select(self, available: Sequence[int]) -> list[int]:
        return sorted(set(available))

    def __str__(self) -> str:
        return "all { }"


@dataclass(frozen=True, slots=True)
class SpecificVersions(ServableVersionPolicy):
    """The listed versions that are available. Any iterable of ints is accepted and stored
    as a sorted tuple without duplicates, so equal requests compare equal."""

    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        raw: Iterable[object] = self.versions
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise InvalidArgumentError(f"versions must be a sequence of ints, got {raw!r}")
        checked = sorted({_check_version("each of versions", v) for v in raw})
        object.__setattr__(self, "versions", tuple(checked))

    def select(self, available: Sequence[int]) -> list[int]:
        present = set(available)
        return [v for v in self.versions if v in present]

    def missing(self, available: Sequence[int]) -> list[int]:
        """Requested versions absent from ``available``, ascending."""
        present = set(available)
        return [v for v in self.versions if v not in present]

    def __str__(self) -> str:
        return "specific { versions: [" + ", ".join(map(str, self.versions)) + "] }"
