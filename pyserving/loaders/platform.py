"""Platforms: how a storage path becomes a :class:`Loader`, keyed by platform name.

A :class:`Platform` pairs a loader factory with a readiness check. The registry maps a
platform name (``"tensorflow"``, ``"python"``, a user's own) to a platform; built-in
platforms are registered by import path and imported only when first used, so the core
never imports TensorFlow.

Readiness check: ``is_version_ready(version_dir)`` answers whether the directory holds
everything the platform needs to *start* loading (``saved_model.pb`` for TensorFlow,
``model.py`` for Python). The file-system source combines it with a quiet period (no
file changed recently) to decide that a version is complete; see ``FileSystemSource``.

Threading: the registry is safe to read and write from any thread. Factories are called
on the thread that delivers aspired versions and must be cheap (construct, do not load).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pyserving.loaders.loader import Loader
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath

__all__ = [
    "Platform",
    "LoaderFactory",
    "register_platform",
    "get_platform",
    "platform_names",
    "detect_platform",
]

#: ``factory(servable_id, storage_path, options) -> Loader``; options are the
#: platform's own settings (e.g. ``{"saved_model_tags": ["serve"]}``).
LoaderFactory = Callable[[ServableId, StoragePath, Mapping[str, Any]], Loader]


@dataclass(frozen=True, slots=True)
class Platform:
    name: str
    create_loader: LoaderFactory
    is_version_ready: Callable[[Path], bool] = lambda _path: True


_lock = threading.Lock()  # guards _platforms and _lazy
_platforms: dict[str, Platform] = {}
#: name -> "module:attribute" of a Platform, imported on first use.
_lazy: dict[str, str] = {
    "python": "pyserving.loaders.python_platform:PYTHON_PLATFORM",
    "tensorflow": "pyserving.loaders.tensorflow_platform:TENSORFLOW_PLATFORM",
}


def register_platform(platform: Platform | str, target: str | None = None, *, replace: bool = False) -> None:
    """Register ``platform`` (or, lazily, ``name`` -> ``"module:attribute"``).

    Registering a taken name raises ``InvalidArgumentError`` unless ``replace``.
    """
    if isinstance(platform, Platform):
        name, value = platform.name, platform
    else:
        if not target or ":" not in target:
            raise InvalidArgumentError(f"a lazy platform needs 'module:attribute', got {target!r}")
        name, value = platform, target
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"platform name must be a non-empty string, got {name!r}")
    with _lock:
        if not replace and (name in _platforms or name in _lazy):
            raise InvalidArgumentError(f"platform {name!r} is already registered")
        _platforms.pop(name, None)
        _lazy.pop(name, None)
        if isinstance(value, Platform):
            _platforms[name] = value
        else:
            _lazy[name] = value


def get_platform(name: str) -> Platform:
    """The platform called ``name``; NOT_FOUND when none is registered."""
    with _lock:
        platform = _platforms.get(name)
        target = _lazy.get(name)
    if platform is not None:
        return platform
    if target is None:
        raise NotFoundError(
            f"No platform found for model platform {name!r}; known platforms: {', '.join(platform_names())}"
        )
    module_name, attribute = target.split(":", 1)
    platform = getattr(importlib.import_module(module_name), attribute)
    with _lock:
        _platforms.setdefault(name, platform)
        _lazy.pop(name, None)
        return _platforms[name]


def platform_names() -> list[str]:
    with _lock:
        return sorted(set(_platforms) | set(_lazy))


def detect_platform(version_dir: Path) -> str | None:
    """The platform whose readiness check accepts ``version_dir`` (``None`` when none does).

    TensorFlow is asked first, then Python, then any other registered platform by name.
    Used where the user named a folder but no platform (``pyserving serve``,
    ``--model_base_path``).
    """
    names = platform_names()
    order = [n for n in ("tensorflow", "python") if n in names] + [n for n in names if n not in ("tensorflow", "python")]
    for name in order:
        try:
            if get_platform(name).is_version_ready(version_dir):
                return name
        except Exception:  # noqa: BLE001 - a broken third-party platform must not break detection
            continue
    return None
