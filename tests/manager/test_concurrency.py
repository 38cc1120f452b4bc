"""Real threads against the AspiredVersionsManager: handles never dangle, unloads happen once."""

from __future__ import annotations

import threading

from pyserving.manager.aspired_versions_manager import AspiredVersionsManager, AspiredVersionsManagerOptions
from pyserving.servable.data import ServableData
from pyserving.servable.errors import NotFoundError
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.state import ManagerState as M
from pyserving.sources.source import connect
from pyserving.testing import FakeLoader, FakeSource

NUM_READERS = 8
NUM_VERSIONS = 100


def test_swapping_versions_under_load() -> None:
    before = set(threading.enumerate())
    FakeLoader.reset_live_count()
    manager = AspiredVersionsManager(AspiredVersionsManagerOptions(num_load_threads=4, num_unload_threads=2))
    source = FakeSource()
    connect(source, manager)
    manager.start()

    loaders: list[FakeLoader] = []
    first_available = threading.Event()
    stop_readers = threading.Event()
    problems: list[str] = []
    problems_lock = threading.Lock()  # guards problems
    counts = [0] * NUM_READERS
    request = ServableRequest.latest("m")

    def report(text: str) -> None:
        with problems_lock:
            problems.append(text)

    def reader(index: int) -> None:
        assert first_available.wait(10)
        while not stop_readers.is_set():
            try:
                handle = manager.get_handle(request)
            except NotFoundError as exc:
                report(f"lookup failed after a version was available: {exc}")
                return
            with handle:
                servable = handle.servable
                if servable.unloaded or servable.id != handle.id:
                    report(f"{handle.id} was handed out after its unload")
                # a little work while holding it, then check again
                _ = sum(range(50))
                if servable.unloaded:
                    report(f"{handle.id} was unloaded while a handle was held")
            counts[index] += 1

    readers = [threading.Thread(target=reader, args=(i,), name=f"reader-{i}") for i in range(NUM_READERS)]
    for thread in readers:
        thread.start()
    try:
        for version in range(1, NUM_VERSIONS + 1):
            servable_id = ServableId("m", version)
            loader = FakeLoader(servable_id, payload=version)
            loaders.append(loader)
            source.set_aspired_versions("m", [ServableData.of(servable_id, loader)])
            if version % 10 == 0 or version == 1:
                # most lists arrive back to back; every tenth one is waited for
                manager.monitor.wait_until([servable_id], M.AVAILABLE, timeout_s=20)
                first_available.set()
        manager.monitor.wait_until([ServableId("m", NUM_VERSIONS)], M.AVAILABLE, timeout_s=20)
    finally:
        first_available.set()
        stop_readers.set()
        for thread in readers:
            thread.join(20)
    assert not any(thread.is_alive() for thread in readers)
    assert problems == []
    assert all(count > 0 for count in counts)
    # The newest version is AVAILABLE; the one before may still be unloading: wait for
    # every other version that was loaded to reach END before checking what is served.
    older = [l.servable_id for l in loaders if l.load_calls and l.servable_id != ServableId("m", NUM_VERSIONS)]
    manager.monitor.wait_until(older, M.END, timeout_s=20)
    assert manager.list_available_ids() == [ServableId("m", NUM_VERSIONS)]

    manager.stop()
    for loader in loaders:
        if loader.load_calls:
            assert loader.unload_calls == 1, f"{loader.servable_id}: unload_calls={loader.unload_calls}"
        else:
            assert loader.unload_calls == 0
    assert FakeLoader.live_count() == 0
    assert set(threading.enumerate()) <= before


def test_many_streams_swap_in_parallel() -> None:
    before = set(threading.enumerate())
    FakeLoader.reset_live_count()
    manager = AspiredVersionsManager(AspiredVersionsManagerOptions(num_load_threads=4, num_unload_threads=2))
    source = FakeSource()
    connect(source, manager)
    manager.start()
    names = [f"s{i}" for i in range(10)]
    loaders: list[FakeLoader] = []

    def driver(name: str) -> None:
        for version in range(1, 11):
            servable_id = ServableId(name, version)
            loader = FakeLoader(servable_id)
            loaders.append(loader)
            source.set_aspired_versions(name, [ServableData.of(servable_id, loader)])

    drivers = [threading.Thread(target=driver, args=(name,)) for name in names]
    for thread in drivers:
        thread.start()
    for thread in drivers:
        thread.join(20)
    manager.monitor.wait_until([ServableId(name, 10) for name in names], M.AVAILABLE, timeout_s=20)
    for name in names:
        with manager.get_handle(ServableRequest.latest(name)) as handle:
            assert handle.id == ServableId(name, 10)
    manager.stop()
    assert all(loader.unload_calls == (1 if loader.load_calls else 0) for loader in loaders)
    assert FakeLoader.live_count() == 0
    assert set(threading.enumerate()) <= before
