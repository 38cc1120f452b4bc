"""LifecycleLog: log lines, counters, durations, swaps and listeners.

Driven two ways: events published by hand on a bus (exact control of the clock), and a
real AspiredVersionsManager stepped by the test (the events the manager really sends).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Iterator

import pytest

from pyserving.loaders.loader import Resources
from pyserving.manager import AspiredVersionsManager, AspiredVersionsManagerOptions, ResourceTracker
from pyserving.manager.lifecycle_log import LifecycleEvent, LifecycleLog, ModelLifecycleStatistics
from pyserving.servable.data import ServableData
from pyserving.servable.errors import CancelledError, InternalError, InvalidArgumentError, NotFoundError
from pyserving.servable.event_bus import EventBus
from pyserving.servable.ids import ServableId
from pyserving.servable.state import ManagerState as M
from pyserving.servable.state import ServableState
from pyserving.sources.source import connect
from pyserving.testing import FakeLoader, FakeSource

LOGGER = "test.lifecycle"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sid(version: int, name: str = "m") -> ServableId:
    return ServableId(name, version)


@pytest.fixture()
def bus() -> EventBus[ServableState]:
    return EventBus()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def log(bus: EventBus[ServableState], clock: Clock) -> Iterator[LifecycleLog]:
    lifecycle = LifecycleLog(bus, logger=logging.getLogger(LOGGER), clock=clock, max_recent=3)
    yield lifecycle
    lifecycle.close()


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def publish(bus: EventBus[ServableState], clock: Clock, *steps: tuple[float, ServableState]) -> None:
    for advance, state in steps:
        clock.now += advance
        bus.publish(state)


def test_one_line_per_state_change_worded_for_users(
    bus: EventBus[ServableState], clock: Clock, log: LifecycleLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    publish(
        bus, clock,
        (0, ServableState(sid(7), M.START)),
        (0, ServableState(sid(7), M.LOADING)),
        (0.42, ServableState(sid(7), M.AVAILABLE)),
        (1, ServableState(sid(7), M.UNLOADING)),
        (0.01, ServableState(sid(7), M.END)),
    )
    assert lines(caplog) == [
        (logging.INFO, "{name: m version: 7} START: found, waiting to load"),
        (logging.INFO, "{name: m version: 7} LOADING"),
        (logging.INFO, "{name: m version: 7} AVAILABLE after 0.42 s load"),
        (logging.INFO, "{name: m version: 7} UNLOADING"),
        (logging.INFO, "{name: m version: 7} END after 0.01 s unload"),
    ]


def test_failures_are_warnings_with_the_loaders_message(
    bus: EventBus[ServableState], clock: Clock, log: LifecycleLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failed = InternalError("Loading servable {name: m version: 8} failed: saved_model.pb is garbage")
    publish(
        bus, clock,
        (0, ServableState(sid(8), M.START)),
        (0, ServableState(sid(8), M.LOADING)),
        (2, ServableState(sid(8), M.END, failed)),
        (0, ServableState(sid(9), M.END, NotFoundError("base path is gone"))),  # an error item from the source
        (0, ServableState(sid(10), M.START)),
        (0, ServableState(sid(10), M.END, CancelledError("Loading of servable {name: m version: 10} cancelled"))),
        (0, ServableState(sid(11), M.START)),
        (0, ServableState(sid(11), M.END)),  # forgotten before it was loaded
    )
    assert lines(caplog)[2:] == [
        (logging.WARNING, "{name: m version: 8} END: load failed: saved_model.pb is garbage"),
        (logging.WARNING, "{name: m version: 9} END: load failed: base path is gone"),
        (logging.INFO, "{name: m version: 10} START: found, waiting to load"),
        (logging.INFO, "{name: m version: 10} END: load cancelled (no longer wanted)"),
        (logging.INFO, "{name: m version: 11} START: found, waiting to load"),
        (logging.INFO, "{name: m version: 11} END: never loaded (no longer wanted)"),
    ]
    stats = log.statistics().models["m"]
    assert (stats.loads, stats.load_failures, stats.load_cancellations, stats.unloads) == (0, 2, 1, 0)


def test_counters_durations_and_swaps(bus: EventBus[ServableState], clock: Clock, log: LifecycleLog) -> None:
    def load(version: int, seconds: float, name: str = "m") -> None:
        publish(bus, clock, (0, ServableState(sid(version, name), M.START)),
                (0, ServableState(sid(version, name), M.LOADING)),
                (seconds, ServableState(sid(version, name), M.AVAILABLE)))

    def unload(version: int, seconds: float) -> None:
        publish(bus, clock, (0, ServableState(sid(version), M.UNLOADING)), (seconds, ServableState(sid(version), M.END)))

    load(1, 1.0)  # first version: not a swap
    load(2, 2.0)  # 1 still AVAILABLE: a swap
    unload(1, 0.5)
    load(3, 3.0)  # swap
    unload(2, 0.25)
    load(4, 4.0)  # swap; the recent list keeps the last 3
    load(1, 1.0, name="other")
    publish(bus, clock, (0, ServableState(sid(9), M.UNLOADING)), (0, ServableState(sid(9), M.END, InternalError("x"))))

    stats = log.statistics()
    assert list(stats.models) == ["m", "other"] and stats.events == 3 * 5 + 2 * 2 + 2
    m = stats.models["m"]
    assert (m.loads, m.swaps, m.unloads, m.unload_failures, m.load_failures) == (4, 3, 2, 1, 0)
    assert m.last_load_s == pytest.approx(4.0) and m.load_s_sum == pytest.approx(10.0) and m.load_s_count == 4
    assert m.recent_load_s == pytest.approx((2.0, 3.0, 4.0))
    assert m.last_unload_s == pytest.approx(0.25) and m.unload_s_count == 2
    assert m.recent_unload_s == pytest.approx((0.5, 0.25))
    assert m.available_versions == (3, 4)
    assert stats.models["other"] == ModelLifecycleStatistics(
        loads=1, last_load_s=1.0, load_s_sum=1.0, load_s_count=1, recent_load_s=(1.0,), available_versions=(1,)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.models["m"].loads = 0  # type: ignore[misc]


def test_listener_gets_every_change_after_the_counters(
    bus: EventBus[ServableState], clock: Clock, log: LifecycleLog
) -> None:
    seen: list[LifecycleEvent] = []
    loads_when_called: list[int] = []

    def listener(event: LifecycleEvent) -> None:
        seen.append(event)
        loads_when_called.append(log.statistics().models["m"].loads)

    subscription = log.add_listener(listener)
    publish(bus, clock, (0, ServableState(sid(1), M.LOADING)), (0.5, ServableState(sid(1), M.AVAILABLE)),
            (0, ServableState(sid(2), M.LOADING)), (0.25, ServableState(sid(2), M.AVAILABLE)))
    subscription.cancel()
    publish(bus, clock, (0, ServableState(sid(1), M.UNLOADING)))
    assert [(e.state.id.version, e.previous, e.duration_s, e.swap) for e in seen] == [
        (1, None, None, False), (1, M.LOADING, 0.5, False), (2, None, None, False), (2, M.LOADING, 0.25, True),
    ]
    assert seen[1].message == "{name: m version: 1} AVAILABLE after 0.50 s load"
    assert loads_when_called == [0, 1, 1, 2]


def test_a_version_managed_again_starts_over(bus: EventBus[ServableState], clock: Clock, log: LifecycleLog) -> None:
    publish(bus, clock, (0, ServableState(sid(1), M.START)), (0, ServableState(sid(1), M.LOADING)),
            (1, ServableState(sid(1), M.END, InternalError("broken"))),
            (5, ServableState(sid(1), M.START)), (0, ServableState(sid(1), M.LOADING)),
            (2, ServableState(sid(1), M.AVAILABLE)))
    m = log.statistics().models["m"]
    assert (m.load_failures, m.loads, m.last_load_s) == (1, 1, 2.0)


def test_close_stops_counting_and_options_are_validated(bus: EventBus[ServableState], clock: Clock) -> None:
    lifecycle = LifecycleLog(bus, clock=clock)
    bus.publish(ServableState(sid(1), M.START))
    lifecycle.close()
    lifecycle.close()
    bus.publish(ServableState(sid(1), M.LOADING))
    assert lifecycle.statistics().events == 1
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgumentError, match="max_recent must be an int >= 1"):
            LifecycleLog(bus, max_recent=bad)  # type: ignore[arg-type]


# -- attached to a real manager ------------------------------------------------------------


class Rig:
    def __init__(self, **options: object) -> None:
        defaults: dict[str, object] = dict(num_load_threads=0, num_unload_threads=0, max_num_load_retries=0,
                                           load_retry_interval_s=0.0, run_background_thread=False)
        defaults.update(options)
        self.manager = AspiredVersionsManager(AspiredVersionsManagerOptions(**defaults))  # type: ignore[arg-type]
        self.log = LifecycleLog(self.manager.event_bus, logger=logging.getLogger(LOGGER))
        self.source = FakeSource()
        connect(self.source, self.manager)

    def aspire(self, name: str, loaders: dict[int, FakeLoader]) -> None:
        self.source.set_aspired_versions(
            name, [ServableData.of(sid(v, name), loader) for v, loader in sorted(loaders.items())]
        )

    def settle(self) -> None:
        for _ in range(20):
            if not self.manager.step():
                return
        raise AssertionError("the manager never settled")


def test_with_a_manager_swap_failure_and_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    rig = Rig(resource_tracker=ResourceTracker(Resources(ram_bytes=1000)))
    try:
        one, two = FakeLoader(sid(1), ram_bytes=600), FakeLoader(sid(2), ram_bytes=300)
        rig.aspire("m", {1: one})
        rig.settle()
        rig.aspire("m", {2: two})  # fits beside 1: loads, then 1 is unloaded
        rig.settle()
        rig.aspire("m", {2: two, 3: FakeLoader(sid(3), fail_times=-1, load_error=InternalError("bad weights"))})
        rig.settle()
        rig.aspire("m", {2: two, 4: FakeLoader(sid(4), ram_bytes=900)})  # 300 used: 900 does not fit
        rig.settle()
        m = rig.log.statistics().models["m"]
        assert (m.loads, m.swaps, m.unloads, m.load_failures) == (2, 1, 1, 2)
        assert m.available_versions == (2,) and m.load_s_count == 2 and m.unload_s_count == 1
        messages = [text for _, text in lines(caplog)]
        assert "{name: m version: 3} END: load failed: bad weights" in messages
        exhausted = [text for text in messages if text.startswith("{name: m version: 4} END: load failed:")]
        assert exhausted == [
            "{name: m version: 4} END: load failed: Insufficient resources to load servable "
            "{name: m version: 4}: it needs an estimated 900 B, but only 700 B of 1000 B are free"
        ]
        [unloaded] = [t for t in messages if t.startswith("{name: m version: 1} END")]
        assert unloaded.startswith("{name: m version: 1} END after ") and unloaded.endswith(" s unload")
    finally:
        rig.manager.stop()
        rig.log.close()


def test_concurrent_loads_are_counted_exactly() -> None:
    rig = Rig(num_load_threads=4, num_unload_threads=2)
    try:
        gate = threading.Event()
        names = [f"model{i}" for i in range(8)]
        for name in names:
            rig.aspire(name, {1: FakeLoader(ServableId(name, 1), gate=gate)})
        rig.manager.step()
        gate.set()
        rig.manager.monitor.wait_until([ServableId(n, 1) for n in names], M.AVAILABLE, timeout_s=30)
        stats = rig.log.statistics()
        assert sorted(stats.models) == names
        assert all(s.loads == 1 and s.swaps == 0 and s.available_versions == (1,) for s in stats.models.values())
    finally:
        rig.manager.stop()
        rig.log.close()
    after = rig.log.statistics()
    assert all(s.unloads == 1 and s.available_versions == () for s in after.models.values())
