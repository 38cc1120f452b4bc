"""The two built-in policies as pure functions (TF Serving's exact semantics)."""

from __future__ import annotations

import pytest

from pyserving.manager.harness import HarnessState as S
from pyserving.manager.policy import (
    Action,
    AspiredVersionInfo,
    AvailabilityPreservingPolicy,
    ResourcePreservingPolicy,
)
from pyserving.servable.ids import ServableId


def v(version: int, state: S, aspired: bool) -> AspiredVersionInfo:
    return AspiredVersionInfo(ServableId("m", version), state, aspired)


def sid(version: int) -> ServableId:
    return ServableId("m", version)


AVAILABILITY_CASES = [
    # nothing managed / nothing to do
    ([], None),
    ([v(1, S.READY, True)], None),
    # first load: highest aspired NEW
    ([v(1, S.NEW, True), v(2, S.NEW, True)], Action.load(sid(2))),
    # new version loads before the old one is unloaded
    ([v(1, S.READY, False), v(2, S.NEW, True)], Action.load(sid(2))),
    # ... and the old one goes once the new one is ready
    ([v(1, S.READY, False), v(2, S.READY, True)], Action.unload(sid(1))),
    # a failed new version leaves the old one serving
    ([v(1, S.READY, False), v(2, S.ERROR, True)], None),
    # no aspired version at all: unload the lowest un-aspired ready one
    ([v(1, S.READY, False), v(2, S.READY, False)], Action.unload(sid(1))),
    # two un-aspired ready versions are reduced to one even while the new one is pending
    ([v(1, S.READY, False), v(2, S.READY, False), v(3, S.NEW, True)], Action.unload(sid(1))),
    # one un-aspired ready + aspired NEW: load first
    ([v(2, S.READY, False), v(3, S.NEW, True), v(4, S.NEW, True)], Action.load(sid(4))),
    # un-aspired versions that are not READY are not unloaded
    ([v(1, S.LOADING, False), v(2, S.NEW, True)], Action.load(sid(2))),
    # aspired versions that are not NEW are not loaded again
    ([v(1, S.DISABLED, True), v(2, S.ERROR, True)], None),
]


@pytest.mark.parametrize("versions, expected", AVAILABILITY_CASES)
def test_availability_preserving(versions: list[AspiredVersionInfo], expected: Action | None) -> None:
    policy = AvailabilityPreservingPolicy()
    assert policy.next_action(versions) == expected
    assert policy.next_action(versions) == expected  # pure: same snapshot, same answer


RESOURCE_CASES = [
    ([], None),
    ([v(1, S.NEW, True), v(3, S.NEW, True)], Action.load(sid(3))),
    # the old version is unloaded first
    ([v(1, S.READY, False), v(2, S.NEW, True)], Action.unload(sid(1))),
    # the first un-aspired ready version found (order given), not the lowest by rule
    ([v(2, S.READY, False), v(1, S.READY, False)], Action.unload(sid(2))),
    # wait while an un-aspired version is still on its way out (or in)
    ([v(1, S.UNLOADING, False), v(2, S.NEW, True)], None),
    ([v(1, S.QUIESCING, False), v(2, S.NEW, True)], None),
    ([v(1, S.LOADING, False), v(2, S.NEW, True)], None),
    # finished ones do not block the load
    ([v(1, S.DISABLED, False), v(0, S.ERROR, False), v(2, S.NEW, True)], Action.load(sid(2))),
    ([v(1, S.READY, True), v(2, S.NEW, True)], Action.load(sid(2))),
    ([v(1, S.READY, True)], None),
]


@pytest.mark.parametrize("versions, expected", RESOURCE_CASES)
def test_resource_preserving(versions: list[AspiredVersionInfo], expected: Action | None) -> None:
    policy = ResourcePreservingPolicy()
    assert policy.next_action(versions) == expected
    assert policy.next_action(versions) == expected
