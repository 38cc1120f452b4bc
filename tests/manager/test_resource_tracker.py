"""ResourceTracker: budget, refusal message, release, statistics, thread safety."""

from __future__ import annotations

import threading

import pytest

from pyserving.loaders.loader import Resources
from pyserving.manager.resource_tracker import ResourceTracker
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError
from pyserving.servable.ids import ServableId

A1 = ServableId("a", 1)
A2 = ServableId("a", 2)


def test_reserve_within_budget_and_refuse_beyond() -> None:
    tracker = ResourceTracker(Resources(ram_bytes=1000))
    tracker.reserve(A1, Resources(ram_bytes=600))
    assert tracker.used() == Resources(600)
    assert tracker.free() == Resources(400)
    with pytest.raises(ResourceExhaustedError) as info:
        tracker.reserve(A2, Resources(ram_bytes=500))
    assert info.value.message == (
        "Insufficient resources to load servable {name: a version: 2}: it needs an estimated 500 B, "
        "but only 400 B of 1000 B are free"
    )
    assert tracker.release(A1) == Resources(600)
    tracker.reserve(A2, Resources(ram_bytes=500))
    stats = tracker.statistics()
    assert (stats.used, stats.free, stats.num_reservations, stats.num_refusals) == (
        Resources(500), Resources(500), 1, 1
    )


def test_unlimited_counts_usage() -> None:
    tracker = ResourceTracker(None)
    tracker.reserve(A1, Resources(ram_bytes=10**15))
    assert tracker.used() == Resources(10**15)
    assert tracker.free() is None
    assert tracker.statistics().total is None


def test_double_reserve_and_unknown_release() -> None:
    tracker = ResourceTracker(Resources(100))
    tracker.reserve(A1, Resources(1))
    with pytest.raises(FailedPreconditionError):
        tracker.reserve(A1, Resources(1))
    assert tracker.release(A2) is None
    assert tracker.reservation(A1) == Resources(1)
    with pytest.raises(InvalidArgumentError):
        tracker.reserve(A2, 5)  # type: ignore[arg-type]


def test_concurrent_reservations_never_exceed_total() -> None:
    tracker = ResourceTracker(Resources(ram_bytes=50))
    granted: list[ServableId] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for v in range(start, start + 100):
            sid = ServableId("x", v)
            try:
                tracker.reserve(sid, Resources(ram_bytes=1))
            except ResourceExhaustedError:
                continue
            with lock:
                granted.append(sid)

    threads = [threading.Thread(target=worker, args=(i * 100,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50
    assert tracker.used() == Resources(50)
