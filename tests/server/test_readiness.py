"""Readiness: every configured model has an AVAILABLE version, and no shutdown began.

Driven by events published by hand, by a real AspiredVersionsManager stepped by the test,
and by a real ServerCore over Python-platform models in a temporary folder (no TensorFlow).
"""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Iterator

import pytest

from pyserving.manager import AspiredVersionsManager, AspiredVersionsManagerOptions, ResourcePreservingPolicy
from pyserving.manager.state_monitor import ServableStateMonitor
from pyserving.servable.data import ServableData
from pyserving.servable.errors import Code, UnavailableError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.model_config import ModelEntry
from pyserving.server.readiness import Readiness, ReadinessStatus
from pyserving.sources.source import connect
from pyserving.testing import FakeLoader, FakeSource


def sid(version: int, name: str = "m") -> ServableId:
    return ServableId(name, version)


class Bus:
    def __init__(self) -> None:
        self.bus: EventBus[ServableState] = EventBus()
        self.monitor = ServableStateMonitor(self.bus)  # subscribed first, as in a manager
        self.readiness = Readiness(self.monitor, self.bus)

    def publish(self, version: int, state: M, name: str = "m") -> None:
        self.bus.publish(ServableState(sid(version, name), state))


@pytest.fixture()
def rig() -> Bus:
    return Bus()


def test_not_ready_until_models_are_installed_and_available(rig: Bus) -> None:
    assert rig.readiness.status() == ReadinessStatus(False, "starting: no model list installed yet")
    rig.readiness.set_models(["m", "other"])
    status = rig.readiness.status()
    assert not status.ready and status.unavailable_models == ("m", "other")
    assert status.reason == "no version of model(s) m, other is AVAILABLE"
    rig.publish(1, M.START)
    rig.publish(1, M.LOADING)
    rig.publish(1, M.AVAILABLE)
    assert rig.readiness.status().reason == "no version of model(s) other is AVAILABLE"
    rig.publish(3, M.AVAILABLE, name="other")
    assert rig.readiness.status() == ReadinessStatus(True) and rig.readiness.is_ready()


def test_stays_ready_through_a_swap_and_not_after_the_last_version_ends(rig: Bus) -> None:
    rig.readiness.set_models(["m"])
    seen: list[ReadinessStatus] = []
    rig.publish(1, M.AVAILABLE)
    rig.readiness.add_listener(seen.append)
    for state in (M.START, M.LOADING, M.AVAILABLE):
        rig.publish(2, state)
    rig.publish(1, M.UNLOADING)
    rig.publish(1, M.END)
    assert seen == [ReadinessStatus(True)]  # the current status once, and no change through the swap
    rig.publish(2, M.UNLOADING)
    assert seen[-1].unavailable_models == ("m",)
    rig.publish(2, M.END)
    assert len(seen) == 2


def test_config_changes_and_shutdown(rig: Bus) -> None:
    rig.publish(1, M.AVAILABLE, name="a")
    rig.readiness.set_models(["a"])
    assert rig.readiness.is_ready()
    rig.readiness.set_models(["a", "b"])  # a model added by a reload: not ready until it loads
    assert rig.readiness.status().unavailable_models == ("b",)
    rig.readiness.set_models([])  # nothing to serve: vacuously ready
    assert rig.readiness.is_ready()
    rig.readiness.set_models(["a"])
    rig.readiness.begin_shutdown()
    rig.readiness.begin_shutdown()
    assert rig.readiness.status() == ReadinessStatus(False, "shutting down", shutting_down=True)
    rig.publish(2, M.AVAILABLE, name="a")
    rig.readiness.set_models(["a"])
    assert rig.readiness.status().shutting_down  # permanent


def test_listeners_get_changes_in_order_and_a_broken_one_is_isolated(rig: Bus) -> None:
    def broken(status: ReadinessStatus) -> None:
        raise RuntimeError("listener bug")

    seen: list[bool] = []
    rig.readiness.add_listener(broken)
    subscription = rig.readiness.add_listener(lambda status: seen.append(status.ready))
    rig.readiness.set_models(["m"])  # "starting" -> not ready (models missing): a change, still not ready
    rig.publish(1, M.AVAILABLE)
    rig.publish(1, M.UNLOADING)
    subscription.cancel()
    rig.publish(2, M.AVAILABLE)
    assert seen == [False, False, True, False]


def test_concurrent_events_leave_the_last_delivered_status_current(rig: Bus) -> None:
    names = [f"n{i}" for i in range(8)]
    rig.readiness.set_models(names)
    delivered: list[ReadinessStatus] = []
    rig.readiness.add_listener(delivered.append)
    start = threading.Barrier(len(names))

    def churn(name: str) -> None:
        start.wait(10)
        for version in range(1, 30):
            rig.publish(version, M.AVAILABLE, name)
            if version > 1:
                rig.publish(version - 1, M.UNLOADING, name)
        if name == "n3":
            rig.publish(29, M.UNLOADING, name)

    threads = [threading.Thread(target=churn, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert rig.readiness.status().unavailable_models == ("n3",)
    assert delivered[-1] == rig.readiness.status()


# -- with a real manager -----------------------------------------------------------------------


class ManagerRig:
    def __init__(self, **options: object) -> None:
        defaults: dict[str, object] = dict(num_load_threads=0, num_unload_threads=0, max_num_load_retries=0,
                                           load_retry_interval_s=0.0, run_background_thread=False)
        defaults.update(options)
        self.manager = AspiredVersionsManager(AspiredVersionsManagerOptions(**defaults))  # type: ignore[arg-type]
        self.readiness = Readiness(self.manager.monitor, self.manager.event_bus)
        self.source = FakeSource()
        connect(self.source, self.manager)
        self.history: list[bool] = []
        self.readiness.add_listener(lambda status: self.history.append(status.ready))

    def aspire(self, versions: list[int]) -> None:
        self.source.set_aspired_versions("m", [ServableData.of(sid(v), FakeLoader(sid(v))) for v in versions])

    def settle(self) -> None:
        for _ in range(20):
            if not self.manager.step():
                return
        raise AssertionError("the manager never settled")


def test_availability_preserving_swap_never_drops_readiness() -> None:
    rig = ManagerRig()
    try:
        rig.readiness.set_models(["m"])
        rig.aspire([1])
        rig.settle()
        rig.aspire([2])
        rig.settle()
        assert rig.manager.list_available_ids() == [sid(2)]
        assert rig.history == [False, False, True]  # starting, waiting for m, ready; never False again
        rig.aspire([])  # the base path was emptied: every version unloads
        rig.settle()
        assert rig.history[-1] is False and rig.readiness.status().unavailable_models == ("m",)
    finally:
        rig.manager.stop()


def test_resource_preserving_swap_is_a_short_outage() -> None:
    rig = ManagerRig(policy=ResourcePreservingPolicy())
    try:
        rig.readiness.set_models(["m"])
        rig.aspire([1])
        rig.settle()
        rig.aspire([2])
        rig.settle()
        assert rig.history == [False, False, True, False, True]
    finally:
        rig.manager.stop()


# -- with a real ServerCore (Python models, no TensorFlow) ------------------------------------------

MODEL_PY = textwrap.dedent('''
    class Echo:
        def __init__(self, version):
            self.version = version


    def estimate_ram_bytes(version_dir):
        return {ram}


    def create_servable(version_dir):
        return Echo(int(version_dir.name))
''')


def write_version(base: Path, version: int, ram: int = 100) -> None:
    staging = base.parent / f".staging-{base.name}-{version}"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(MODEL_PY.format(ram=ram))
    base.mkdir(parents=True, exist_ok=True)
    staging.rename(base / str(version))  # complete at once: renamed in


@pytest.fixture()
def core_factory() -> Iterator[object]:
    cores: list[ServerCore] = []

    def make(**options: object) -> ServerCore:
        defaults: dict[str, object] = dict(file_system_poll_wait_seconds=0.2, quiet_period_s=0.0,
                                           max_num_load_retries=0, load_wait_timeout_s=30.0)
        defaults.update(options)
        core = ServerCore(ServerCoreOptions(**defaults))  # type: ignore[arg-type]
        cores.append(core)
        return core

    yield make
    for core in cores:
        core.stop()


def test_server_core_readiness_lifecycle_and_memory_budget(tmp_path: Path, core_factory: object) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_version(a, 1, ram=600)
    write_version(b, 1, ram=100)
    core: ServerCore = core_factory(total_model_memory_limit_bytes=1000)  # type: ignore[operator]
    assert not core.readiness.is_ready()
    core.start([ModelEntry("a", str(a), "python"), ModelEntry("b", str(b), "python")])
    assert core.readiness.is_ready()

    # A version of a that does not fit beside version 1 ends RESOURCE_EXHAUSTED; 1 keeps serving.
    write_version(a, 2, ram=600)
    [state] = core.manager.monitor.wait_until([sid(2, "a")], M.AVAILABLE, timeout_s=30).values()
    assert state.manager_state is M.END and state.health is not None
    assert state.health.code is Code.RESOURCE_EXHAUSTED
    assert state.health.message == (
        "Insufficient resources to load servable {name: a version: 2}: it needs an estimated 600 B, "
        "but only 300 B of 1000 B are free"
    )
    with core.get_handle(ServableRequest.latest("a")) as handle:
        assert handle.id == sid(1, "a")
    assert core.readiness.is_ready()
    stats = core.lifecycle.statistics().models["a"]
    assert (stats.loads, stats.load_failures, stats.available_versions) == (1, 1, (1,))

    # Emptying b's base path unloads its only version: not ready, naming b.
    (b / "1").rename(tmp_path / "b-1-removed")
    core.manager.monitor.wait_until([sid(1, "b")], M.END, timeout_s=30)
    status = core.readiness.status()
    assert not status.ready and status.unavailable_models == ("b",) and "b" in status.reason
    assert core.lifecycle.statistics().models["b"].unloads == 1

    core.stop()
    assert core.readiness.status().shutting_down
    with pytest.raises(UnavailableError, match="shutting down"):
        core.reload_config([])
