import gc
import threading

import pytest

from pyserving.servable import EventBus, FailedPreconditionError, ServableHandle, ServableId

SID = ServableId("m", 1)


def test_handle_releases_once_and_blocks_use_after_release():
    released = []
    with ServableHandle(SID, "model", lambda: released.append(1)) as handle:
        assert handle.servable == "model" and handle.id == SID and not handle.released
    assert released == [1] and handle.released
    handle.release()
    assert released == [1]
    with pytest.raises(FailedPreconditionError):
        _ = handle.servable


def test_forgotten_handle_is_released_by_gc():
    released = threading.Event()
    handle = ServableHandle(SID, object(), released.set)
    del handle
    gc.collect()
    assert released.is_set()


def test_event_bus_order_isolation_and_cancel():
    bus: EventBus[int] = EventBus()
    seen: list[tuple[str, int]] = []
    sub_a = bus.subscribe(lambda e: seen.append(("a", e)))

    def broken(_e: int) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(("c", e)))
    bus.publish(1)
    sub_a.cancel()
    sub_a.cancel()
    bus.publish(2)
    assert seen == [("a", 1), ("c", 1), ("c", 2)]


def test_event_bus_concurrent_publish():
    bus: EventBus[int] = EventBus()
    lock = threading.Lock()
    total = []
    bus.subscribe(lambda e: (lock.acquire(), total.append(e), lock.release()))
    threads = [threading.Thread(target=lambda: [bus.publish(i) for i in range(200)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(total) == 800
