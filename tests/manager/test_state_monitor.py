"""ServableStateMonitor: recording, ordering, log, forgetting, waiting and notifications."""

from __future__ import annotations

import threading

import pytest

from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.errors import DeadlineExceededError, InternalError, InvalidArgumentError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState


def sid(name: str, version: int) -> ServableId:
    return ServableId(name, version)


@pytest.fixture()
def bus() -> EventBus[ServableState]:
    return EventBus()


def test_latest_state_per_version_descending(bus: EventBus[ServableState]) -> None:
    clock = iter(range(100))
    monitor = ServableStateMonitor(bus, clock=lambda: float(next(clock)))
    bus.publish(ServableState(sid("a", 1), M.START))
    bus.publish(ServableState(sid("a", 2), M.START))
    bus.publish(ServableState(sid("a", 1), M.LOADING))
    bus.publish(ServableState(sid("b", 5), M.AVAILABLE))
    assert monitor.get_state(sid("a", 1)) == ServableState(sid("a", 1), M.LOADING)
    assert monitor.get_state(sid("a", 9)) is None
    assert [s.id.version for s in monitor.get_version_states("a")] == [2, 1]
    assert monitor.get_version_states("nope") == []
    assert monitor.get_state_and_time(sid("a", 1)).time_s == 2.0  # type: ignore[union-attr]
    assert list(monitor.get_all_states()) == ["a", "b"]
    assert monitor.get_available_states() == {"b": [ServableState(sid("b", 5), M.AVAILABLE)]}


def test_bounded_log_and_forget_unloaded(bus: EventBus[ServableState]) -> None:
    monitor = ServableStateMonitor(bus, max_log_events=3)
    for state in (M.START, M.LOADING, M.AVAILABLE, M.UNLOADING, M.END):
        bus.publish(ServableState(sid("a", 1), state))
    bus.publish(ServableState(sid("a", 2), M.AVAILABLE))
    assert [e.state.manager_state for e in monitor.get_log()] == [M.UNLOADING, M.END, M.AVAILABLE]
    assert list(monitor.get_live_states()) == ["a"] and len(monitor.get_live_states()["a"]) == 1
    monitor.forget_unloaded()
    assert [s.id.version for s in monitor.get_version_states("a")] == [2]
    no_log = ServableStateMonitor(bus, max_log_events=0)
    bus.publish(ServableState(sid("a", 3), M.START))
    assert no_log.get_log() == []
    with pytest.raises(InvalidArgumentError):
        ServableStateMonitor(bus, max_log_events=-1)


def test_wait_until_specific_and_latest(bus: EventBus[ServableState]) -> None:
    monitor = ServableStateMonitor(bus)
    result: dict = {}

    def waiter() -> None:
        result.update(monitor.wait_until([sid("a", 2), ServableRequest.latest("b")], M.AVAILABLE, timeout_s=10))

    thread = threading.Thread(target=waiter)
    thread.start()
    bus.publish(ServableState(sid("a", 2), M.LOADING))
    bus.publish(ServableState(sid("b", 7), M.LOADING))
    bus.publish(ServableState(sid("a", 2), M.AVAILABLE))
    err = InternalError("broken")
    bus.publish(ServableState(sid("b", 7), M.END, err))  # END also satisfies the wait
    thread.join(10)
    assert not thread.is_alive()
    assert result == {
        sid("a", 2): ServableState(sid("a", 2), M.AVAILABLE),
        sid("b", 7): ServableState(sid("b", 7), M.END, err),
    }


def test_latest_prefers_goal_over_end(bus: EventBus[ServableState]) -> None:
    monitor = ServableStateMonitor(bus)
    bus.publish(ServableState(sid("a", 3), M.END, InternalError("x")))
    bus.publish(ServableState(sid("a", 1), M.AVAILABLE))
    assert list(monitor.wait_until([ServableRequest.latest("a")], M.AVAILABLE, timeout_s=0)) == [sid("a", 1)]
    assert list(monitor.wait_until([ServableRequest.earliest("a")], M.AVAILABLE, timeout_s=0)) == [sid("a", 1)]


def test_wait_until_times_out_naming_the_request(bus: EventBus[ServableState]) -> None:
    monitor = ServableStateMonitor(bus)
    bus.publish(ServableState(sid("a", 1), M.LOADING))
    with pytest.raises(DeadlineExceededError) as info:
        monitor.wait_until([ServableRequest.latest("a"), sid("a", 1)], M.AVAILABLE, timeout_s=0.01)
    assert "Latest(a)" in info.value.message and "Specific(a, 1)" in info.value.message
    with pytest.raises(InvalidArgumentError):
        monitor.wait_until([ServableRequest.label("a", "x")], M.AVAILABLE)


def test_notify_when_runs_once(bus: EventBus[ServableState]) -> None:
    monitor = ServableStateMonitor(bus)
    calls: list[dict] = []
    monitor.notify_when([sid("a", 1)], M.AVAILABLE, calls.append)
    bus.publish(ServableState(sid("a", 1), M.LOADING))
    assert calls == []
    bus.publish(ServableState(sid("a", 1), M.AVAILABLE))
    bus.publish(ServableState(sid("a", 1), M.UNLOADING))
    assert calls == [{sid("a", 1): ServableState(sid("a", 1), M.AVAILABLE)}]
    # already satisfied: called at once on the caller's thread
    monitor.notify_when([ServableRequest.latest("a")], M.UNLOADING, calls.append)
    assert len(calls) == 2
    monitor.close()
    bus.publish(ServableState(sid("a", 1), M.END))
    assert monitor.get_state(sid("a", 1)).manager_state is M.UNLOADING  # type: ignore[union-attr]
