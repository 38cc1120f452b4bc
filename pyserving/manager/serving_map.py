""":class:`ServingMap`: the immutable snapshot that answers "which version serves this request?".

A serving map holds one *entry* per loaded version (in the manager: its
:class:`~pyserving.manager.harness.LoaderHarness`) plus, per servable name, which entry
answers ``Latest`` (highest version) and ``Earliest`` (lowest version), and the name's
version labels.

Contract:

* A map is never changed after construction. Writers build a new map with
  :meth:`with_entry`, :meth:`without` or :meth:`with_labels` and *replace* the manager's
  reference to it; assigning an attribute is atomic in CPython, so a reader sees either
  the old or the new map, never a half-built one.
* Readers therefore take no lock: :meth:`lookup` is a kind dispatch plus one or two dict
  lookups. Writers serialize among themselves (read-copy-update) with a lock of their own
  that is never held while a servable loads or unloads.
* Resolution: ``Latest`` = highest version in the map, ``Earliest`` = lowest,
  ``Specific`` = exactly that version, ``Label`` = the version the name's label map
  assigns, then as ``Specific``. A miss raises
  ``NotFoundError("Servable not found for request: <request>")``; a label the name does
  not define raises ``InvalidArgumentError("Unrecognized servable version label: <label>")``
  as TF Serving does.

Only versions that can be handed out belong in a map; the manager adds a version after
it loaded and removes it before it starts to quiesce.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Generic, Iterable, Mapping, Protocol, TypeVar

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import RequestKind, ServableId, ServableRequest

__all__ = ["ServingMap", "ServingEntry"]


class ServingEntry(Protocol):
    """What a serving map stores: anything that knows its :class:`ServableId`."""

    @property
    def id(self) -> ServableId: ...


E = TypeVar("E", bound=ServingEntry)

_NO_LABELS: Mapping[str, int] = MappingProxyType({})


class ServingMap(Generic[E]):
    """An immutable ``{Specific / Latest / Earliest / Label -> entry}`` snapshot."""

    __slots__ = ("_specific", "_latest", "_earliest", "_labels")

    def __init__(
        self,
        entries: Iterable[E] = (),
        labels: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        specific: dict[tuple[str, int], E] = {}
        for entry in entries:
            specific[(entry.id.name, entry.id.version)] = entry
        self._specific = specific
        self._latest: dict[str, E] = {}
        self._earliest: dict[str, E] = {}
        for (name, version), entry in sorted(specific.items(), key=lambda kv: kv[0]):
            self._earliest.setdefault(name, entry)
            self._latest[name] = entry
        self._labels: dict[str, Mapping[str, int]] = {
            name: MappingProxyType(dict(name_labels)) for name, name_labels in (labels or {}).items() if name_labels
        }

    # -- reading (lock-free) ---------------------------------------------------------

    def lookup(self, request: ServableRequest) -> E:
        """The entry that answers ``request``; raises ``NotFoundError`` on a miss."""
        kind = request.kind
        if kind is RequestKind.LATEST:
            entry = self._latest.get(request.name)
        elif kind is RequestKind.SPECIFIC:
            entry = self._specific.get((request.name, request.version))  # type: ignore[arg-type]
        elif kind is RequestKind.EARLIEST:
            entry = self._earliest.get(request.name)
        else:
            version = self._labels.get(request.name, _NO_LABELS).get(request.version_label)  # type: ignore[arg-type]
            if version is None:
                raise InvalidArgumentError(f"Unrecognized servable version label: {request.version_label}")
            entry = self._specific.get((request.name, version))
        if entry is None:
            raise NotFoundError(f"Servable not found for request: {request}")
        return entry

    def get(self, servable_id: ServableId) -> E | None:
        """The entry of exactly ``servable_id``, or ``None``."""
        return self._specific.get((servable_id.name, servable_id.version))

    def __contains__(self, servable_id: object) -> bool:
        if not isinstance(servable_id, ServableId):
            return False
        return (servable_id.name, servable_id.version) in self._specific

    def __len__(self) -> int:
        return len(self._specific)

    def ids(self) -> list[ServableId]:
        """Every version in the map, sorted by name then version."""
        return sorted(entry.id for entry in self._specific.values())

    def entries(self) -> list[E]:
        """Every entry, sorted by id."""
        return sorted(self._specific.values(), key=lambda entry: entry.id)

    def labels(self, name: str) -> Mapping[str, int]:
        """The read-only label map of ``name`` (empty when it has none)."""
        return self._labels.get(name, _NO_LABELS)

    # -- building new snapshots ------------------------------------------------------

    def with_entry(self, entry: E) -> ServingMap[E]:
        """A new map that also serves ``entry`` (replacing one with the same id)."""
        entries = dict(self._specific)
        entries[(entry.id.name, entry.id.version)] = entry
        return ServingMap(entries.values(), self._labels)

    def without(self, servable_id: ServableId) -> ServingMap[E]:
        """A new map without ``servable_id`` (``self`` when it is not there)."""
        key = (servable_id.name, servable_id.version)
        if key not in self._specific:
            return self
        entries = dict(self._specific)
        del entries[key]
        return ServingMap(entries.values(), self._labels)

    def with_labels(self, name: str, labels: Mapping[str, int]) -> ServingMap[E]:
        """A new map whose label map for ``name`` is exactly ``labels`` (empty removes it)."""
        all_labels = dict(self._labels)
        all_labels[name] = dict(labels)
        return ServingMap(self._specific.values(), all_labels)

    def __repr__(self) -> str:
        return f"ServingMap({[str(i) for i in self.ids()]})"
