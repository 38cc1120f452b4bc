"""SimpleLoader: a loader made from a factory function."""

from __future__ import annotations

import gc
import weakref

import pytest

from pyserving.loaders import Loader, Resources, SimpleLoader
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError


class Table:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_load_keeps_the_factory_result_and_unload_closes_it() -> None:
    calls: list[Table] = []

    def factory() -> Table:
        calls.append(Table())
        return calls[-1]

    loader = SimpleLoader(factory, resources=Resources(ram_bytes=4096), revision="r7")
    assert isinstance(loader, Loader)
    assert calls == []  # construction calls nothing
    assert loader.servable is None
    assert loader.estimate_resources() == Resources(ram_bytes=4096)
    assert loader.revision == "r7"

    loader.load()
    table = loader.servable
    assert calls == [table]
    loader.unload()
    assert table.closed == 1
    assert loader.servable is None


def test_defaults() -> None:
    loader = SimpleLoader(lambda: 42)
    assert loader.estimate_resources() == Resources()
    assert loader.revision is None
    loader.load()
    assert loader.servable == 42
    loader.unload()  # no close() on an int: nothing to call


def test_custom_unloader_replaces_close() -> None:
    seen: list[Table] = []
    loader = SimpleLoader(Table, unloader=seen.append)
    loader.load()
    table = loader.servable
    loader.unload()
    assert seen == [table]
    assert table.closed == 0


def test_failed_factory_keeps_nothing_and_load_can_be_retried() -> None:
    attempts: list[int] = []

    def factory() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk not mounted yet")
        return "ready"

    loader = SimpleLoader(factory)
    with pytest.raises(OSError, match="disk not mounted yet"):
        loader.load()
    assert loader.servable is None
    loader.load()
    assert loader.servable == "ready"


def test_factory_returning_none_is_an_error() -> None:
    loader = SimpleLoader(lambda: None)
    with pytest.raises(FailedPreconditionError, match="factory returned None"):
        loader.load()
    assert loader.servable is None


def test_unloader_error_propagates_after_the_reference_is_dropped() -> None:
    def unloader(_servable: Table) -> None:
        raise RuntimeError("flush failed")

    loader = SimpleLoader(Table, unloader=unloader)
    loader.load()
    with pytest.raises(RuntimeError, match="flush failed"):
        loader.unload()
    assert loader.servable is None


def test_unload_releases_the_servable() -> None:
    loader = SimpleLoader(Table)
    loader.load()
    ref = weakref.ref(loader.servable)
    loader.unload()
    gc.collect()
    assert ref() is None


def test_double_load_and_unload_without_load_are_bugs() -> None:
    loader = SimpleLoader(Table)
    with pytest.raises(FailedPreconditionError, match="not loaded"):
        loader.unload()
    loader.load()
    with pytest.raises(FailedPreconditionError, match="already loaded"):
        loader.load()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factory": 3}, "factory must be callable"),
        ({"factory": Table, "unloader": "close"}, "unloader must be callable"),
        ({"factory": Table, "resources": 10}, "resources must be a Resources"),
        ({"factory": Table, "revision": 5}, "revision must be a str"),
    ],
)
def test_arguments_are_validated(kwargs: dict[str, object], message: str) -> None:
    factory = kwargs.pop("factory")
    with pytest.raises(InvalidArgumentError, match=message):
        SimpleLoader(factory, **kwargs)  # type: ignore[arg-type]
