"""The platform registry: register, duplicates, replace, lazy import, unknown names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import pytest

from pyserving.loaders import Loader, Platform, SimpleLoader, get_platform, platform_names, register_platform
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath


def make_loader(servable_id: ServableId, storage_path: StoragePath, options: Mapping[str, Any]) -> Loader:
    return SimpleLoader(lambda: (servable_id, storage_path.path, dict(options)), revision=storage_path.revision)


#: Imported lazily by name in test_lazy_registration_imports_on_first_use.
LAZY_PLATFORM = Platform(name="lazy-test", create_loader=make_loader)




def test_builtin_platforms_are_known_without_importing_them() -> None:
    names = platform_names()
    assert {"python", "tensorflow"} <= set(names)
    assert names == sorted(names)


def test_register_and_get() -> None:
    platform = Platform(name="custom", create_loader=make_loader)
    register_platform(platform)
    assert get_platform("custom") is platform
    assert "custom" in platform_names()
    assert platform.is_version_ready(Path("/anything"))  # default readiness: always ready
    loader = platform.create_loader(ServableId("m", 1), StoragePath("/models/m/1", "r"), {"k": 1})
    loader.load()
    assert loader.servable == (ServableId("m", 1), "/models/m/1", {"k": 1})


def test_duplicate_name_is_rejected() -> None:
    register_platform(Platform(name="custom", create_loader=make_loader))
    with pytest.raises(InvalidArgumentError, match="platform 'custom' is already registered"):
        register_platform(Platform(name="custom", create_loader=make_loader))
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_platform("python", "some.module:PLATFORM")  # a lazy built-in counts too


def test_replace() -> None:
    first = Platform(name="custom", create_loader=make_loader)
    second = Platform(name="custom", create_loader=make_loader, is_version_ready=lambda _path: False)
    register_platform(first)
    register_platform(second, replace=True)
    assert get_platform("custom") is second
    replacement = Platform(name="python", create_loader=make_loader)
    register_platform(replacement, replace=True)  # a lazy entry is replaced without importing it
    assert get_platform("python") is replacement


def test_lazy_registration_imports_on_first_use() -> None:
    module_name = "tests.loaders.test_platform"
    register_platform("lazy-test", f"{module_name}:LAZY_PLATFORM")
    assert "lazy-test" in platform_names()
    platform = get_platform("lazy-test")
    assert platform.name == "lazy-test"
    assert platform.create_loader.__name__ == "make_loader"
    assert module_name in sys.modules
    assert get_platform("lazy-test") is platform  # imported once, then cached


@pytest.mark.parametrize("target", [None, "", "no_colon_here"])
def test_lazy_target_must_name_module_and_attribute(target: str | None) -> None:
    with pytest.raises(InvalidArgumentError, match="needs 'module:attribute'"):
        register_platform("lazy-bad", target)


def test_platform_name_must_be_non_empty() -> None:
    with pytest.raises(InvalidArgumentError, match="platform name must be a non-empty string"):
        register_platform(Platform(name="", create_loader=make_loader))


def test_unknown_platform_is_not_found() -> None:
    with pytest.raises(NotFoundError) as info:
        get_platform("pytorch")
    assert "'pytorch'" in info.value.message
    assert "python" in info.value.message  # lists the known platforms


def test_detect_platform_by_readiness(tmp_path):
    from pyserving.loaders.platform import detect_platform

    saved = tmp_path / "tf"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    py = tmp_path / "py"
    py.mkdir()
    (py / "model.py").write_text("def create_servable(d):\n    return 1\n")
    both = tmp_path / "both"
    both.mkdir()
    (both / "saved_model.pb").write_bytes(b"")
    (both / "model.py").write_text("")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_platform(saved) == "tensorflow"
    assert detect_platform(py) == "python"
    assert detect_platform(both) == "tensorflow"
    assert detect_platform(empty) is None
