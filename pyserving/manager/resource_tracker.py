""":class:`ResourceTracker`: the budget that loads reserve against.

Contract:

* ``total`` is the budget (``None`` = unlimited: every reservation fits, usage is still
  counted so :meth:`statistics` stays useful).
* :meth:`reserve` books a version's estimate if it fits in ``total - used`` and raises
  ``ResourceExhaustedError`` otherwise, naming the servable, the estimate, what is free and
  the total. A version holds at most one reservation; reserving twice for one id raises
  ``FailedPreconditionError`` (a manager bug).
* :meth:`release` frees a version's reservation; releasing an id without one does nothing,
  so failure paths may release unconditionally.
* Thread-safe: one lock guards the bookkeeping and is held only for arithmetic.

The manager reserves before ``Loader.load()`` and releases after a failed load, a
cancelled load, or ``Loader.unload()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pyserving.loaders.loader import Resources
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError
from pyserving.servable.ids import ServableId

__all__ = ["ResourceTracker", "ResourceTrackerStatistics"]


@dataclass(frozen=True, slots=True)
class ResourceTrackerStatistics:
    """``total``: the budget (``None`` = unlimited); ``used``: sum of reservations;
    ``free``: ``total - used`` (``None`` when unlimited); ``num_reservations``: versions
    holding a reservation; ``num_refusals``: reservations refused so far."""

    total: Resources | None
    used: Resources
    free: Resources | None
    num_reservations: int
    num_refusals: int


class ResourceTracker:
    def __init__(self, total: Resources | None = None) -> None:
        if total is not None and not isinstance(total, Resources):
            raise InvalidArgumentError(f"total must be Resources or None, got {total!r}")
        self._total = total
        self._lock = threading.Lock()  # guards _reserved, _used and _refusals
        self._reserved: dict[ServableId, Resources] = {}
        self._used = Resources()
        self._refusals = 0

    @property
    def total(self) -> Resources | None:
        return self._total

    def reserve(self, servable_id: ServableId, estimate: Resources) -> None:
        """Book ``estimate`` for ``servable_id``; raises ``ResourceExhaustedError`` if it does not fit."""
        if not isinstance(estimate, Resources):
            raise InvalidArgumentError(
                f"the resource estimate of servable {servable_id} must be Resources, got {estimate!r}"
            )
        with self._lock:
            if servable_id in self._reserved:
                raise FailedPreconditionError(f"Servable {servable_id} already holds a resource reservation")
            if self._total is not None:
                free = self._total - self._used
                if not estimate.fits_in(free):
                    self._refusals += 1
                    raise ResourceExhaustedError(
                        f"Insufficient resources to load servable {servable_id}: it needs an estimated "
                        f"{estimate}, but only {free} of {self._total} are free"
                    )
            self._reserved[servable_id] = estimate
            self._used = self._used + estimate

    def release(self, servable_id: ServableId) -> Resources | None:
        """Free ``servable_id``'s reservation; returns it, or ``None`` when there was none."""
        with self._lock:
            amount = self._reserved.pop(servable_id, None)
            if amount is not None:
                self._used = self._used - amount
            return amount

    def reservation(self, servable_id: ServableId) -> Resources | None:
        with self._lock:
            return self._reserved.get(servable_id)

    def used(self) -> Resources:
        with self._lock:
            return self._used

    def free(self) -> Resources | None:
        """``total - used``, or ``None`` when there is no budget."""
        with self._lock:
            return None if self._total is None else self._total - self._used

    def statistics(self) -> ResourceTrackerStatistics:
        with self._lock:
            return ResourceTrackerStatistics(
                total=self._total,
                used=self._used,
                free=None if self._total is None else self._total - self._used,
                num_reservations=len(self._reserved),
                num_refusals=self._refusals,
            )

    def __repr__(self) -> str:
        return f"ResourceTracker(total={self._total}, used={self.used()})"
