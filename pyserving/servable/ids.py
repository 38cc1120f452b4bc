"""Names for servables: :class:`ServableId` and :class:`ServableRequest`.

A *servable stream* is every version of one servable name; a :class:`ServableId` names
one version of it. A :class:`ServableRequest` says which version a caller wants and is
built only through its named constructors::

    ServableRequest.latest("mnist")        # highest AVAILABLE version   -> "Latest(mnist)"
    ServableRequest.earliest("mnist")      # lowest AVAILABLE version    -> "Earliest(mnist)"
    ServableRequest.specific("mnist", 3)   # exactly version 3           -> "Specific(mnist, 3)"
    ServableRequest.label("mnist", "canary")  # the version the label names -> "Label(mnist, canary)"

The ``str()`` forms are TF Serving's and appear verbatim in NOT_FOUND messages
("Servable not found for request: Latest(mnist)"). Both classes are frozen, hashable and
validated on construction (an invalid value raises :class:`InvalidArgumentError`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import total_ordering

from pyserving.servable.errors import InvalidArgumentError

__all__ = ["ServableId", "ServableRequest", "RequestKind"]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"servable name must be a non-empty string, got {name!r}")
    return name


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidArgumentError(f"servable version must be an int, got {version!r}")
    if version < 0:
        raise InvalidArgumentError(f"servable version must be >= 0, got {version}")
    return version


@total_ordering
@dataclass(frozen=True, slots=True)
class ServableId:
    """One version of one servable: ``{name: mnist version: 3}``.

    Ordered by name, then version. ``version`` is a non-negative int.
    """

    name: str
    version: int

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_version(self.version)

    def __str__(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ServableId):
            return NotImplemented
        return (self.name, self.version) < (other.name, other.version)


class RequestKind(enum.Enum):
    """How a :class:`ServableRequest` chooses a version."""

    LATEST = "Latest"
    EARLIEST = "Earliest"
    SPECIFIC = "Specific"
    LABEL = "Label"


@dataclass(frozen=True, slots=True)
class ServableRequest:
    """Which version of a servable a caller wants. Build it with the named constructors."""

    name: str
    kind: RequestKind
    version: int | None = None
    version_label: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.kind, RequestKind):
            raise InvalidArgumentError(f"request kind must be a RequestKind, got {self.kind!r}")
        if self.kind is RequestKind.SPECIFIC:
            _check_version(self.version)
        elif self.version is not None:
            raise InvalidArgumentError(f"a {self.kind.value} request takes no version")
        if self.kind is RequestKind.LABEL:
            if not isinstance(self.version_label, str) or not self.version_label:
                raise InvalidArgumentError(
                    f"version label must be a non-empty string, got {self.version_label!r}"
                )
        elif self.version_label is not None:
            raise InvalidArgumentError(f"a {self.kind.value} request takes no label")

    @classmethod
    def latest(cls, name: str) -> ServableRequest:
        """The highest-numbered AVAILABLE version of ``name``."""
        return cls(name, RequestKind.LATEST)

    @classmethod
    def earliest(cls, name: str) -> ServableRequest:
        """The lowest-numbered AVAILABLE version of ``name``."""
        return cls(name, RequestKind.EARLIEST)

    @classmethod
    def specific(cls, name: str, version: int) -> ServableRequest:
        """Exactly ``version`` of ``name``."""
        return cls(name, RequestKind.SPECIFIC, version=version)

    @classmethod
    def label(cls, name: str, label: str) -> ServableRequest:
        """The version that ``label`` currently points to."""
        return cls(name, RequestKind.LABEL, version_label=label)

    @classmethod
    def for_id(cls, servable_id: ServableId) -> ServableRequest:
        """The request for exactly ``servable_id``."""
        return cls.specific(servable_id.name, servable_id.version)

    def __str__(self) -> str:
        if self.kind is RequestKind.SPECIFIC:
            return f"Specific({self.name}, {self.version})"
        if self.kind is RequestKind.LABEL:
            return f"Label({self.name}, {self.version_label})"
        return f"{self.kind.value}({self.name})"
