"""Pins the public names of pyserving.manager; changing them is a deliberate API change."""

from __future__ import annotations

import pyserving.manager as manager


def test_public_names() -> None:
    assert sorted(manager.__all__) == sorted(
        [
            "AspiredVersionsManager",
            "AspiredVersionsManagerOptions",
            "BasicManager",
            "BasicManagerOptions",
            "DoneCallback",
            "HarnessState",
            "HARNESS_TRANSITIONS",
            "LoaderHarness",
            "LifecycleEvent",
            "LifecycleLog",
            "LifecycleStatistics",
            "ModelLifecycleStatistics",
            "Action",
            "ActionKind",
            "AspiredVersionInfo",
            "AspiredVersionPolicy",
            "AvailabilityPreservingPolicy",
            "ResourcePreservingPolicy",
            "ResourceTracker",
            "ResourceTrackerStatistics",
            "Router",
            "RouteChoice",
            "RoutingManager",
            "Route",
            "Arm",
            "HeaderRule",
            "Shadow",
            "validate_routes",
            "ServingEntry",
            "ServingMap",
            "ServableStateAndTime",
            "ServableStateMonitor",
        ]
    )
    for name in manager.__all__:
        assert getattr(manager, name) is not None


def test_aspired_versions_manager_is_a_target() -> None:
    from pyserving.sources.source import Target

    assert issubclass(manager.AspiredVersionsManager, Target)
