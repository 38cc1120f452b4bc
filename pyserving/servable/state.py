"""The published life cycle of a servable version: :class:`ManagerState` and :class:`ServableState`.

A version moves only forward through the public states::

    START -> LOADING -> AVAILABLE -> UNLOADING -> END
      |         |
      +---------+------------------------------> END (with an error in ``health``)

* ``START``: the manager knows the version and will decide whether to load it.
* ``LOADING``: the loader's ``load()`` is running (retries included).
* ``AVAILABLE``: published only once the version can be handed out to requests.
* ``UNLOADING``: published *before* the version stops being handed out.
* ``END``: the version is gone; ``health`` is ``None`` after a clean unload, or the
  :class:`ServingError` that ended it (load failure, resources exhausted, cancelled load,
  an error sent by the source).

Numeric values equal TF Serving's ``ModelVersionStatus.State`` so the servers can copy them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pyserving.servable.errors import ServingError
from pyserving.servable.ids import ServableId

__all__ = ["ManagerState", "ServableState", "LEGAL_TRANSITIONS"]


class ManagerState(enum.IntEnum):
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


#: Every move a published state may make; anything else is a bug in the manager.
LEGAL_TRANSITIONS: dict[ManagerState, frozenset[ManagerState]] = {
    ManagerState.START: frozenset({ManagerState.LOADING, ManagerState.END}),
    ManagerState.LOADING: frozenset({ManagerState.AVAILABLE, ManagerState.END}),
    ManagerState.AVAILABLE: frozenset({ManagerState.UNLOADING}),
    ManagerState.UNLOADING: frozenset({ManagerState.END}),
    ManagerState.END: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ServableState:
    """One published state of one version: what the event bus carries.

    ``health`` is ``None`` when healthy, else the error that sent the version to END.
    """

    id: ServableId
    manager_state: ManagerState
    health: ServingError | None = None

    @property
    def is_healthy(self) -> bool:
        return self.health is None

    def __str__(self) -> str:
        text = f"{self.id} {self.manager_state.name}"
        if self.health is not None:
            text += f" (error: {self.health.code.name}: {self.health.message})"
        return text
