"""Ticket.add_done_callback and Ticket.give_up (pyserving.servable.batch_queue).

The callback is how a caller with no thread of its own (the REST event loop) learns that a
queued task was answered. Checked here: it runs exactly once, after the *last* part of a
split task; on the thread that answered (a batch thread, or the caller's own thread when
the ticket was answered already); also for tasks that were cancelled, given up, failed or
shut down; and give_up never interrupts a part that is running.

Plain callables as the batched computation; ``run_threads=False`` + ``step()`` where the
order must be exact, real threads where the thread is the point. No sleeps: threads meet at
Events, every wait is bounded.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from pyserving.servable.batcher import Batch, BatchScheduler, QueueOptions, Ticket
from pyserving.servable.errors import DeadlineExceededError, InternalError, UnavailableError

WAIT_S = 30.0  # bound of every wait; a healthy run never gets near it


class Rows:
    """The batched computation: each task's answer is its own rows of the payload ``(tag, rows)``.

    Records ``(tag, offset, size)`` of every task it computes and the thread of every batch.
    ``gate`` (when set) holds the next batch until the test sets it; ``entered`` is set then.
    ``fail`` (when set) is raised by every batch.
    """

    def __init__(self) -> None:
        self.computed: list[tuple[str, int, int]] = []
        self.threads: list[threading.Thread] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        self._lock = threading.Lock()  # guards computed, threads and gate

    def __call__(self, batch: Batch[Any]) -> list[list[str]]:
        with self._lock:
            self.computed.extend((t.payload[0], t.offset, t.size) for t in batch.tasks)
            self.threads.append(threading.current_thread())
            gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            assert gate.wait(WAIT_S), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return [list(t.payload[1][t.offset : t.offset + t.size]) for t in batch.tasks]

    def tags(self) -> list[str]:
        with self._lock:
            return [tag for tag, _, _ in self.computed]


def concat(parts: list[list[str]]) -> list[str]:
    return [row for part in parts for row in part]


def rows(tag: str, n: int) -> tuple[str, list[str]]:
    return (tag, [f"{tag}:{i}" for i in range(n)])


class Calls:
    """A done-callback that records each call (ticket, thread) and sets ``called``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Ticket[Any], threading.Thread]] = []
        self.called = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, ticket: Ticket[Any]) -> None:
        with self._lock:
            self.calls.append((ticket, threading.current_thread()))
        self.called.set()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.calls)


def _idle(queue: Any) -> bool:
    """Nothing of ``queue`` waits or runs (every part was taken and answered)."""
    stats = queue.statistics()
    return stats.enqueued_batches == 0 and stats.in_flight_batches == 0


SPLIT = QueueOptions(max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=2)


@pytest.fixture
def manual() -> Iterator[BatchScheduler]:
    """No threads: batches run only inside ``step()``, on the test's thread."""
    scheduler = BatchScheduler(1, run_threads=False)
    yield scheduler
    scheduler.stop()


@pytest.fixture
def threaded() -> Iterator[BatchScheduler]:
    scheduler = BatchScheduler(2, name="ticket_cb")
    yield scheduler
    scheduler.stop()


# -- one part --------------------------------------------------------------------------------


def test_single_part_calls_back_once_on_the_batch_thread(threaded: BatchScheduler) -> None:
    model = Rows()
    gate = model.gate = threading.Event()
    queue = threaded.add_queue("q", QueueOptions(max_batch_size=8), model, merge=concat)
    ticket = queue.submit(rows("a", 3), 3)
    assert model.entered.wait(WAIT_S)  # running, not answered: the callback is registered before the answer
    calls = Calls()
    ticket.add_done_callback(calls)
    assert calls.count == 0 and not ticket.done()
    gate.set()
    assert calls.called.wait(WAIT_S)
    assert calls.count == 1
    called_with, thread = calls.calls[0]
    assert called_with is ticket
    assert thread is not threading.current_thread() and thread.name.startswith("ticket_cb-")
    assert thread is model.threads[0]  # the thread that computed the batch answered it
    assert ticket.done() and ticket.result(0) == ["a:0", "a:1", "a:2"]  # no waiting once called back


def test_callback_after_step_without_threads(manual: BatchScheduler) -> None:
    model = Rows()
    queue = manual.add_queue("q", QueueOptions(), model)
    ticket = queue.submit(rows("a", 2), 2)
    calls = Calls()
    ticket.add_done_callback(calls)
    assert calls.count == 0  # queued: nothing runs until a step
    assert manual.step()
    assert calls.count == 1 and calls.calls[0][1] is threading.current_thread()
    assert ticket.result(0) == ["a:0", "a:1"]


def test_every_callback_registered_is_called_once(manual: BatchScheduler) -> None:
    queue = manual.add_queue("q", SPLIT, Rows(), merge=concat)
    tickets = [queue.submit(rows("one", 1), 1), queue.submit(rows("split", 5), 5)]
    first, second = Calls(), Calls()
    for ticket in tickets:
        ticket.add_done_callback(first)
        ticket.add_done_callback(second)
    while manual.step():
        pass
    assert [t for t, _ in first.calls] == [t for t, _ in second.calls]
    assert sorted(map(id, (t for t, _ in first.calls))) == sorted(map(id, tickets))


# -- split tasks -------------------------------------------------------------------------------


def test_split_task_calls_back_once_after_the_last_part(manual: BatchScheduler) -> None:
    model = Rows()
    queue = manual.add_queue("q", SPLIT, model, merge=concat)
    ticket = queue.submit(rows("big", 5), 5)  # parts of 2, 2 and 1 rows, in three batches
    calls = Calls()
    ticket.add_done_callback(calls)
    for _ in range(2):
        assert manual.step()
        assert calls.count == 0 and not ticket.done()
    assert manual.step()
    assert calls.count == 1 and calls.calls[0][0] is ticket
    assert not manual.step()
    assert model.computed == [("big", 0, 2), ("big", 2, 2), ("big", 4, 1)]
    assert ticket.result(0) == rows("big", 5)[1]  # merged in order
    assert calls.count == 1


def test_started_at_is_set_once_every_part_began_to_run(manual: BatchScheduler) -> None:
    queue = manual.add_queue("q", SPLIT, Rows(), merge=concat)
    ticket = queue.submit(rows("big", 5), 5)  # three parts, three batches
    assert ticket.started_at is None
    assert manual.step() and manual.step()
    assert ticket.started_at is None  # the last part has not started
    assert manual.step()
    assert ticket.started_at is not None and ticket.done()


def test_split_tasks_answered_by_many_threads_call_back_exactly_once(threaded: BatchScheduler) -> None:
    options = QueueOptions(max_batch_size=16, max_enqueued_batches=1000, enable_large_batch_splitting=True,
                           max_execution_batch_size=3)
    queue = threaded.add_queue("q", options, Rows(), merge=concat)
    counts: dict[int, int] = {}
    lock = threading.Lock()
    all_called = threading.Event()
    total = 60

    def callback(ticket: Ticket[Any]) -> None:
        with lock:
            counts[id(ticket)] = counts.get(id(ticket), 0) + 1
            if len(counts) == total:
                all_called.set()

    tickets = []
    for n in range(total):
        size = 1 + n % 16  # 1 .. 16 rows: up to six parts, spread over both threads
        ticket = queue.submit(rows(f"t{n}", size), size)
        ticket.add_done_callback(callback)
        tickets.append((ticket, size, f"t{n}"))
    assert all_called.wait(WAIT_S)
    for ticket, size, tag in tickets:
        assert ticket.done() and ticket.result(0) == rows(tag, size)[1]
    with lock:
        assert set(counts.values()) == {1} and len(counts) == total


# -- answered already ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 5], ids=["one-part", "split"])
def test_answered_ticket_calls_back_at_once_on_the_callers_thread(manual: BatchScheduler, size: int) -> None:
    queue = manual.add_queue("q", SPLIT, Rows(), merge=concat)
    ticket = queue.submit(rows("a", size), size)
    while manual.step():
        pass
    assert ticket.done()
    calls = Calls()
    ticket.add_done_callback(calls)  # returns only after calling back
    assert calls.count == 1 and calls.calls[0] == (ticket, threading.current_thread())
    assert ticket.result(0) == rows("a", size)[1]


# -- cancelled, given up, failed, shut down -------------------------------------------------------------


def test_given_up_ticket_calls_back_at_once_and_never_runs(manual: BatchScheduler) -> None:
    model = Rows()
    queue = manual.add_queue("q", SPLIT, model, merge=concat)
    ticket = queue.submit(rows("late", 5), 5)  # three parts, none started
    calls = Calls()
    ticket.add_done_callback(calls)
    ticket.give_up()
    assert calls.count == 1 and calls.calls[0] == (ticket, threading.current_thread())
    assert ticket.done()
    with pytest.raises(DeadlineExceededError, match="it was not run"):
        ticket.result(0)
    while manual.step():
        pass
    assert model.computed == [] and calls.count == 1
    stats = queue.statistics()
    assert stats.expired == 3 and stats.cancelled == 0 and stats.enqueued_tasks == 0


def test_cancelled_ticket_calls_back_and_answers_deadline_exceeded(manual: BatchScheduler) -> None:
    model = Rows()
    queue = manual.add_queue("q", QueueOptions(), model)
    ticket = queue.submit(rows("c", 1), 1)
    calls = Calls()
    ticket.add_done_callback(calls)
    assert ticket.cancel()
    assert calls.count == 1
    with pytest.raises(DeadlineExceededError):
        ticket.result(0)
    assert manual.step()  # the batch is taken and answered without running the task
    assert model.computed == [] and queue.statistics().cancelled == 1


def test_give_up_lets_a_running_task_finish_and_answer(threaded: BatchScheduler) -> None:
    model = Rows()
    gate = model.gate = threading.Event()
    queue = threaded.add_queue("q", QueueOptions(), model)
    ticket = queue.submit(rows("running", 2), 2)
    assert model.entered.wait(WAIT_S)
    calls = Calls()
    ticket.add_done_callback(calls)
    ticket.give_up()  # it started: it is not interrupted
    assert calls.count == 0 and not ticket.done()
    gate.set()
    assert calls.called.wait(WAIT_S) and calls.count == 1
    assert calls.calls[0][1].name.startswith("ticket_cb-")
    assert ticket.result(0) == ["running:0", "running:1"]  # its answer, not an error
    assert queue.statistics().expired == 0


def test_give_up_on_a_split_task_with_a_running_part_waits_for_that_part() -> None:
    scheduler = BatchScheduler(1, name="one_thread")
    try:
        model = Rows()
        gate = model.gate = threading.Event()
        queue = scheduler.add_queue("q", SPLIT, model, merge=concat)
        ticket = queue.submit(rows("big", 5), 5)  # parts of 2, 2, 1: the only thread holds the first
        assert model.entered.wait(WAIT_S)
        calls = Calls()
        ticket.add_done_callback(calls)
        ticket.give_up()  # the two waiting parts are cancelled; the running one finishes
        assert calls.count == 0 and not ticket.done()
        gate.set()
        assert calls.called.wait(WAIT_S) and calls.count == 1
        assert calls.calls[0][1].name.startswith("one_thread-")
        with pytest.raises(DeadlineExceededError):
            ticket.result(0)
        assert scheduler.wait_for(lambda: _idle(queue), WAIT_S)
        assert model.computed == [("big", 0, 2)]
        assert queue.statistics().expired == 2
    finally:
        scheduler.stop()


def test_failed_batch_calls_back_and_result_raises(manual: BatchScheduler) -> None:
    model = Rows()
    model.fail = RuntimeError("kaput")
    queue = manual.add_queue("q", SPLIT, model, merge=concat)
    ticket = queue.submit(rows("f", 5), 5)
    calls = Calls()
    ticket.add_done_callback(calls)
    while manual.step():
        pass
    assert calls.count == 1
    with pytest.raises(InternalError, match="RuntimeError: kaput"):
        ticket.result(0)


def test_stop_answers_waiting_tickets_unavailable_through_the_callback() -> None:
    scheduler = BatchScheduler(1, run_threads=False)
    queue = scheduler.add_queue("q", SPLIT, Rows(), merge=concat)
    tickets = [queue.submit(rows("a", 1), 1), queue.submit(rows("b", 5), 5)]
    calls = Calls()
    for ticket in tickets:
        ticket.add_done_callback(calls)
    scheduler.stop()
    assert calls.count == 2
    for ticket in tickets:
        with pytest.raises(UnavailableError, match="stopped before the request ran"):
            ticket.result(0)


def test_a_callback_that_raises_harms_nobody(manual: BatchScheduler, caplog: pytest.LogCaptureFixture) -> None:
    queue = manual.add_queue("q", SPLIT, Rows(), merge=concat)
    broken = [queue.submit(rows("x", 1), 1), queue.submit(rows("y", 5), 5)]
    healthy = queue.submit(rows("z", 1), 1)

    def explode(ticket: Ticket[Any]) -> None:
        raise RuntimeError("callback bug")

    for ticket in broken:
        ticket.add_done_callback(explode)
    calls = Calls()
    healthy.add_done_callback(calls)
    while manual.step():
        pass
    assert calls.count == 1
    assert [t.result(0) for t in broken] == [["x:0"], rows("y", 5)[1]]
    assert healthy.result(0) == ["z:0"]
    assert queue.submit(rows("after", 1), 1) is not None and manual.step()  # the scheduler still serves
