import pytest

from pyserving.servable import (
    LEGAL_TRANSITIONS,
    InternalError,
    InvalidArgumentError,
    ManagerState,
    NotFoundError,
    ServableData,
    ServableId,
    ServableState,
)

SID = ServableId("m", 1)


def test_states_only_move_forward():
    for state, nexts in LEGAL_TRANSITIONS.items():
        assert all(n > state for n in nexts), state
    assert LEGAL_TRANSITIONS[ManagerState.END] == frozenset()
    assert int(ManagerState.AVAILABLE) == 30  # TF Serving's ModelVersionStatus.State number


def test_servable_state_str_and_health():
    healthy = ServableState(SID, ManagerState.AVAILABLE)
    assert healthy.is_healthy and str(healthy) == "{name: m version: 1} AVAILABLE"
    failed = ServableState(SID, ManagerState.END, NotFoundError("gone"))
    assert not failed.is_healthy and "NOT_FOUND: gone" in str(failed)


def test_servable_data_value_or_error():
    ok = ServableData.of(SID, "path")
    assert ok.ok and ok.value == "path" and ok.error is None
    bad = ServableData.failed(SID, NotFoundError("missing"))
    assert not bad.ok
    with pytest.raises(NotFoundError):
        _ = bad.value
    with pytest.raises(InternalError):
        ServableData(SID)


def test_servable_data_map():
    assert ServableData.of(SID, 2).map(lambda v: v * 3).value == 6
    failed = ServableData.of(SID, "x").map(lambda v: int(v))
    assert isinstance(failed.error, InvalidArgumentError)
    err = NotFoundError("nope")
    assert ServableData.failed(SID, err).map(lambda v: v).error is err
    assert ServableData.of(SID, None).value is None
