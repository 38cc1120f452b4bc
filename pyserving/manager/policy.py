"""Aspired-version policies: which load or unload a servable stream should do next.

A policy is a *pure function* from a snapshot of one stream — every managed version with
its harness state and whether it is still aspired — to at most one :class:`Action`. It
keeps no state, so calling it again with the same snapshot gives the same answer, and it
is tested without threads. The manager asks it only when no load or unload is under way
on that stream, and performs the action it returns.

Built-in policies (TF Serving's semantics):

* :class:`AvailabilityPreservingPolicy` (default): load the new version *before*
  unloading the old one, so a stream that had a version available keeps one available;
  if the new version fails, the old one keeps serving. Needs room for two versions.
* :class:`ResourcePreservingPolicy`: unload the old version *first*, then load the new
  one; the stream is briefly unavailable, but only one version uses resources at a time.

Example (AvailabilityPreservingPolicy; version 1 READY and no longer aspired, version 2
aspired and NEW)::

    next_action([Info(v1, READY, False), Info(v2, NEW, True)])    -> Action(LOAD, v2)
    next_action([Info(v1, READY, False), Info(v2, READY, True)])  -> Action(UNLOAD, v1)
    next_action([Info(v1, READY, False), Info(v2, ERROR, True)])  -> None  (v1 keeps serving)
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Sequence

from pyserving.manager.harness import HarnessState
from pyserving.servable.ids import ServableId

__all__ = [
    "ActionKind",
    "Action",
    "AspiredVersionInfo",
    "AspiredVersionPolicy",
    "AvailabilityPreservingPolicy",
    "ResourcePreservingPolicy",
]


class ActionKind(enum.Enum):
    LOAD = "load"
    UNLOAD = "unload"


@dataclass(frozen=True, slots=True)
class Action:
    """Load or unload exactly ``id``."""

    kind: ActionKind
    id: ServableId

    @classmethod
    def load(cls, servable_id: ServableId) -> Action:
        return cls(ActionKind.LOAD, servable_id)

    @classmethod
    def unload(cls, servable_id: ServableId) -> Action:
        return cls(ActionKind.UNLOAD, servable_id)


@dataclass(frozen=True, slots=True)
class AspiredVersionInfo:
    """One managed version of the stream: its id, harness state and whether it is aspired."""

    id: ServableId
    state: HarnessState
    is_aspired: bool


class AspiredVersionPolicy(abc.ABC):
    """Chooses the next action for one servable stream."""

    @abc.abstractmethod
    def next_action(self, versions: Sequence[AspiredVersionInfo]) -> Action | None:
        """The next action for the stream whose managed versions are ``versions``.

        ``versions`` all share one name, sorted by version ascending. Must be pure: no
        side effects, no state kept between calls. ``None`` means "nothing to do now".
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _highest_new_aspired(versions: Sequence[AspiredVersionInfo]) -> ServableId | None:
    candidates = [v.id for v in versions if v.is_aspired and v.state is HarnessState.NEW]
    return max(candidates, default=None)


class AvailabilityPreservingPolicy(AspiredVersionPolicy):
    """Load new versions before unloading old ones.

    1. Let U be the un-aspired READY versions. If no version is aspired, or some aspired
       version is READY, or U has more than one member: unload the lowest version in U.
    2. Otherwise load the highest aspired version that is still NEW.
    3. Otherwise do nothing.
    """

    def next_action(self, versions: Sequence[AspiredVersionInfo]) -> Action | None:
        unaspired_ready = [v.id for v in versions if not v.is_aspired and v.state is HarnessState.READY]
        if unaspired_ready:
            has_aspired = any(v.is_aspired for v in versions)
            has_aspired_ready = any(v.is_aspired and v.state is HarnessState.READY for v in versions)
            if not has_aspired or has_aspired_ready or len(unaspired_ready) > 1:
                return Action.unload(min(unaspired_ready))
        highest = _highest_new_aspired(versions)
        return Action.load(highest) if highest is not None else None


class ResourcePreservingPolicy(AspiredVersionPolicy):
    """Unload old versions before loading new ones.

    1. Unload the first un-aspired READY version (in the order given).
    2. Otherwise, if an un-aspired version is neither DISABLED nor in ERROR (it is still
       loading or unloading), wait.
    3. Otherwise load the highest aspired version that is still NEW.
    """

    def next_action(self, versions: Sequence[AspiredVersionInfo]) -> Action | None:
        for v in versions:
            if not v.is_aspired and v.state is HarnessState.READY:
                return Action.unload(v.id)
        finished = (HarnessState.DISABLED, HarnessState.ERROR)
        if any(not v.is_aspired and v.state not in finished for v in versions):
            return None
        highest = _highest_new_aspired(versions)
        return Action.load(highest) if highest is not None else None
