"""The Source/Target/SourceAdapter contracts of pyserving.sources.source."""

from __future__ import annotations

import threading
from typing import Sequence

import pytest

from pyserving.servable.data import ServableData
from pyserving.servable.errors import FailedPreconditionError, NotFoundError, ServingError
from pyserving.servable.ids import ServableId
from pyserving.sources import (
    AspiredVersionsCallback,
    SourceAdapter,
    Target,
    UnarySourceAdapter,
    connect,
)
from pyserving.testing import FakeSource


class RecordingTarget(Target[object]):
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[ServableData[object]]]] = []
        self._lock = threading.Lock()  # guards calls

    def get_aspired_versions_callback(self) -> AspiredVersionsCallback[object]:
        return self._record

    def _record(self, name: str, versions: Sequence[ServableData[object]]) -> None:
        with self._lock:
            self.calls.append((name, list(versions)))


class Upper(UnarySourceAdapter[str, str]):
    def convert(self, data: ServableData[str]) -> str:
        if data.value == "boom":
            raise ValueError("cannot convert boom")
        return data.value.upper()


class CountVersions(SourceAdapter[str, int]):
    def adapt(self, servable_name: str, versions: Sequence[ServableData[str]]) -> list[ServableData[int]]:
        return [ServableData.of(item.id, len(versions)) for item in versions]


def values(items: Sequence[ServableData[object]]) -> list[object]:
    return [item.value if item.ok else item.error for item in items]


def test_connect_sends_the_source_lists_to_the_target():
    source, target = FakeSource(), RecordingTarget()
    connect(source, target)
    source.aspire("m", {1: "a", 2: "b"})
    assert [(name, values(items)) for name, items in target.calls] == [("m", ["a", "b"])]


def test_a_source_accepts_only_one_callback():
    source = FakeSource()
    connect(source, RecordingTarget())
    with pytest.raises(FailedPreconditionError):
        connect(source, RecordingTarget())


def test_unary_adapter_converts_each_item():
    source, adapter, target = FakeSource(), Upper(), RecordingTarget()
    connect(source, adapter)
    connect(adapter, target)
    source.aspire("m", {1: "a", 3: "c"})
    name, items = target.calls[-1]
    assert name == "m"
    assert [item.id.version for item in items] == [1, 3]
    assert values(items) == ["A", "C"]


def test_unary_adapter_turns_a_conversion_failure_into_that_items_error():
    source, adapter, target = FakeSource(), Upper(), RecordingTarget()
    connect(source, adapter)
    connect(adapter, target)
    source.aspire("m", {1: "boom", 2: "fine"})
    items = target.calls[-1][1]
    assert not items[0].ok and isinstance(items[0].error, ServingError)
    message = items[0].error.message
    assert "{name: m version: 1}" in message and "cannot convert boom" in message
    assert items[1].value == "FINE"


def test_unary_adapter_passes_incoming_errors_through():
    source, adapter, target = FakeSource(), Upper(), RecordingTarget()
    connect(source, adapter)
    connect(adapter, target)
    error = NotFoundError("no such directory")
    source.set_aspired_versions("m", [ServableData.failed(ServableId("m", 4), error)])
    (item,) = target.calls[-1][1]
    assert item.id == ServableId("m", 4) and item.error == error


def test_adapter_keeps_the_latest_list_per_stream_until_it_is_connected():
    source, adapter, target = FakeSource(), Upper(), RecordingTarget()
    connect(source, adapter)
    source.aspire("a", {1: "old"})
    source.aspire("a", {2: "new"})
    source.aspire("b", {1: "x"})
    assert target.calls == []
    connect(adapter, target)
    assert sorted((name, values(items)) for name, items in target.calls) == [("a", ["NEW"]), ("b", ["X"])]
    source.aspire("a", {3: "later"})
    assert values(target.calls[-1][1]) == ["LATER"]


def test_adapter_accepts_only_one_outgoing_callback():
    adapter = Upper()
    connect(adapter, RecordingTarget())
    with pytest.raises(FailedPreconditionError):
        connect(adapter, RecordingTarget())


def test_adapter_sees_the_whole_list_at_once():
    source, adapter, target = FakeSource(), CountVersions(), RecordingTarget()
    connect(source, adapter)
    connect(adapter, target)
    source.aspire("m", {1: "a", 2: "b", 3: "c"})
    assert values(target.calls[-1][1]) == [3, 3, 3]
    source.set_aspired_versions("m", [])
    assert target.calls[-1] == ("m", [])
