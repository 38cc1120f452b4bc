"""The top-level public API is small and pinned: adding or removing a name is a decision."""

import pyserving

EXPECTED = {
    "__version__",
    "ServableId", "ServableRequest", "ServableState", "ManagerState", "ServableData", "ServableHandle", "EventBus",
    "ServingError", "Code", "NotFoundError", "InvalidArgumentError", "FailedPreconditionError", "UnavailableError",
    "ResourceExhaustedError",
    "Source", "Target", "SourceAdapter", "connect", "StoragePath", "FileSystemSource", "WatchedServable",
    "LatestVersions", "AllVersions", "SpecificVersions",
    "Loader", "Resources", "SimpleLoader", "RetryPolicy", "StoragePathAdapter", "Platform", "register_platform",
    "readiness_check",
    "Batcher", "BatchScheduler", "BatchingServable", "BatchingParameters",
    "BasicManager", "BasicManagerOptions", "AspiredVersionsManager", "AspiredVersionsManagerOptions",
    "AvailabilityPreservingPolicy", "ResourcePreservingPolicy", "ResourceTracker", "ServableStateMonitor",
    "Router", "RouteChoice", "Route", "Arm", "HeaderRule", "Shadow",
}


def test_all_is_pinned():
    assert set(pyserving.__all__) == EXPECTED
    assert len(pyserving.__all__) == len(EXPECTED), "duplicate names in __all__"


def test_every_public_name_resolves():
    for name in pyserving.__all__:
        assert getattr(pyserving, name) is not None, name


def test_version_is_a_string():
    assert isinstance(pyserving.__version__, str) and pyserving.__version__.count(".") == 2
