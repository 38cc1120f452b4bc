import pytest

from pyserving.servable import InvalidArgumentError, RequestKind, ServableId, ServableRequest


def test_servable_id_str_and_order():
    assert str(ServableId("mnist", 3)) == "{name: mnist version: 3}"
    ids = [ServableId("b", 1), ServableId("a", 2), ServableId("a", 1)]
    assert sorted(ids) == [ServableId("a", 1), ServableId("a", 2), ServableId("b", 1)]
    assert ServableId("a", 1) == ServableId("a", 1)
    assert len({ServableId("a", 1), ServableId("a", 1)}) == 1


@pytest.mark.parametrize("name, version", [("", 1), (None, 1), ("m", -1), ("m", 1.0), ("m", True), ("m", "3")])
def test_servable_id_rejects_bad_values(name, version):
    with pytest.raises(InvalidArgumentError):
        ServableId(name, version)


def test_servable_id_is_frozen():
    sid = ServableId("m", 1)
    with pytest.raises(AttributeError):
        sid.version = 2  # type: ignore[misc]


def test_request_constructors_and_str():
    assert str(ServableRequest.latest("foo")) == "Latest(foo)"
    assert str(ServableRequest.earliest("foo")) == "Earliest(foo)"
    assert str(ServableRequest.specific("foo", 3)) == "Specific(foo, 3)"
    assert str(ServableRequest.label("foo", "canary")) == "Label(foo, canary)"
    assert ServableRequest.for_id(ServableId("foo", 4)) == ServableRequest.specific("foo", 4)
    req = ServableRequest.label("foo", "stable")
    assert req.kind is RequestKind.LABEL and req.version_label == "stable" and req.version is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: ServableRequest.latest(""),
        lambda: ServableRequest.specific("foo", -2),
        lambda: ServableRequest.specific("foo", None),  # type: ignore[arg-type]
        lambda: ServableRequest.label("foo", ""),
        lambda: ServableRequest("foo", RequestKind.LATEST, version=3),
        lambda: ServableRequest("foo", RequestKind.SPECIFIC, version=3, version_label="x"),
        lambda: ServableRequest("foo", "Latest"),  # type: ignore[arg-type]
    ],
)
def test_request_validation(build):
    with pytest.raises(InvalidArgumentError):
        build()
