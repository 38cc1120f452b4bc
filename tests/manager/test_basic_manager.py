"""BasicManager: manage / load / unload / handles / resources / labels / stop."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from pyserving.loaders.loader import Resources
from pyserving.manager.basic_manager import BasicManager, BasicManagerOptions
from pyserving.manager.harness import HarnessState
from pyserving.manager.resource_tracker import ResourceTracker
from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    CancelledError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServingError,
    UnavailableError,
)
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState
from tests.support.polling import poll_until as wait_for
from pyserving.testing import FakeLoader


def sid(version: int, name: str = "m") -> ServableId:
    return ServableId(name, version)


class Recorder:
    """Collects every published state (the bus calls it on the publisher's thread)."""

    def __init__(self, bus: EventBus[ServableState]) -> None:
        self._lock = threading.Lock()  # guards events
        self.events: list[ServableState] = []
        bus.subscribe(self._on)

    def _on(self, state: ServableState) -> None:
        with self._lock:
            self.events.append(state)

    def of(self, servable_id: ServableId) -> list[M]:
        with self._lock:
            return [e.manager_state for e in self.events if e.id == servable_id]


class Done:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.errors: list[ServingError | None] = []

    def __call__(self, error: ServingError | None) -> None:
        self.errors.append(error)
        self.event.set()

    def wait(self) -> ServingError | None:
        assert self.event.wait(10), "done was never called"
        assert len(self.errors) == 1
        return self.errors[0]




@pytest.fixture()
def bus() -> EventBus[ServableState]:
    return EventBus()


def make(bus: EventBus[ServableState], **kwargs: object) -> BasicManager:
    options = dict(num_load_threads=0, num_unload_threads=0, max_num_load_retries=0, load_retry_interval_s=0.0)
    options.update(kwargs)
    return BasicManager(BasicManagerOptions(event_bus=bus, **options))  # type: ignore[arg-type]


@pytest.fixture()
def inline(bus: EventBus[ServableState]) -> Iterator[BasicManager]:
    manager = make(bus)
    yield manager
    manager.stop()


def test_load_serve_unload_publishes_the_life_cycle(bus: EventBus[ServableState], inline: BasicManager) -> None:
    rec = Recorder(bus)
    loader = FakeLoader(sid(1), payload="one")
    inline.manage(ServableData.of(sid(1), loader))
    assert rec.of(sid(1)) == [M.START]
    with pytest.raises(NotFoundError, match=r"Servable not found for request: Latest\(m\)"):
        inline.get_handle(ServableRequest.latest("m"))
    done = Done()
    inline.load(sid(1), done)
    assert done.wait() is None
    assert rec.of(sid(1)) == [M.START, M.LOADING, M.AVAILABLE]
    assert inline.list_available_ids() == [sid(1)]
    with inline.get_handle(ServableRequest.specific("m", 1)) as handle:
        assert handle.id == sid(1) and handle.servable.payload == "one"
    inline.unload(sid(1))
    assert rec.of(sid(1)) == [M.START, M.LOADING, M.AVAILABLE, M.UNLOADING, M.END]
    assert loader.unload_calls == 1 and inline.list_available_ids() == []
    inline.stop_managing(sid(1))
    assert inline.managed_harnesses() == []


def test_duplicate_manage_load_and_unload_are_refused(inline: BasicManager) -> None:
    inline.manage(ServableData.of(sid(1), FakeLoader(sid(1))))
    with pytest.raises(FailedPreconditionError) as info:
        inline.manage(ServableData.of(sid(1), FakeLoader(sid(1))))
    assert info.value.message == "This servable is already being managed: {name: m version: 1}"
    with pytest.raises(FailedPreconditionError, match="Servable not loaded, or unload already requested/ongoing"):
        inline.unload(sid(1))
    inline.load(sid(1))
    with pytest.raises(FailedPreconditionError, match="Duplicate load request"):
        inline.load(sid(1))
    with pytest.raises(FailedPreconditionError, match="only NEW, ERROR or DISABLED"):
        inline.stop_managing(sid(1))
    with pytest.raises(NotFoundError):
        inline.load(sid(9))
    with pytest.raises(InvalidArgumentError, match="must hold a Loader"):
        inline.manage(ServableData.of(sid(2), "not a loader"))


def test_error_item_is_recorded_as_end(bus: EventBus[ServableState], inline: BasicManager) -> None:
    monitor = ServableStateMonitor(bus)
    err = UnavailableError("Could not read /models/m/3")
    inline.manage(ServableData.failed(sid(3), err))
    assert monitor.get_state(sid(3)) == ServableState(sid(3), M.END, err)
    assert inline.managed_harnesses()[0].state is HarnessState.ERROR
    inline.stop_managing(sid(3))


def test_load_failure_after_retries_ends_with_error(bus: EventBus[ServableState]) -> None:
    manager = make(bus, max_num_load_retries=2)
    monitor = ServableStateMonitor(bus)
    loader = FakeLoader(sid(1), fail_times=-1)
    manager.manage(ServableData.of(sid(1), loader))
    done = Done()
    manager.load(sid(1), done)
    error = done.wait()
    assert isinstance(error, InternalError)
    assert error.message.startswith("Loading servable {name: m version: 1} failed: ")
    assert loader.load_calls == 3
    assert monitor.get_state(sid(1)) == ServableState(sid(1), M.END, error)
    assert manager.resource_tracker.used() == Resources()
    manager.stop()


def test_resource_budget_refusal(bus: EventBus[ServableState]) -> None:
    tracker = ResourceTracker(Resources(ram_bytes=1000))
    manager = make(bus, resource_tracker=tracker)
    monitor = ServableStateMonitor(bus)
    manager.manage(ServableData.of(sid(1), FakeLoader(sid(1), ram_bytes=700)))
    manager.manage(ServableData.of(sid(2), FakeLoader(sid(2), ram_bytes=700)))
    manager.load(sid(1))
    manager.load(sid(2))
    state = monitor.get_state(sid(2))
    assert state is not None and state.manager_state is M.END
    assert isinstance(state.health, ResourceExhaustedError)
    assert state.health.message == (
        "Insufficient resources to load servable {name: m version: 2}: it needs an estimated 700 B, "
        "but only 300 B of 1000 B are free"
    )
    assert tracker.used() == Resources(700)
    manager.unload(sid(1))
    assert tracker.used() == Resources()
    manager.stop()


def test_reservation_waits_for_a_running_unload(bus: EventBus[ServableState]) -> None:
    tracker = ResourceTracker(Resources(ram_bytes=1000))
    manager = make(bus, resource_tracker=tracker, num_load_threads=1, num_unload_threads=1)
    monitor = ServableStateMonitor(bus)
    manager.manage(ServableData.of(sid(1), FakeLoader(sid(1), ram_bytes=700)))
    manager.load(sid(1))
    monitor.wait_until([sid(1)], M.AVAILABLE, timeout_s=10)
    held = manager.get_handle(ServableRequest.latest("m"))  # keeps the unload quiescing
    manager.unload(sid(1))
    monitor.wait_until([sid(1)], M.UNLOADING, timeout_s=10)
    manager.manage(ServableData.of(sid(2), FakeLoader(sid(2), ram_bytes=700)))
    done = Done()
    manager.load(sid(2), done)
    # the reservation was refused once and is now waiting for the unload to finish
    assert wait_for(lambda: tracker.statistics().num_refusals == 1)
    assert not done.event.is_set()
    held.release()
    assert done.wait() is None
    assert manager.list_available_ids() == [sid(2)]
    manager.stop()


def test_unload_waits_for_handles(bus: EventBus[ServableState]) -> None:
    manager = make(bus, num_unload_threads=1)
    monitor = ServableStateMonitor(bus)
    loader = FakeLoader(sid(1))
    manager.manage(ServableData.of(sid(1), loader))
    manager.load(sid(1))
    handle = manager.get_handle(ServableRequest.latest("m"))
    done = Done()
    manager.unload(sid(1), done)
    monitor.wait_until([sid(1)], M.UNLOADING, timeout_s=10)
    with pytest.raises(NotFoundError):
        manager.get_handle(ServableRequest.latest("m"))  # no longer handed out ...
    assert not done.event.is_set()
    assert handle.servable.unloaded is False  # ... but still alive for its holder
    servable = handle.servable
    handle.release()
    assert done.wait() is None
    assert servable.unloaded is True and loader.unload_calls == 1
    manager.stop()


def test_cancelled_retries_end_cancelled(bus: EventBus[ServableState]) -> None:
    manager = make(bus, num_load_threads=1, max_num_load_retries=5, load_retry_interval_s=60.0)
    monitor = ServableStateMonitor(bus)
    loader = FakeLoader(sid(1), fail_times=-1)
    manager.manage(ServableData.of(sid(1), loader))
    done = Done()
    manager.load(sid(1), done)
    monitor.wait_until([sid(1)], M.LOADING, timeout_s=10)
    manager.cancel_load_retries(sid(1))
    error = done.wait()
    assert isinstance(error, CancelledError)
    assert error.message == "Loading of servable {name: m version: 1} cancelled"
    assert loader.load_calls == 1
    manager.stop()


def test_labels_follow_tf_validation(inline: BasicManager) -> None:
    for v in (1, 2):
        inline.manage(ServableData.of(sid(v), FakeLoader(sid(v), payload=v)))
        inline.load(sid(v))
    inline.set_version_labels("m", {"stable": 1, "canary": 2})
    assert inline.get_version_labels("m") == {"stable": 1, "canary": 2}
    with inline.get_handle(ServableRequest.label("m", "canary")) as handle:
        assert handle.servable.payload == 2
    with pytest.raises(FailedPreconditionError) as info:
        inline.set_version_labels("m", {"stable": 3})
    assert info.value.message == (
        "Request to assign label to version 3 of model m, which is not currently available for inference"
    )
    assert inline.get_version_labels("m") == {"stable": 1, "canary": 2}  # unchanged on refusal
    # allow_unavailable: a new or unchanged label may point anywhere, a moved one may not
    inline.set_version_labels("m", {"stable": 1, "canary": 2, "next": 3}, allow_unavailable=True)
    inline.unload(sid(1))
    inline.set_version_labels("m", {"stable": 1, "next": 3}, allow_unavailable=True)
    with pytest.raises(FailedPreconditionError, match="version 4 of model m"):
        inline.set_version_labels("m", {"stable": 4}, allow_unavailable=True)
    with pytest.raises(NotFoundError, match=r"Label\(m, stable\)"):
        inline.get_handle(ServableRequest.label("m", "stable"))
    with pytest.raises(InvalidArgumentError):
        inline.set_version_labels("m", {"bad": -1})


def test_stop_unloads_everything_and_joins_workers(bus: EventBus[ServableState]) -> None:
    before = set(threading.enumerate())
    manager = make(bus, num_load_threads=2, num_unload_threads=2)
    monitor = ServableStateMonitor(bus)
    loaders = {v: FakeLoader(sid(v, f"s{v}")) for v in range(4)}
    for v, loader in loaders.items():
        manager.manage(ServableData.of(sid(v, f"s{v}"), loader))
        manager.load(sid(v, f"s{v}"))
    monitor.wait_until([sid(v, f"s{v}") for v in loaders], M.AVAILABLE, timeout_s=10)
    available = manager.get_available_handles()
    assert len(available) == 4
    for handle in available.values():
        handle.release()
    manager.stop()
    manager.stop()  # idempotent
    assert all(loader.unload_calls == 1 for loader in loaders.values())
    assert all(monitor.get_state(sid(v, f"s{v}")).manager_state is M.END for v in loaders)  # type: ignore[union-attr]
    assert set(threading.enumerate()) <= before
    with pytest.raises(FailedPreconditionError, match="stopped"):
        manager.manage(ServableData.of(sid(9), FakeLoader(sid(9))))


def test_options_are_validated() -> None:
    with pytest.raises(InvalidArgumentError, match="num_load_threads must be an int >= 0, got -1"):
        BasicManagerOptions(num_load_threads=-1)
    with pytest.raises(InvalidArgumentError, match="max_num_load_retries"):
        BasicManagerOptions(max_num_load_retries=1.5)  # type: ignore[arg-type]
