"""pyserving.manager: turns aspired versions into loaded, servable versions.

* :class:`AspiredVersionsManager` — the target of a source of loaders; reconciles toward
  the aspired versions with an :class:`AspiredVersionPolicy` (the usual entry point).
* :class:`BasicManager` — load / unload / serve on explicit request.
* :class:`ServableStateMonitor` — the latest published state of every version.
* :class:`ResourceTracker` — the resource budget loads reserve against.
* :class:`LifecycleLog` — one readable log line per state change, plus load / unload /
  swap counters (:class:`LifecycleStatistics`); attach it to any manager's event bus.
* :class:`Router` — routes (:class:`Route`: weighted arms, sticky segments, header
  rules, shadow traffic) over any manager; per-arm statistics.
* :class:`ServingMap`, :class:`LoaderHarness` — the building blocks (snapshot of what is
  served; one version's state machine and handle count).
"""

from pyserving.manager.aspired_versions_manager import AspiredVersionsManager, AspiredVersionsManagerOptions
from pyserving.manager.basic_manager import BasicManager, BasicManagerOptions, DoneCallback
from pyserving.manager.harness import HARNESS_TRANSITIONS, HarnessState, LoaderHarness
from pyserving.manager.lifecycle_log import (
    LifecycleEvent,
    LifecycleLog,
    LifecycleStatistics,
    ModelLifecycleStatistics,
)
from pyserving.manager.policy import (
    Action,
    ActionKind,
    AspiredVersionInfo,
    AspiredVersionPolicy,
    AvailabilityPreservingPolicy,
    ResourcePreservingPolicy,
)
from pyserving.manager.resource_tracker import ResourceTracker, ResourceTrackerStatistics
from pyserving.manager.router import RouteChoice, Router, RoutingManager
from pyserving.manager.routes import Arm, HeaderRule, Route, Shadow, validate_routes
from pyserving.manager.serving_map import ServingEntry, ServingMap
from pyserving.manager.state_monitor import ServableStateAndTime, ServableStateMonitor

__all__ = [
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
