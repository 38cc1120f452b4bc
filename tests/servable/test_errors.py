import pytest

from pyserving.servable import errors as e


def test_codes_match_grpc_numbers():
    assert e.Code.OK == 0 and e.Code.NOT_FOUND == 5 and e.Code.UNAUTHENTICATED == 16
    assert e.Code.FAILED_PRECONDITION == 9 and e.Code.RESOURCE_EXHAUSTED == 8 and e.Code.UNAVAILABLE == 14


def test_from_code_picks_subclass_and_keeps_message():
    err = e.ServingError.from_code(e.Code.NOT_FOUND, "Servable not found for request: Latest(x)")
    assert isinstance(err, e.NotFoundError)
    assert err.code is e.Code.NOT_FOUND
    assert str(err) == "Servable not found for request: Latest(x)"
    assert "NOT_FOUND" in repr(err)
    assert err == e.NotFoundError("Servable not found for request: Latest(x)")
    assert e.ServingError.from_code(e.Code.OK, "odd").code is e.Code.OK


def test_every_code_but_ok_has_a_subclass():
    for code in e.Code:
        if code is e.Code.OK:
            continue
        assert type(e.ServingError.from_code(code, "m")) is not e.ServingError, code


@pytest.mark.parametrize(
    "exc, code",
    [
        (FileNotFoundError("no such file"), e.Code.NOT_FOUND),
        (PermissionError("denied"), e.Code.PERMISSION_DENIED),
        (MemoryError(), e.Code.RESOURCE_EXHAUSTED),
        (ValueError("bad"), e.Code.INVALID_ARGUMENT),
        (RuntimeError("boom"), e.Code.UNKNOWN),
    ],
)
def test_as_serving_error_translates(exc, code):
    err = e.as_serving_error(exc, "Loading {name: m version: 1} failed: ")
    assert err.code is code
    assert err.message.startswith("Loading {name: m version: 1} failed: ")
    assert type(exc).__name__ in err.message


def test_as_serving_error_keeps_serving_errors():
    original = e.UnavailableError("busy")
    assert e.as_serving_error(original) is original
    wrapped = e.as_serving_error(original, "ctx: ")
    assert wrapped.code is e.Code.UNAVAILABLE and wrapped.message == "ctx: busy"
