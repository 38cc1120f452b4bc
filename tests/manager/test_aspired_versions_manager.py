"""AspiredVersionsManager driven step by step (run_background_thread=False)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from pyserving.loaders.loader import Resources
from pyserving.manager.aspired_versions_manager import AspiredVersionsManager, AspiredVersionsManagerOptions
from pyserving.manager.harness import HarnessState
from pyserving.manager.policy import ResourcePreservingPolicy
from pyserving.manager.resource_tracker import ResourceTracker
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    CancelledError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState
from pyserving.sources.source import connect
from tests.support.polling import poll_until as wait_for
from pyserving.testing import FakeLoader, FakeSource


def sid(version: int, name: str = "m") -> ServableId:
    return ServableId(name, version)




class Rig:
    """A manager without its thread, a FakeSource wired to it, and helpers."""

    def __init__(self, **options: object) -> None:
        defaults: dict[str, object] = dict(
            num_load_threads=0, num_unload_threads=0, max_num_load_retries=0,
            load_retry_interval_s=0.0, run_background_thread=False,
        )
        defaults.update(options)
        self.manager = AspiredVersionsManager(AspiredVersionsManagerOptions(**defaults))  # type: ignore[arg-type]
        self.source = FakeSource()
        connect(self.source, self.manager)
        self.loaders: dict[ServableId, FakeLoader] = {}

    def aspire(self, name: str, versions: dict[int, FakeLoader | None] | list[int]) -> None:
        items = []
        spec = versions if isinstance(versions, dict) else {v: None for v in versions}
        for version, loader in sorted(spec.items()):
            servable_id = sid(version, name)
            if loader is None:
                loader = self.loaders.get(servable_id) or FakeLoader(servable_id, payload=version)
            self.loaders[servable_id] = loader
            items.append(ServableData.of(servable_id, loader))
        self.source.set_aspired_versions(name, items)

    def settle(self, limit: int = 20) -> int:
        """Step until a step changes nothing; returns the number of steps that did something."""
        for count in range(limit):
            if not self.manager.step():
                return count
        raise AssertionError("the manager never settled")

    def state(self, servable_id: ServableId) -> ServableState | None:
        return self.manager.monitor.get_state(servable_id)

    def manager_states(self, servable_id: ServableId) -> list[M]:
        return [e.state.manager_state for e in self.manager.monitor.get_log() if e.state.id == servable_id]

    def available(self) -> list[ServableId]:
        return self.manager.list_available_ids()


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.manager.stop()


def test_availability_preserving_loads_new_before_unloading_old(rig: Rig) -> None:
    rig.aspire("m", [1])
    assert rig.manager.step() is True
    assert rig.available() == [sid(1)]
    rig.aspire("m", [2])
    rig.manager.step()  # un-aspires 1, loads 2 (1 still serving)
    assert rig.available() == [sid(1), sid(2)]
    rig.manager.step()  # now unloads 1
    assert rig.available() == [sid(2)]
    rig.settle()
    assert [h.id for h in rig.manager._basic.managed_harnesses()] == [sid(2)]  # 1 forgotten
    assert rig.manager_states(sid(1)) == [M.START, M.LOADING, M.AVAILABLE, M.UNLOADING, M.END]
    assert rig.loaders[sid(1)].unload_calls == 1
    # omission = unload: an empty list unloads every version
    rig.aspire("m", [])
    rig.settle()
    assert rig.available() == []
    assert rig.state(sid(2)) == ServableState(sid(2), M.END)
    assert rig.manager.step() is False


def test_resource_preserving_unloads_first() -> None:
    rig = Rig(policy=ResourcePreservingPolicy())
    try:
        rig.aspire("m", [1])
        rig.settle()
        rig.aspire("m", [2])
        rig.manager.step()  # unloads 1 first
        assert rig.available() == []
        assert rig.state(sid(2)).manager_state is M.START  # type: ignore[union-attr]
        rig.manager.step()  # 1 is forgotten, then 2 loads
        assert rig.available() == [sid(2)]
    finally:
        rig.manager.stop()


def test_loaded_version_that_stays_aspired_is_never_unloaded(rig: Rig) -> None:
    rig.aspire("m", [1])
    rig.settle()
    rig.aspire("m", [1, 2])
    rig.settle()
    rig.aspire("m", [1, 2, 3])
    rig.settle()
    assert rig.available() == [sid(1), sid(2), sid(3)]
    assert rig.loaders[sid(1)].unload_calls == 0 and rig.loaders[sid(1)].load_calls == 1


def test_failed_new_version_leaves_old_one_serving(rig: Rig) -> None:
    rig.aspire("m", [1])
    rig.settle()
    broken = FakeLoader(sid(2), fail_times=-1)
    rig.aspire("m", {2: broken})
    rig.settle()
    state = rig.state(sid(2))
    assert state is not None and state.manager_state is M.END and isinstance(state.health, InternalError)
    assert "{name: m version: 2}" in state.health.message
    with rig.manager.get_handle(ServableRequest.latest("m")) as handle:
        assert handle.id == sid(1)
    # the source repeats the same list: the failed version is not retried
    rig.aspire("m", {2: FakeLoader(sid(2))})
    rig.settle()
    assert broken.load_calls == 1 and rig.available() == [sid(1)]


def test_retries_then_success() -> None:
    rig = Rig(max_num_load_retries=3, load_retry_interval_s=0.0)
    try:
        loader = FakeLoader(sid(1), fail_times=2)
        rig.aspire("m", {1: loader})
        rig.settle()
        assert loader.load_calls == 3
        assert rig.available() == [sid(1)]
        assert rig.manager_states(sid(1)) == [M.START, M.LOADING, M.AVAILABLE]
    finally:
        rig.manager.stop()


def test_unaspiring_cancels_load_retries_quickly() -> None:
    rig = Rig(num_load_threads=1, max_num_load_retries=5, load_retry_interval_s=60.0)
    try:
        loader = FakeLoader(sid(1), fail_times=-1)
        rig.aspire("m", {1: loader})
        rig.manager.step()  # starts the load on the pool; the first attempt fails, then waits 60 s
        assert wait_for(lambda: loader.load_calls == 1)
        rig.aspire("m", [])
        rig.manager.step()  # un-aspires and cancels the retry wait
        states = rig.manager.monitor.wait_until([sid(1)], M.END, timeout_s=10)
        health = states[sid(1)].health
        assert isinstance(health, CancelledError)
        assert health.message == "Loading of servable {name: m version: 1} cancelled"
        assert loader.load_calls == 1
        rig.settle()
        assert rig.manager._basic.managed_harnesses() == []
    finally:
        rig.manager.stop()


def test_resource_budget_refusal_keeps_the_old_version() -> None:
    tracker = ResourceTracker(Resources(ram_bytes=1000))
    rig = Rig(resource_tracker=tracker)
    try:
        rig.aspire("m", {1: FakeLoader(sid(1), ram_bytes=600)})
        rig.settle()
        rig.aspire("m", {2: FakeLoader(sid(2), ram_bytes=600)})
        rig.settle()
        health = rig.state(sid(2)).health  # type: ignore[union-attr]
        assert isinstance(health, ResourceExhaustedError)
        assert health.message == (
            "Insufficient resources to load servable {name: m version: 2}: it needs an estimated 600 B, "
            "but only 400 B of 1000 B are free"
        )
        assert rig.available() == [sid(1)] and tracker.used() == Resources(600)
    finally:
        rig.manager.stop()


def test_failed_version_is_retried_when_its_revision_changes(rig: Rig) -> None:
    rig.aspire("m", {1: FakeLoader(sid(1), fail_times=-1, revision="r1")})
    rig.settle()
    assert rig.state(sid(1)).manager_state is M.END  # type: ignore[union-attr]
    # same revision, or an unknown one: stays failed
    rig.aspire("m", {1: FakeLoader(sid(1), revision="r1")})
    rig.settle()
    rig.aspire("m", {1: FakeLoader(sid(1), revision=None)})
    rig.settle()
    assert rig.available() == []
    # a new revision: the failure is forgotten and the new loader starts afresh
    fixed = FakeLoader(sid(1), payload="fixed", revision="r2")
    rig.aspire("m", {1: fixed})
    rig.settle()
    assert rig.available() == [sid(1)]
    assert rig.manager_states(sid(1)) == [M.START, M.LOADING, M.END, M.START, M.LOADING, M.AVAILABLE]
    with rig.manager.get_handle(ServableRequest.latest("m")) as handle:
        assert handle.servable.payload == "fixed"


def test_error_item_is_recorded_without_disturbing_the_stream(rig: Rig) -> None:
    rig.aspire("m", [1])
    rig.settle()
    error = UnavailableError("Cannot prepare {name: m version: 2}: unreadable")
    rig.source.set_aspired_versions(
        "m", [ServableData.of(sid(1), rig.loaders[sid(1)]), ServableData.failed(sid(2), error)]
    )
    rig.settle()
    assert rig.state(sid(2)) == ServableState(sid(2), M.END, error)
    assert rig.available() == [sid(1)]
    assert rig.loaders[sid(1)].load_calls == 1


def test_items_naming_another_servable_are_dropped(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.source.set_aspired_versions(
        "m", [ServableData.of(sid(1), FakeLoader(sid(1))), ServableData.of(sid(1, "other"), FakeLoader())]
    )
    rig.settle()
    assert rig.available() == [sid(1)]
    assert "Dropping aspired version {name: other version: 1}" in caplog.text
    rig.source.set_aspired_versions("m", [ServableData.of(sid(2), "not a loader")])
    rig.settle()
    assert isinstance(rig.state(sid(2)).health, InvalidArgumentError)  # type: ignore[union-attr]


def test_reaspired_version_waits_until_it_was_forgotten() -> None:
    rig = Rig(num_unload_threads=1)
    try:
        rig.aspire("m", [1])
        rig.settle()
        holder = rig.manager.get_handle(ServableRequest.specific("m", 1))
        rig.aspire("m", [])
        rig.manager.step()  # unload of 1 starts and quiesces on the held handle
        rig.manager.monitor.wait_until([sid(1)], M.UNLOADING, timeout_s=10)
        rig.aspire("m", {1: FakeLoader(sid(1), payload="again")})
        rig.manager.step()  # postponed: 1 is still un-aspired and unloading
        assert rig.available() == []
        holder.release()
        rig.manager.monitor.wait_until([sid(1)], M.END, timeout_s=10)
        rig.settle()  # forgets the old 1, then manages and loads the new one
        with rig.manager.get_handle(ServableRequest.latest("m")) as handle:
            assert handle.servable.payload == "again"
    finally:
        rig.manager.stop()


def test_streams_load_in_parallel_but_each_does_one_action_at_a_time() -> None:
    rig = Rig(num_load_threads=4)
    gate = threading.Event()
    try:
        a = {v: FakeLoader(sid(v, "a"), gate=gate) for v in (1, 2)}
        b = FakeLoader(sid(1, "b"), gate=gate)
        rig.aspire("a", a)  # type: ignore[arg-type]
        rig.aspire("b", {1: b})
        rig.manager.step()
        # both streams are loading at once ...
        assert wait_for(lambda: a[2].load_calls == 1 and b.load_calls == 1)
        # ... but stream "a" loads only its highest version, and nothing more while it is busy
        assert rig.manager.step() is False
        assert a[1].load_calls == 0
        harness_states = {h.id: h.state for h in rig.manager._basic.managed_harnesses()}
        assert harness_states[sid(1, "a")] is HarnessState.NEW
        gate.set()
        rig.manager.monitor.wait_until([sid(2, "a"), sid(1, "b")], M.AVAILABLE, timeout_s=10)
        rig.manager.step()  # now the next action of "a"
        rig.manager.monitor.wait_until([sid(1, "a")], M.AVAILABLE, timeout_s=10)
        assert rig.available() == [sid(1, "a"), sid(2, "a"), sid(1, "b")]
    finally:
        gate.set()
        rig.manager.stop()


def test_labels_delegate_to_the_basic_manager(rig: Rig) -> None:
    rig.aspire("m", [1, 2])
    rig.settle()
    rig.manager.set_version_labels("m", {"stable": 1, "canary": 2})
    assert rig.manager.get_version_labels("m") == {"stable": 1, "canary": 2}
    with rig.manager.get_handle(ServableRequest.label("m", "stable")) as handle:
        assert handle.id == sid(1)
    with pytest.raises(NotFoundError):
        rig.manager.get_handle(ServableRequest.latest("nope"))


def test_background_thread_reacts_and_stop_cleans_up() -> None:
    before = set(threading.enumerate())
    FakeLoader.reset_live_count()
    manager = AspiredVersionsManager(
        AspiredVersionsManagerOptions(manage_state_interval_s=30.0, load_retry_interval_s=60.0)
    )
    source = FakeSource()
    connect(source, manager)
    manager.start()
    manager.start()  # idempotent
    stuck = FakeLoader(sid(1, "stuck"), fail_times=-1)
    source.set_aspired_versions("stuck", [ServableData.of(sid(1, "stuck"), stuck)])
    source.aspire("m", {1: FakeLoader(sid(1))})
    # a 30 s interval: only the wake-ups make this fast
    manager.monitor.wait_until([sid(1)], M.AVAILABLE, timeout_s=10)
    assert wait_for(lambda: stuck.load_calls == 1)
    manager.stop()  # cancels the 60 s retry wait of "stuck" and unloads "m"
    manager.stop()
    assert FakeLoader.live_count() == 0
    assert isinstance(manager.monitor.get_state(sid(1, "stuck")).health, CancelledError)  # type: ignore[union-attr]
    assert manager.monitor.get_state(sid(1)) == ServableState(sid(1), M.END)
    assert set(threading.enumerate()) <= before
    source.aspire("m", {2: FakeLoader(sid(2))})  # ignored after stop
    assert manager.step() is False


def test_options_are_validated() -> None:
    with pytest.raises(InvalidArgumentError, match="manage_state_interval_s must be a number > 0, got 0"):
        AspiredVersionsManagerOptions(manage_state_interval_s=0)
    with pytest.raises(InvalidArgumentError, match="policy"):
        AspiredVersionsManagerOptions(policy="latest")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="num_unload_threads"):
        AspiredVersionsManager(AspiredVersionsManagerOptions(num_unload_threads=-2))


def test_rollback_to_a_still_serving_version_reaspires_it(rig: Rig) -> None:
    rig.aspire("m", [1])
    rig.settle()
    rig.aspire("m", {2: FakeLoader(sid(2), fail_times=-1)})
    rig.settle()  # 2 failed; 1 is un-aspired but keeps serving
    assert rig.available() == [sid(1)]
    rig.aspire("m", [1])  # roll back: 1 is aspired again in place, 2 is forgotten
    rig.settle()
    assert rig.available() == [sid(1)]
    assert [h.id for h in rig.manager._basic.managed_harnesses()] == [sid(1)]
    assert rig.loaders[sid(1)].load_calls == 1 and rig.loaders[sid(1)].unload_calls == 0
    rig.aspire("m", [1, 3])  # the stream keeps moving
    rig.settle()
    assert rig.available() == [sid(1), sid(3)]


def test_new_content_for_a_version_waiting_to_retry_is_loaded_at_once() -> None:
    """A failing version waits a long interval between attempts; its files are repaired
    (new revision): the retry wait is cancelled and the new loader is loaded right away."""
    rig = Rig(num_load_threads=1, max_num_load_retries=5, load_retry_interval_s=600.0)
    try:
        broken = FakeLoader(sid(1), fail_times=-1, revision="r1")
        rig.aspire("m", {1: broken})
        rig.settle()
        assert wait_for(lambda: broken.load_calls == 1)  # now sleeping 600 s before attempt 2
        fixed = FakeLoader(sid(1), payload="fixed", revision="r2")
        rig.aspire("m", {1: fixed})
        assert wait_for(lambda: (rig.manager.step() or True) and rig.available() == [sid(1)], timeout_s=20)
        with rig.manager.get_handle(ServableRequest.latest("m")) as handle:
            assert handle.servable.payload == "fixed"
        assert broken.load_calls == 1 and not broken.loaded
        states = rig.manager_states(sid(1))
        assert states[:3] == [M.START, M.LOADING, M.END] and states[-3:] == [M.START, M.LOADING, M.AVAILABLE]
        ended = [e.state for e in rig.manager.monitor.get_log() if e.state.id == sid(1) and e.state.manager_state is M.END]
        assert isinstance(ended[0].health, CancelledError), ended
    finally:
        rig.manager.stop()
