"""pyserving.sources: discovering servable versions and telling a target about them.

A :class:`Source` sends complete aspired-version lists to a :class:`Target`;
:class:`SourceAdapter` converts them on the way (e.g. a storage path into a loader).
:class:`FileSystemSource` watches base paths for numeric version directories and chooses
among them with a version policy (:class:`LatestVersions`, :class:`AllVersions`,
:class:`SpecificVersions`).
"""

from pyserving.sources.file_system_source import FileSystemSource, WatchedServable
from pyserving.sources.source import (
    AspiredVersionsCallback,
    Source,
    SourceAdapter,
    Target,
    UnarySourceAdapter,
    connect,
)
from pyserving.sources.storage_path import StoragePath
from pyserving.sources.version_policy import AllVersions, LatestVersions, SpecificVersions

__all__ = [
    "AspiredVersionsCallback",
    "Source",
    "Target",
    "SourceAdapter",
    "UnarySourceAdapter",
    "connect",
    "StoragePath",
    "FileSystemSource",
    "WatchedServable",
    "LatestVersions",
    "AllVersions",
    "SpecificVersions",
]
