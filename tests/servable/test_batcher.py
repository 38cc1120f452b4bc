"""Tests for pyserving.servable.batcher: the generic batch scheduler and its queues.

Plain callables as the batched computation; real threads where threading is the point,
``run_threads=False`` + ``step()`` and a fake clock where order and time must be exact.
No sleeps: threads meet at Events, waits are bounded.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable

import pytest

from pyserving.servable.batcher import Batch, BatchScheduler, QueueOptions, QueueStatistics
from pyserving.servable.errors import (
    Code,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
)

WAIT_S = 30.0  # bound of every wait; a healthy run never gets near it


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A batched computation: each task's answer is its rows, tagged by the batch number.

    A payload ``("block", ...)`` holds its batch until ``release`` is set; ``started`` is set
    when such a batch began.
    """

    def __init__(
        self, fail_on: Callable[[Batch[Any]], BaseException | None] = lambda batch: None, work_s: float = 0.0
    ) -> None:
        self.work_s = work_s  # simulated model time (the GIL is released, as TensorFlow does)
        self.batches: list[list[tuple[Any, int, int]]] = []
        self.padded: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, batch: Batch[Any]) -> list[Any]:
        with self._lock:
            self.batches.append([(t.payload, t.offset, t.size) for t in batch.tasks])
            self.padded.append(batch.padded_size)
        if any(t.payload[0] == "block" for t in batch.tasks):
            self.started.set()
            assert self.release.wait(WAIT_S)
        if self.work_s:
            time.sleep(self.work_s)
        error = self.fail_on(batch)
        if error is not None:
            raise error
        return [list(task.payload[1][task.offset : task.offset + task.size]) for task in batch.tasks]

    def sizes(self) -> list[list[int]]:
        return [[size for _, _, size in batch] for batch in self.batches]


def concat(parts: list[list[Any]]) -> list[Any]:
    return [row for part in parts for row in part]


def rows(tag: str, n: int) -> tuple[str, list[str]]:
    return (tag, [f"{tag}:{i}" for i in range(n)])


@pytest.fixture
def manual() -> tuple[BatchScheduler, FakeClock]:
    clock = FakeClock()
    scheduler = BatchScheduler(1, run_threads=False, clock=clock)
    yield scheduler, clock
    scheduler.stop()


@pytest.fixture
def threaded() -> BatchScheduler:
    scheduler = BatchScheduler(2, name="test_batch")
    yield scheduler
    scheduler.stop()


# --- correctness under concurrency ----------------------------------------------------------------


@pytest.mark.parametrize("splitting", [False, True], ids=["whole", "split"])
def test_every_caller_gets_exactly_its_rows_in_order(threaded: BatchScheduler, splitting: bool) -> None:
    options = QueueOptions(max_batch_size=16, max_enqueued_batches=1000, enable_large_batch_splitting=splitting,
                           max_execution_batch_size=5 if splitting else None)
    recorder = Recorder(work_s=0.0005)
    queue = threaded.add_queue("q", options, recorder, merge=concat)
    failures: list[str] = []
    start = threading.Barrier(12)

    def client(number: int) -> None:
        rng = random.Random(number)
        start.wait(WAIT_S)
        for call in range(40):
            tag, payload = rows(f"c{number}-{call}", rng.randint(1, 16))
            answer = queue.run((tag, payload), len(payload), key=None)
            if answer != payload:
                failures.append(f"{tag}: {answer} != {payload}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert all(sum(batch) <= options.execution_limit for batch in recorder.sizes())
    stats = queue.statistics()
    assert stats.batches == len(recorder.batches) and stats.tasks == sum(map(len, recorder.sizes()))
    assert stats.rows == sum(map(sum, recorder.sizes())) and stats.enqueued_tasks == 0
    assert sum(stats.batch_sizes.values()) == stats.batches
    if not splitting:
        assert stats.tasks == 12 * 40  # nothing was split
    assert any(len(batch) > 1 for batch in recorder.batches), "no batch ever held two requests"


def test_tasks_queued_while_the_only_thread_is_busy_run_as_one_batch() -> None:
    scheduler = BatchScheduler(1)
    try:
        recorder = Recorder()
        queue = scheduler.add_queue("q", QueueOptions(max_batch_size=8), recorder, merge=concat)
        first = queue.submit(rows("block", 1), 1)
        assert recorder.started.wait(WAIT_S)
        tickets = [queue.submit(rows(f"t{i}", i + 1), i + 1) for i in range(3)]
        recorder.release.set()
        assert first.result(WAIT_S) == ["block:0"]
        assert [t.result(WAIT_S) for t in tickets] == [rows(f"t{i}", i + 1)[1] for i in range(3)]
        assert recorder.sizes() == [[1], [1, 2, 3]]
    finally:
        scheduler.stop()


def test_keys_and_solo_tasks_never_share_a_batch(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    recorder = Recorder()
    queue = scheduler.add_queue("q", QueueOptions(max_batch_size=8), recorder)
    a1 = queue.submit(rows("a1", 1), 1, key="a")
    b1 = queue.submit(rows("b1", 1), 1, key="b")
    a2 = queue.submit(rows("a2", 2), 2, key="a")
    s1 = queue.submit(rows("s1", 1), 1, key="a", solo=True)
    while scheduler.step():
        pass
    assert [[payload[0] for payload, _, _ in batch] for batch in recorder.batches] == [["a1", "a2"], ["b1"], ["s1"]]
    assert [t.result(0) for t in (a1, b1, a2, s1)] == [["a1:0"], ["b1:0"], ["a2:0", "a2:1"], ["s1:0"]]


def test_a_task_that_does_not_fit_closes_the_open_batch(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    recorder = Recorder()
    queue = scheduler.add_queue("q", QueueOptions(max_batch_size=4), recorder)
    for tag, n in (("a", 3), ("b", 2), ("c", 1)):
        queue.submit(rows(tag, n), n)
    while scheduler.step():
        pass
    assert recorder.sizes() == [[3], [2, 1]]


# --- padding, splitting, refusals ------------------------------------------------------------------


def test_batches_are_padded_to_the_next_allowed_size(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    recorder = Recorder()
    queue = scheduler.add_queue("q", QueueOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)), recorder)
    queue.submit(rows("a", 1), 1)
    queue.submit(rows("b", 2), 2)
    assert scheduler.step()
    queue.submit(rows("c", 8), 8)
    assert scheduler.step()
    assert recorder.padded == [4, 8]
    stats = queue.statistics()
    assert (stats.rows, stats.padded_rows, dict(stats.batch_sizes)) == (11, 1, {3: 1, 8: 1})


def test_large_task_is_split_across_batches_and_merged_in_order(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    recorder = Recorder()
    options = QueueOptions(max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=4)
    queue = scheduler.add_queue("q", options, recorder, merge=concat)
    small = queue.submit(rows("s", 3), 3)
    big = queue.submit(rows("b", 7), 7)
    while scheduler.step():
        pass
    # The big task first fills the open batch's last row, then 4 and 2 rows.
    assert recorder.batches == [
        [(rows("s", 3), 0, 3), (rows("b", 7), 0, 1)],
        [(rows("b", 7), 1, 4)],
        [(rows("b", 7), 5, 2)],
    ]
    assert small.result(0) == rows("s", 3)[1] and big.result(0) == rows("b", 7)[1]
    assert queue.statistics().tasks == 4


def test_task_larger_than_max_batch_size_is_refused(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    for splitting in (False, True):
        queue = scheduler.add_queue(f"q{splitting}", QueueOptions(max_batch_size=10, enable_large_batch_splitting=splitting),
                                    Recorder())
        with pytest.raises(InvalidArgumentError) as info:
            queue.submit(rows("x", 11), 11)
        assert info.value.message == "Task size 11 is larger than maximum input batch size 10"
        assert queue.statistics().rejected_too_large == 1 and queue.statistics().enqueued_tasks == 0


def test_full_queue_answers_unavailable_at_once() -> None:
    threaded = BatchScheduler(1)
    try:
        _full_queue_answers_unavailable_at_once(threaded)
    finally:
        threaded.stop()


def _full_queue_answers_unavailable_at_once(threaded: BatchScheduler) -> None:
    recorder = Recorder()
    queue = threaded.add_queue("q", QueueOptions(max_batch_size=2, max_enqueued_batches=1), recorder, merge=concat)
    running = queue.submit(rows("block", 2), 2)
    assert recorder.started.wait(WAIT_S)  # it left the queue: one batch may wait again
    waiting = queue.submit(rows("w", 2), 2)  # the only thread is busy: it waits
    with pytest.raises(UnavailableError) as info:
        queue.submit(rows("x", 1), 1)
    assert info.value.message == (
        "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
        "and max_enqueued_batches is 1"
    )
    recorder.release.set()
    assert running.result(WAIT_S) == ["block:0", "block:1"] and waiting.result(WAIT_S) == ["w:0", "w:1"]
    assert queue.statistics().rejected_full == 1


def test_full_queue_with_splitting_reports_capacity(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    options = QueueOptions(max_batch_size=10, max_enqueued_batches=2, enable_large_batch_splitting=True,
                           max_execution_batch_size=3)
    queue = scheduler.add_queue("q", options, Recorder(), merge=concat)
    queue.submit(rows("a", 4), 4)  # batches of 3 and 1 rows
    with pytest.raises(UnavailableError) as info:
        queue.submit(rows("b", 3), 3)  # only 2 rows of room are left
    assert info.value.message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 3 but scheduling "
        "capacity is only 2 (num_enqueued_batches=2, max_enqueued_batches=2, open_batch_size=1, "
        "max_execution_batch_size=3)"
    )
    queue.submit(rows("c", 2), 2)  # fits exactly


# --- deadlines ------------------------------------------------------------------------------------


def test_deadline_already_passed_is_refused_at_submit(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, clock = manual
    clock.now = 5.0
    queue = scheduler.add_queue("q", QueueOptions(), Recorder())
    with pytest.raises(DeadlineExceededError):
        queue.submit(rows("x", 1), 1, deadline=5.0)
    assert queue.statistics().expired == 1 and queue.statistics().enqueued_tasks == 0


def test_task_expired_in_the_queue_is_answered_without_running(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, clock = manual
    recorder = Recorder()
    queue = scheduler.add_queue("q", QueueOptions(), recorder)
    late = queue.submit(rows("late", 1), 1, deadline=10.0)
    on_time = queue.submit(rows("ok", 1), 1, deadline=20.0)
    clock.now = 11.0
    assert scheduler.step()
    with pytest.raises(DeadlineExceededError):
        late.result(0)
    assert on_time.result(0) == ["ok:0"]
    assert [[payload[0] for payload, _, _ in batch] for batch in recorder.batches] == [["ok"]]
    assert queue.statistics().expired == 1


def test_run_gives_up_at_the_deadline_and_the_task_never_runs() -> None:
    scheduler = BatchScheduler(1)
    try:
        recorder = Recorder()
        queue = scheduler.add_queue("q", QueueOptions(), recorder)
        busy = queue.submit(rows("block", 1), 1)
        assert recorder.started.wait(WAIT_S)
        clock = scheduler._clock
        with pytest.raises(DeadlineExceededError):
            queue.run(rows("late", 1), 1, deadline=clock() + 0.05)
        recorder.release.set()
        assert busy.result(WAIT_S) == ["block:0"]
        assert queue.run(rows("after", 1), 1) == ["after:0"]
        assert all(payload[0] != "late" for batch in recorder.batches for payload, _, _ in batch)
        assert queue.statistics().expired == 1
    finally:
        scheduler.stop()


# --- release policy -------------------------------------------------------------------------------


def test_idle_model_runs_a_lone_request_without_waiting_the_timeout(threaded: BatchScheduler) -> None:
    options = QueueOptions(max_batch_size=8, batch_timeout_micros=3600 * 10**6)  # an hour
    queue = threaded.add_queue("q", options, Recorder())
    assert queue.submit(rows("alone", 1), 1).result(WAIT_S) == ["alone:0"]


def test_idle_lone_request_runs_on_the_callers_own_thread(threaded: BatchScheduler) -> None:
    threads: list[threading.Thread] = []
    queue = threaded.add_queue("q", QueueOptions(), lambda batch: threads.append(threading.current_thread()) or [1])
    assert queue.run("x", 1) == 1  # the fast path: no hand-off to a batch thread
    assert queue.submit("y", 1).result(WAIT_S) == 1  # submit() always hands off
    assert threads[0] is threading.current_thread() and threads[1].name.startswith("test_batch-")


def test_with_a_timeout_requests_wait_for_the_running_batch_and_then_run_together(threaded: BatchScheduler) -> None:
    recorder = Recorder()
    options = QueueOptions(max_batch_size=8, batch_timeout_micros=3600 * 10**6)
    queue = threaded.add_queue("q", options, recorder)
    first = queue.submit(rows("block", 1), 1)
    assert recorder.started.wait(WAIT_S)
    # A second thread is free, but the model is busy and the timeout has not passed: they wait.
    tickets = [queue.submit(rows(f"t{i}", 1), 1) for i in range(3)]
    recorder.release.set()
    assert [t.result(WAIT_S) for t in tickets] == [[f"t{i}:0"] for i in range(3)]
    assert first.result(WAIT_S) == ["block:0"]
    assert recorder.sizes() == [[1], [1, 1, 1]]


def test_full_batch_runs_while_the_model_is_busy(threaded: BatchScheduler) -> None:
    recorder = Recorder()
    queue = threaded.add_queue("q", QueueOptions(max_batch_size=2, batch_timeout_micros=3600 * 10**6), recorder)
    first = queue.submit(rows("block", 1), 1)
    assert recorder.started.wait(WAIT_S)
    full = queue.submit(rows("full", 2), 2)
    assert full.result(WAIT_S) == ["full:0", "full:1"]  # on the second thread, the first still blocked
    recorder.release.set()
    assert first.result(WAIT_S) == ["block:0"]


def test_queues_are_served_round_robin(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    order: list[str] = []
    queues = [
        scheduler.add_queue(name, QueueOptions(max_batch_size=1), lambda b, n=name: order.append(n) or [None])
        for name in ("a", "b")
    ]
    for _ in range(2):
        for queue in queues:
            queue.submit(rows("x", 1), 1)
    while scheduler.step():
        pass
    assert order == ["a", "b", "a", "b"]


# --- failures -------------------------------------------------------------------------------------


def test_exception_fails_exactly_the_tasks_of_its_batch(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    boom = ValueError("boom")
    recorder = Recorder(lambda batch: boom if any(t.payload[0] == "bad" for t in batch.tasks) else None)
    queue = scheduler.add_queue("q", QueueOptions(max_batch_size=2), recorder)
    bad = queue.submit(rows("bad", 1), 1)
    neighbour = queue.submit(rows("n", 1), 1)
    later = queue.submit(rows("later", 1), 1)
    while scheduler.step():
        pass
    errors = []
    for ticket in (bad, neighbour):
        with pytest.raises(InternalError) as info:
            ticket.result(0)
        assert info.value.message == "Batched computation failed: ValueError: boom"
        assert info.value.__cause__ is boom
        errors.append(info.value)
    assert errors[0] is not errors[1]  # each caller raises its own exception object
    assert later.result(0) == ["later:0"]
    assert queue.statistics().failed_batches == 1


def test_serving_error_keeps_its_code(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    queue = scheduler.add_queue("q", QueueOptions(), Recorder(lambda batch: InvalidArgumentError("bad rows")))
    ticket = queue.submit(rows("x", 1), 1)
    scheduler.step()
    with pytest.raises(ServingError) as info:
        ticket.result(0)
    assert (info.value.code, info.value.message) == (Code.INVALID_ARGUMENT, "bad rows")


def test_wrong_number_of_results_is_internal(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    queue = scheduler.add_queue("q", QueueOptions(), lambda batch: [])
    ticket = queue.submit(rows("x", 1), 1)
    scheduler.step()
    with pytest.raises(InternalError, match="returned 0 results for 1 tasks"):
        ticket.result(0)


def test_system_exit_in_the_computation_does_not_kill_the_scheduler(threaded: BatchScheduler) -> None:
    def process(batch: Batch[Any]) -> list[Any]:
        if batch.tasks[0].payload == "exit":
            raise SystemExit(3)
        return ["ok"] * len(batch.tasks)

    queue = threaded.add_queue("q", QueueOptions(), process)
    with pytest.raises(InternalError, match="SystemExit"):
        queue.submit("exit", 1).result(WAIT_S)  # on a batch thread: answered INTERNAL
    assert queue.run("fine", 1) == "ok"
    assert threaded.thread_count == 2
    with pytest.raises(SystemExit):  # run inline on the caller's thread (idle model): raised there
        queue.run("exit", 1)
    assert queue.run("fine", 1) == "ok"
    assert queue.statistics().failed_batches == 2


class _DyingScheduler(BatchScheduler):
    """A scheduler with a bug: its first worker dies right after answering a batch."""

    died = False

    def _execute(self, queue: Any, waiting: Any) -> None:
        super()._execute(queue, waiting)
        if not self.died:
            self.died = True
            raise RuntimeError("scheduler bug")


def test_a_dead_worker_is_replaced_and_later_tasks_are_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: deaths.append(args.exc_value))
    scheduler = _DyingScheduler(1, name="dying")
    try:
        queue = scheduler.add_queue("q", QueueOptions(), lambda batch: ["ok"] * len(batch.tasks))
        (first_worker,) = [t for t in threading.enumerate() if t.name == "dying-1"]
        assert queue.submit("a", 1).result(WAIT_S) == "ok"
        first_worker.join(WAIT_S)
        assert not first_worker.is_alive() and scheduler.died
        assert queue.submit("b", 1).result(WAIT_S) == "ok"  # answered by the replacement
        assert scheduler.thread_count == 1
        assert [str(e) for e in deaths] == ["scheduler bug"]
    finally:
        scheduler.stop()


# --- shutdown, close, statistics -----------------------------------------------------------------


def test_stop_answers_queued_tasks_unavailable_and_waits_for_running_ones() -> None:
    scheduler = BatchScheduler(1)
    recorder = Recorder()
    queue = scheduler.add_queue("q", QueueOptions(max_batch_size=1), recorder)
    running = queue.submit(rows("block", 1), 1)
    assert recorder.started.wait(WAIT_S)
    queued = [queue.submit(rows(f"q{i}", 1), 1) for i in range(2)]
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    for ticket in queued:
        with pytest.raises(UnavailableError, match="stopped before the request ran"):
            ticket.result(WAIT_S)
    assert stopper.is_alive()  # stop() waits for the running batch
    recorder.release.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert running.result(0) == ["block:0"]
    with pytest.raises(UnavailableError):
        queue.submit(rows("after", 1), 1)
    with pytest.raises(UnavailableError):
        scheduler.add_queue("q2", QueueOptions(), recorder)
    assert queue.statistics().shut_down == 2 and scheduler.thread_count == 0


def test_close_drains_queued_tasks_then_refuses_new_ones() -> None:
    scheduler = BatchScheduler(1)
    try:
        recorder = Recorder()
        queue = scheduler.add_queue("q", QueueOptions(max_batch_size=1, batch_timeout_micros=3600 * 10**6), recorder)
        running = queue.submit(rows("block", 1), 1)
        assert recorder.started.wait(WAIT_S)
        queued = queue.submit(rows("queued", 1), 1)
        closer = threading.Thread(target=queue.close)
        closer.start()
        recorder.release.set()
        closer.join(WAIT_S)
        assert not closer.is_alive()
        assert running.result(0) == ["block:0"] and queued.result(0) == ["queued:0"]
        with pytest.raises(UnavailableError, match="closed"):
            queue.submit(rows("after", 1), 1)
        assert scheduler.statistics() == []
    finally:
        scheduler.stop()


def test_close_without_threads_runs_the_waiting_batches(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, _ = manual
    queue = scheduler.add_queue("q", QueueOptions(), Recorder())
    ticket = queue.submit(rows("x", 1), 1)
    queue.close()
    assert ticket.result(0) == ["x:0"]


def test_threads_start_with_the_first_queue_and_end_after_the_last() -> None:
    scheduler = BatchScheduler(2, name="lifetime")
    try:
        assert scheduler.thread_count == 0
        queue = scheduler.add_queue("q", QueueOptions(), lambda batch: [1] * len(batch.tasks))
        assert scheduler.thread_count == 2
        assert {t.name for t in threading.enumerate() if t.name.startswith("lifetime-")} == {"lifetime-1", "lifetime-2"}
        threads = [t for t in threading.enumerate() if t.name.startswith("lifetime-")]
        queue.close()
        for thread in threads:
            thread.join(WAIT_S)
        assert scheduler.thread_count == 0 and not any(t.is_alive() for t in threads)
        queue = scheduler.add_queue("again", QueueOptions(), lambda batch: [2] * len(batch.tasks))
        assert queue.run("x", 1) == 2
    finally:
        scheduler.stop()


def test_statistics_record_batches_and_queue_delay(manual: tuple[BatchScheduler, FakeClock]) -> None:
    scheduler, clock = manual
    queue = scheduler.add_queue("m sig", QueueOptions(max_batch_size=4), Recorder())
    queue.submit(rows("a", 1), 1)
    clock.now = 1.0
    queue.submit(rows("b", 2), 2)
    snapshot = queue.statistics()
    assert (snapshot.enqueued_tasks, snapshot.enqueued_batches, snapshot.batches) == (2, 1, 0)
    clock.now = 3.0
    scheduler.step()
    queue.submit(rows("c", 4), 4)
    scheduler.step()
    stats = queue.statistics()
    assert stats.name == "m sig" and (stats.batches, stats.tasks, stats.rows) == (2, 3, 7)
    assert dict(stats.batch_sizes) == {3: 1, 4: 1} and stats.mean_batch_size == 3.5
    assert (stats.queue_delay_count, stats.queue_delay_s_sum, stats.queue_delay_s_max) == (3, 5.0, 3.0)
    assert stats.enqueued_tasks == 0 and stats.in_flight_batches == 0
    combined = QueueStatistics.combine("m", [stats, stats])
    assert (combined.name, combined.batches, combined.queue_delay_s_max) == ("m", 4, 3.0)
    assert dict(combined.batch_sizes) == {3: 2, 4: 2}
    assert [s.name for s in scheduler.statistics()] == ["m sig"]


# --- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an int >= 1, got 0"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros must be an int >= 0, got -1"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches must be an int >= 1, got 0"),
        ({"max_batch_size": 8, "max_execution_batch_size": 9},
         "max_execution_batch_size must be <= max_batch_size (8), got 9"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 4)},
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)},
         "allowed_batch_sizes entries must be monotonically increasing, got [4, 2, 8]"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (0, 8)}, "allowed_batch_sizes entries must be ints >= 1, got [0, 8]"),
    ],
)
def test_queue_options_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        QueueOptions(**kwargs)
    assert info.value.message == message


def test_execution_limit_and_padded_size() -> None:
    assert QueueOptions(max_batch_size=8).execution_limit == 8
    assert QueueOptions(max_batch_size=8, max_execution_batch_size=4).execution_limit == 8  # not splitting
    assert QueueOptions(max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4).execution_limit == 4
    options = QueueOptions(max_batch_size=8, allowed_batch_sizes=(2, 8))
    assert [options.padded_size(n) for n in (1, 2, 3, 8)] == [2, 2, 8, 8]
    with pytest.raises(InvalidArgumentError, match="num_batch_threads must be an int >= 1, got 0"):
        BatchScheduler(0)
