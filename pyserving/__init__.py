"""pyserving: TensorFlow-Serving-style model serving in Python.

The library follows TF Serving's architecture: a *source* (``FileSystemSource``) finds
versions of servables and tells, through an *adapter* (``StoragePathAdapter``), the
*manager* (``AspiredVersionsManager``) which versions it aspires to; the manager loads
them with their *loaders* under a version policy and hands out ``ServableHandle``s for
requests. ``pyserving-model-server`` and ``pyserving serve`` put TF Serving's gRPC and REST
APIs in front (``pyserving.server``, imported only when used).

Importing this package loads neither TensorFlow nor gRPC.
"""

from pyserving._version import __version__
from pyserving.loaders import (
    Batcher,
    BatchingParameters,
    BatchingServable,
    Loader,
    Platform,
    Resources,
    RetryPolicy,
    SimpleLoader,
    StoragePathAdapter,
    readiness_check,
    register_platform,
)
from pyserving.manager import (
    AspiredVersionsManager,
    AspiredVersionsManagerOptions,
    AvailabilityPreservingPolicy,
    BasicManager,
    BasicManagerOptions,
    ResourcePreservingPolicy,
    ResourceTracker,
    ServableStateMonitor,
)
from pyserving.manager.router import Router, RouteChoice
from pyserving.manager.routes import Arm, HeaderRule, Route, Shadow
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable import (
    Code,
    EventBus,
    FailedPreconditionError,
    InvalidArgumentError,
    ManagerState,
    NotFoundError,
    ResourceExhaustedError,
    ServableData,
    ServableHandle,
    ServableId,
    ServableRequest,
    ServableState,
    ServingError,
    UnavailableError,
)
from pyserving.sources import (
    AllVersions,
    FileSystemSource,
    LatestVersions,
    Source,
    SourceAdapter,
    SpecificVersions,
    StoragePath,
    Target,
    WatchedServable,
    connect,
)

__all__ = [
    "__version__",
    # vocabulary
    "ServableId",
    "ServableRequest",
    "ServableState",
    "ManagerState",
    "ServableData",
    "ServableHandle",
    "EventBus",
    # errors
    "ServingError",
    "Code",
    "NotFoundError",
    "InvalidArgumentError",
    "FailedPreconditionError",
    "UnavailableError",
    "ResourceExhaustedError",
    # sources
    "Source",
    "Target",
    "SourceAdapter",
    "connect",
    "StoragePath",
    "FileSystemSource",
    "WatchedServable",
    "LatestVersions",
    "AllVersions",
    "SpecificVersions",
    # loaders
    "Loader",
    "Resources",
    "SimpleLoader",
    "RetryPolicy",
    "StoragePathAdapter",
    "Platform",
    "register_platform",
    "readiness_check",
    # batching
    "Batcher",
    "BatchScheduler",
    "BatchingServable",
    "BatchingParameters",
    # manager
    "BasicManager",
    "BasicManagerOptions",
    "AspiredVersionsManager",
    "AspiredVersionsManagerOptions",
    "AvailabilityPreservingPolicy",
    "ResourcePreservingPolicy",
    "ResourceTracker",
    "ServableStateMonitor",
    # routing (A/B, canary, audience segments, shadow traffic)
    "Router",
    "RouteChoice",
    "Route",
    "Arm",
    "HeaderRule",
    "Shadow",
]
