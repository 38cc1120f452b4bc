"""pyserving.loaders: how a servable version is loaded, sized and unloaded.

* :class:`Loader`, :class:`Resources` — the interface every loader implements.
* :class:`SimpleLoader` — a loader made from a factory function.
* :class:`RetryPolicy`, :func:`load_with_retries` — retrying a failing load.
* :class:`Platform`, :func:`register_platform`, :func:`get_platform`, :func:`platform_names`
  — the registry of platforms (how a storage path becomes a loader).
* :class:`StoragePathAdapter`, :func:`readiness_check` — storage paths to loaders of one platform.
* :class:`PythonModelLoader` — the ``"python"`` platform's loader (``model.py`` convention).

The TensorFlow platform is not imported here: it is registered lazily under
``"tensorflow"`` and imported only when a model uses it.
"""

from pyserving.loaders.batcher import Batcher
from pyserving.loaders.batching import BatchingServable
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.loaders.loader import Loader, Resources
from pyserving.loaders.platform import Platform, get_platform, platform_names, register_platform
from pyserving.loaders.python_platform import PythonModelLoader
from pyserving.loaders.retry import RetryPolicy, load_with_retries
from pyserving.loaders.simple_loader import SimpleLoader
from pyserving.loaders.storage_path_adapter import StoragePathAdapter, readiness_check

__all__ = [
    "Loader",
    "Resources",
    "RetryPolicy",
    "load_with_retries",
    "SimpleLoader",
    "StoragePathAdapter",
    "Platform",
    "register_platform",
    "get_platform",
    "platform_names",
    "readiness_check",
    "PythonModelLoader",
    "Batcher",
    "BatchingServable",
    "BatchingParameters",
]
