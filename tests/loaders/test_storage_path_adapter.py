"""StoragePathAdapter: storage paths in, loaders (or error items) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from pyserving.loaders import (
    Loader,
    Platform,
    PythonModelLoader,
    SimpleLoader,
    StoragePathAdapter,
    readiness_check,
    register_platform,
)
from pyserving.servable.data import ServableData
from pyserving.servable.errors import Code, InternalError, InvalidArgumentError, NotFoundError, UnavailableError
from pyserving.servable.ids import ServableId
from pyserving.sources.source import connect
from pyserving.sources.storage_path import StoragePath
from pyserving.testing import FakeSource

MODEL_PY = "def create_servable(version_dir):\n    return {'version': version_dir.name}\n"


class Collector:
    """The adapter's downstream: keeps every list it is sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[ServableData[Loader]]]] = []

    def __call__(self, name: str, versions: Sequence[ServableData[Loader]]) -> None:
        self.calls.append((name, list(versions)))




def wire(adapter: StoragePathAdapter) -> tuple[FakeSource, Collector]:
    source, collector = FakeSource(), Collector()
    connect(source, adapter)
    adapter.set_aspired_versions_callback(collector)
    return source, collector


def version_dir(base: Path, version: int) -> Path:
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "model.py").write_text(MODEL_PY)
    return path


def test_python_adapter_produces_loaders(tmp_path: Path) -> None:
    one, two = version_dir(tmp_path, 1), version_dir(tmp_path, 2)
    adapter = StoragePathAdapter("python")
    source, collector = wire(adapter)
    source.set_aspired_versions(
        "m",
        [
            ServableData.of(ServableId("m", 1), StoragePath(str(one), "rev-1")),
            ServableData.of(ServableId("m", 2), StoragePath(str(two), "rev-2")),
        ],
    )
    [(name, items)] = collector.calls
    assert name == "m"
    assert [item.id for item in items] == [ServableId("m", 1), ServableId("m", 2)]
    loaders = [item.value for item in items]
    assert all(isinstance(loader, PythonModelLoader) for loader in loaders)
    assert [loader.revision for loader in loaders] == ["rev-1", "rev-2"]
    assert all(loader.servable is None for loader in loaders)  # nothing loaded by the adapter
    for loader in loaders:
        loader.load()
    assert [loader.servable for loader in loaders] == [{"version": "1"}, {"version": "2"}]
    for loader in loaders:
        loader.unload()


def test_lists_sent_before_wiring_are_forwarded(tmp_path: Path) -> None:
    adapter = StoragePathAdapter("python")
    item = ServableData.of(ServableId("m", 1), StoragePath(str(version_dir(tmp_path, 1))))
    adapter.get_aspired_versions_callback()("m", [item])
    collector = Collector()
    adapter.set_aspired_versions_callback(collector)
    [(name, [out])] = collector.calls
    assert name == "m" and isinstance(out.value, PythonModelLoader)


def test_error_items_pass_through_and_empty_lists_stay_empty() -> None:
    source, collector = wire(StoragePathAdapter("python"))
    error = NotFoundError("Could not find base path /x for servable m")
    source.set_aspired_versions("m", [ServableData.failed(ServableId("m", 3), error)])
    source.set_aspired_versions("m", [])
    assert collector.calls[0][1][0].error is error
    assert collector.calls[1] == ("m", [])


def test_options_reach_the_platform_and_are_copied(tmp_path: Path) -> None:
    received: list[Mapping[str, Any]] = []

    def create_loader(servable_id: ServableId, path: StoragePath, options: Mapping[str, Any]) -> Loader:
        received.append(options)
        return SimpleLoader(lambda: path.path)

    register_platform(Platform(name="recording", create_loader=create_loader))
    options = {"threads": 2}
    adapter = StoragePathAdapter("recording", options)
    options["threads"] = 99
    source, collector = wire(adapter)
    source.set_aspired_versions("m", [ServableData.of(ServableId("m", 1), StoragePath(str(tmp_path)))])
    assert received == [{"threads": 2}]
    assert adapter.options == {"threads": 2}
    with pytest.raises(TypeError):
        adapter.options["threads"] = 3  # type: ignore[index]


def test_unknown_platform_turns_every_item_into_an_error(tmp_path: Path) -> None:
    adapter = StoragePathAdapter("pytorch")  # constructs anyway: reported per item
    source, collector = wire(adapter)
    upstream_error = UnavailableError("file system busy")
    source.set_aspired_versions(
        "m",
        [
            ServableData.of(ServableId("m", 1), StoragePath(str(tmp_path / "1"))),
            ServableData.of(ServableId("m", 2), StoragePath(str(tmp_path / "2"))),
            ServableData.failed(ServableId("m", 3), upstream_error),
        ],
    )
    [(_, items)] = collector.calls
    first, second, third = items
    for item, version in ((first, 1), (second, 2)):
        assert isinstance(item.error, InternalError)
        assert item.error.code is Code.INTERNAL
        assert item.error.message.startswith(f"No platform found for model {{name: m version: {version}}}")
        assert "platform 'pytorch' is not registered" in item.error.message
        assert "python" in item.error.message  # names the known platforms
    assert third.error is upstream_error
    with pytest.raises(InternalError, match="No platform found for model"):
        adapter.convert(ServableData.of(ServableId("m", 1), StoragePath(str(tmp_path))))


def test_platform_whose_module_cannot_be_imported(tmp_path: Path) -> None:
    register_platform("ghost", "tests.loaders.no_such_module:PLATFORM")
    source, collector = wire(StoragePathAdapter("ghost"))
    source.set_aspired_versions("g", [ServableData.of(ServableId("g", 1), StoragePath(str(tmp_path)))])
    [(_, [item])] = collector.calls
    assert isinstance(item.error, InternalError)
    assert "platform 'ghost' could not be loaded" in item.error.message
    assert "no_such_module" in item.error.message


def test_convert_errors_become_error_items(tmp_path: Path) -> None:
    def create_loader(servable_id: ServableId, path: StoragePath, options: Mapping[str, Any]) -> Any:
        if servable_id.version == 1:
            raise InvalidArgumentError(f"bad option for {servable_id}")
        if servable_id.version == 2:
            return "not a loader"
        return SimpleLoader(lambda: 1)

    register_platform(Platform(name="picky", create_loader=create_loader))
    source, collector = wire(StoragePathAdapter("picky"))
    path = StoragePath(str(tmp_path))
    source.set_aspired_versions(
        "m",
        [
            ServableData.of(ServableId("m", 1), path),
            ServableData.of(ServableId("m", 2), path),
            ServableData.of(ServableId("m", 3), path),
            ServableData.of(ServableId("m", 4), str(tmp_path)),
        ],
    )
    [(_, [one, two, three, four])] = collector.calls
    assert isinstance(one.error, InvalidArgumentError) and "bad option for {name: m version: 1}" in one.error.message
    assert isinstance(two.error, InternalError) and "returned str" in two.error.message
    assert isinstance(three.value, SimpleLoader)
    assert isinstance(four.error, InvalidArgumentError) and "expects a StoragePath" in four.error.message


def test_python_platform_rejects_options_per_item(tmp_path: Path) -> None:
    source, collector = wire(StoragePathAdapter("python", {"warmup": True}))
    source.set_aspired_versions("m", [ServableData.of(ServableId("m", 1), StoragePath(str(tmp_path)))])
    [(_, [item])] = collector.calls
    assert isinstance(item.error, InvalidArgumentError)
    assert "takes no options" in item.error.message


@pytest.mark.parametrize(("name", "options"), [("", None), (None, None), ("python", ["a"])])
def test_malformed_arguments_are_rejected(name: Any, options: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        StoragePathAdapter(name, options)


def test_readiness_check(tmp_path: Path) -> None:
    is_ready = readiness_check("python")
    empty = tmp_path / "1"
    empty.mkdir()
    assert not is_ready(empty)
    assert is_ready(version_dir(tmp_path, 2))
    with pytest.raises(NotFoundError):
        readiness_check("pytorch")
    register_platform("ghost", "tests.loaders.no_such_module:PLATFORM")
    with pytest.raises(InternalError, match="platform 'ghost' could not be loaded"):
        readiness_check("ghost")
