""":class:`StoragePathAdapter`: turns the storage paths a source finds into loaders of one platform.

One adapter serves one platform (``"tensorflow"``, ``"python"``, a user's own registered
with :func:`~pyserving.loaders.platform.register_platform`) and its options::

    adapter = StoragePathAdapter("python")
    connect(file_system_source, adapter)
    connect(adapter, manager)

Each healthy incoming item ``ServableData(id, StoragePath)`` becomes
``ServableData(id, platform.create_loader(id, storage_path, options))``; incoming error
items pass through unchanged. Nothing is loaded here: a platform's ``create_loader`` is
cheap by contract.

Failures travel as error items, never as exceptions to the source:

* The platform is looked up once, at construction. When no platform of that name is
  registered (or its module cannot be imported), the adapter still constructs, logs one
  warning, and turns **every** item into ``INTERNAL`` "No platform found for model
  {name: m version: 1}: ..." — TF Serving's wording for its error-injecting adapter.
* An exception from ``create_loader`` (for example a rejected option) becomes that item's
  error, as does a value that is not a ``StoragePath`` or a factory result that is not a
  ``Loader``.

Threading: as :class:`~pyserving.sources.source.SourceAdapter`; the adapter keeps no
state besides the platform and the options (an immutable copy), so ``convert`` is safe to
call from any thread.

:func:`readiness_check` gives a file-system source the platform's readiness test.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pyserving.loaders.loader import Loader
from pyserving.loaders.platform import Platform, get_platform, platform_names
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    as_serving_error,
)
from pyserving.servable.ids import ServableId
from pyserving.sources.source import UnarySourceAdapter
from pyserving.sources.storage_path import StoragePath

__all__ = ["StoragePathAdapter", "readiness_check"]

_log = logging.getLogger(__name__)


class StoragePathAdapter(UnarySourceAdapter[StoragePath, Loader]):
    """Creates a loader of platform ``platform_name`` for each aspired storage path.

    ``options``: the platform's own settings, handed to every ``create_loader`` call
    (copied; later changes to the caller's mapping have no effect). Raises
    ``InvalidArgumentError`` only for a malformed ``platform_name`` or ``options``; an
    unknown platform is reported per item (see the module docstring).
    """

    def __init__(self, platform_name: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(platform_name, str) or not platform_name:
            raise InvalidArgumentError(f"platform_name must be a non-empty string, got {platform_name!r}")
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise InvalidArgumentError(f"options must be a mapping, got {type(options).__name__}")
        self._platform_name = platform_name
        self._options: Mapping[str, Any] = types.MappingProxyType(dict(options))
        self._platform: Platform | None = None
        self._unavailable = ""  # why the platform cannot be used; set only when _platform is None
        try:
            self._platform = get_platform(platform_name)
        except NotFoundError:
            known = ", ".join(platform_names())
            self._unavailable = f"platform {platform_name!r} is not registered; known platforms: {known}"
        except Exception as exc:  # noqa: BLE001 - the platform's lazy import failed
            reason = as_serving_error(exc).message
            self._unavailable = f"platform {platform_name!r} could not be loaded: {reason}"
        if self._platform is None:
            _log.warning(
                "%s; every model version sent to it will fail to load. Register the platform "
                "or correct the model's platform name.",
                self._unavailable[:1].upper() + self._unavailable[1:],
            )

    @property
    def platform_name(self) -> str:
        return self._platform_name

    @property
    def options(self) -> Mapping[str, Any]:
        """A read-only copy of the options given at construction."""
        return self._options

    def adapt(
        self, servable_name: str, versions: Sequence[ServableData[StoragePath]]
    ) -> list[ServableData[Loader]]:
        if self._platform is not None:
            return super().adapt(servable_name, versions)
        # Unknown platform: every item fails with the same cause; logged once, at construction.
        return [
            ServableData.failed(item.id, item.error if item.error is not None else self._no_platform(item.id))
            for item in versions
        ]

    def convert(self, data: ServableData[StoragePath]) -> Loader:
        """The platform's loader for ``data.value``; raises what a failed item should carry."""
        if self._platform is None:
            raise self._no_platform(data.id)
        storage_path = data.value
        if not isinstance(storage_path, StoragePath):
            raise InvalidArgumentError(
                f"{type(self).__name__} for platform {self._platform_name!r} expects a StoragePath "
                f"for {data.id}, got {type(storage_path).__name__}"
            )
        loader = self._platform.create_loader(data.id, storage_path, self._options)
        if not isinstance(loader, Loader):
            raise InternalError(
                f"platform {self._platform_name!r} returned {type(loader).__name__} for {data.id} "
                f"instead of a Loader"
            )
        return loader

    def _no_platform(self, servable_id: ServableId) -> InternalError:
        return InternalError(f"No platform found for model {servable_id}: {self._unavailable}")

    def __repr__(self) -> str:
        state = "" if self._platform is not None else " (not available)"
        return f"<StoragePathAdapter platform={self._platform_name!r}{state}>"


def readiness_check(platform_name: str) -> Callable[[Path], bool]:
    """The ``is_version_ready`` of platform ``platform_name``, for ``FileSystemSource``.

    Raises ``NotFoundError`` when no platform of that name is registered and
    ``InternalError`` when its module cannot be imported, so a misconfigured model fails
    at configuration time, not at its first poll.
    """
    try:
        return get_platform(platform_name).is_version_ready
    except ServingError:
        raise
    except Exception as exc:  # noqa: BLE001 - the platform's lazy import failed
        raise InternalError(
            f"platform {platform_name!r} could not be loaded: {as_serving_error(exc).message}"
        ) from exc
