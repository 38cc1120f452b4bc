"""ServingMap: resolution of every request kind, immutability, labels."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pyserving.manager.serving_map import ServingMap
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId, ServableRequest


@dataclass(frozen=True)
class Entry:
    id: ServableId


def entries(name: str, *versions: int) -> list[Entry]:
    return [Entry(ServableId(name, v)) for v in versions]


def test_latest_earliest_specific() -> None:
    smap = ServingMap(entries("a", 3, 1, 7) + entries("b", 2))
    assert smap.lookup(ServableRequest.latest("a")).id == ServableId("a", 7)
    assert smap.lookup(ServableRequest.earliest("a")).id == ServableId("a", 1)
    assert smap.lookup(ServableRequest.specific("a", 3)).id == ServableId("a", 3)
    assert smap.lookup(ServableRequest.latest("b")).id == ServableId("b", 2)
    assert smap.ids() == [ServableId("a", 1), ServableId("a", 3), ServableId("a", 7), ServableId("b", 2)]
    assert len(smap) == 4
    assert ServableId("a", 3) in smap and ServableId("a", 4) not in smap


@pytest.mark.parametrize(
    "request_, text",
    [
        (ServableRequest.latest("zz"), "Latest(zz)"),
        (ServableRequest.earliest("zz"), "Earliest(zz)"),
        (ServableRequest.specific("a", 2), "Specific(a, 2)"),
    ],
)
def test_miss_raises_not_found_with_tf_message(request_: ServableRequest, text: str) -> None:
    smap = ServingMap(entries("a", 1))
    with pytest.raises(NotFoundError) as info:
        smap.lookup(request_)
    assert info.value.message == f"Servable not found for request: {text}"


def test_snapshots_are_immutable() -> None:
    empty: ServingMap[Entry] = ServingMap()
    one = empty.with_entry(Entry(ServableId("a", 1)))
    two = one.with_entry(Entry(ServableId("a", 2)))
    assert len(empty) == 0 and len(one) == 1 and len(two) == 2
    assert one.lookup(ServableRequest.latest("a")).id.version == 1
    assert two.lookup(ServableRequest.latest("a")).id.version == 2
    back = two.without(ServableId("a", 2))
    assert back.lookup(ServableRequest.latest("a")).id.version == 1
    assert two.lookup(ServableRequest.latest("a")).id.version == 2
    assert back.without(ServableId("a", 9)) is back
    gone = back.without(ServableId("a", 1))
    with pytest.raises(NotFoundError):
        gone.lookup(ServableRequest.latest("a"))


def test_labels_resolve_through_specific() -> None:
    smap = ServingMap(entries("a", 1, 2)).with_labels("a", {"stable": 1, "canary": 2, "old": 0})
    assert smap.lookup(ServableRequest.label("a", "stable")).id.version == 1
    assert smap.lookup(ServableRequest.label("a", "canary")).id.version == 2
    with pytest.raises(NotFoundError) as info:
        smap.lookup(ServableRequest.label("a", "old"))
    assert info.value.message == "Servable not found for request: Label(a, old)"
    with pytest.raises(InvalidArgumentError) as info2:
        smap.lookup(ServableRequest.label("a", "nope"))
    assert info2.value.message == "Unrecognized servable version label: nope"
    # labels survive entry changes and can be cleared
    later = smap.without(ServableId("a", 1)).with_entry(Entry(ServableId("a", 3)))
    assert dict(later.labels("a")) == {"stable": 1, "canary": 2, "old": 0}
    assert dict(later.with_labels("a", {}).labels("a")) == {}
    assert dict(smap.labels("unknown")) == {}
