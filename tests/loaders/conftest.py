"""Fixtures shared by the loader tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from pyserving.loaders import platform as registry


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    """Each test starts from, and leaves behind, the platform registry as it was."""
    with registry._lock:
        platforms, lazy = dict(registry._platforms), dict(registry._lazy)
    yield
    with registry._lock:
        registry._platforms.clear()
        registry._platforms.update(platforms)
        registry._lazy.clear()
        registry._lazy.update(lazy)
