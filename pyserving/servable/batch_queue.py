"""Queues of :mod:`pyserving.servable.batcher`: options, tasks, batches, tickets, one queue.

Implementation module: import the public names from :mod:`pyserving.servable.batcher`,
whose docstring states the contract (batch formation, release, refusals, deadlines,
threading, failure). A :class:`BatchQueue` keeps its waiting batches; its scheduler's one
lock (``BatchScheduler._cond``) guards them, so the scheduler reads them directly.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, Hashable, Sequence, TypeVar

from pyserving.servable.batch_statistics import QueueStatistics, StatisticsRecorder
from pyserving.servable.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
)

if TYPE_CHECKING:  # pragma: no cover
    from pyserving.servable.batcher import BatchScheduler

__all__ = ["QueueOptions", "BatchTask", "Batch", "BatchQueue", "Ticket", "ProcessBatch", "Merge", "answer_copy"]

T = TypeVar("T")
R = TypeVar("R")


def _positive(name: str, value: Any, lowest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise InvalidArgumentError(f"{name} must be an int >= {lowest}, got {value!r}")


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """One queue's limits. Sizes are rows (dim 0); times in microseconds. TF Serving's defaults.

    ``max_execution_batch_size`` (None = ``max_batch_size``) matters only with
    ``enable_large_batch_splitting``. ``allowed_batch_sizes``: increasing, the last equal to
    ``max_batch_size``; a batch is reported padded up to the next one (``Batch.padded_size``).
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        _positive("max_batch_size", self.max_batch_size, 1)
        _positive("batch_timeout_micros", self.batch_timeout_micros, 0)
        _positive("max_enqueued_batches", self.max_enqueued_batches, 1)
        if self.max_execution_batch_size is not None:
            _positive("max_execution_batch_size", self.max_execution_batch_size, 1)
            if self.max_execution_batch_size > self.max_batch_size:
                raise InvalidArgumentError(
                    f"max_execution_batch_size must be <= max_batch_size ({self.max_batch_size}), "
                    f"got {self.max_execution_batch_size}"
                )
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise InvalidArgumentError(f"allowed_batch_sizes entries must be ints >= 1, got {sizes}")
            if any(b <= a for a, b in zip(sizes, sizes[1:])):
                raise InvalidArgumentError(
                    f"allowed_batch_sizes entries must be monotonically increasing, got {sizes}"
                )
            if sizes[-1] != self.max_batch_size:
                raise InvalidArgumentError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )

    @property
    def execution_limit(self) -> int:
        """Most rows in one batch."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, rows: int) -> int:
        """``rows`` rounded up to the next allowed batch size (``rows`` when none are set)."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


@dataclass(frozen=True, slots=True)
class BatchTask(Generic[T]):
    """Rows ``[offset, offset + size)`` of a submitted payload (all of it unless split)."""

    payload: T
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """What ``process`` receives: tasks in queue order, ``size`` rows in all, to be padded to
    ``padded_size`` rows (``allowed_batch_sizes``); ``solo`` batches hold one unshareable task."""

    queue_name: str
    key: Hashable
    tasks: tuple[BatchTask[T], ...]
    size: int
    padded_size: int
    solo: bool = False


ProcessBatch = Callable[[Batch[T]], Sequence[R]]
Merge = Callable[[list[R]], R]


class _Task:
    __slots__ = ("part", "deadline", "enqueued_at", "started_at", "future", "gave_up")

    def __init__(self, part: BatchTask[Any], deadline: float | None, now: float) -> None:
        self.part = part
        self.deadline = deadline
        self.enqueued_at = now
        self.started_at: float | None = None  # when its batch began to run (scheduler clock)
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.gave_up = False  # its caller stopped waiting at the deadline (counted as expired)


class _Waiting:
    """A batch in a queue, not started yet."""

    __slots__ = ("key", "solo", "tasks", "rows", "closed", "opened_at")

    def __init__(self, key: Hashable, solo: bool, now: float) -> None:
        self.key, self.solo, self.opened_at = key, solo, now
        self.tasks: list[_Task] = []
        self.rows = 0
        self.closed = solo


def answer_copy(error: ServingError) -> ServingError:
    """A fresh exception per caller: raising one object on many threads tangles tracebacks."""
    copy = ServingError.from_code(error.code, error.message)
    copy.__cause__ = error.__cause__ or error
    return copy


class Ticket(Generic[R]):
    """The answer to one submitted task (all its parts). Thread-safe."""

    def __init__(self, tasks: list[_Task], merge: Merge[R] | None) -> None:
        self._tasks = tasks
        self._merge = merge

    def done(self) -> bool:
        return all(t.future.done() for t in self._tasks)

    @property
    def started_at(self) -> float | None:
        """When the last of its parts began to run, on the scheduler's clock
        (``time.monotonic()`` by default); None until every part has started."""
        starts = [task.started_at for task in self._tasks]
        return None if any(start is None for start in starts) else max(starts)  # type: ignore[type-var]

    def cancel(self) -> bool:
        """Cancel every part not started; True when none of them had started."""
        return all([t.future.cancel() for t in self._tasks])

    def give_up(self) -> None:
        """The caller stopped waiting (its deadline passed): cancel every part not started,
        counted as expired; parts already running finish and are answered unseen."""
        for task in self._tasks:
            task.gave_up = True
        self.cancel()


    def add_done_callback(self, callback: Callable[[Ticket[R]], None]) -> None:
        """Call ``callback(ticket)`` once every part is answered (or cancelled): on the thread
        that answers the last part (a batch thread), or at once on this thread when all are
        answered already. It must be quick and must not raise (an exception is logged by
        ``concurrent.futures`` and swallowed). Then :meth:`result` returns without waiting."""
        tasks = self._tasks
        if len(tasks) == 1:
            tasks[0].future.add_done_callback(lambda _future: callback(self))
            return
        remaining = [len(tasks)]
        lock = threading.Lock()

        def part_done(_future: concurrent.futures.Future[Any]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                callback(self)

        for task in tasks:
            task.future.add_done_callback(part_done)

    def result(self, timeout: float | None = None) -> R:
        """Block until every part is answered; return the answer or raise its ServingError.

        Raises ``TimeoutError`` when not all parts are answered within ``timeout`` seconds,
        and DEADLINE_EXCEEDED for a task whose part was cancelled before it ran.
        """
        futures = [task.future for task in self._tasks]
        end = None if timeout is None else time.monotonic() + timeout
        for future in futures:  # a cancelled part counts as answered (not computed)
            try:
                future.exception(None if end is None else max(0.0, end - time.monotonic()))
            except concurrent.futures.CancelledError:
                continue
            except concurrent.futures.TimeoutError:
                raise TimeoutError("the batched task is not answered yet") from None
        results = []
        for future in futures:
            if future.cancelled():
                raise DeadlineExceededError(
                    "The request's deadline passed while it waited in the batch queue; it was not run"
                )
            error = future.exception()
            if error is not None:
                raise error
            results.append(future.result())
        if len(results) == 1:
            return results[0]
        return self._merge(results) if self._merge is not None else results  # type: ignore[return-value]


class BatchQueue(Generic[T, R]):
    """One stream of batchable tasks (e.g. one signature of one model version).

    Made by :meth:`BatchScheduler.add_queue`; see the module docstring for the contract.
    """

    def __init__(
        self, scheduler: BatchScheduler, name: str, options: QueueOptions, process: ProcessBatch[T, R],
        merge: Merge[R] | None,
    ) -> None:
        self.name = name
        self.options = options
        self._scheduler = scheduler
        self._process = process
        self._merge = merge
        # All below guarded by scheduler._cond.
        self._batches: collections.deque[_Waiting] = collections.deque()
        self._in_flight = 0
        self._closed = False
        self._stats = StatisticsRecorder(name)

    # -- callers ---------------------------------------------------------------------------

    def submit(
        self, payload: T, size: int, *, key: Hashable = None, solo: bool = False, deadline: float | None = None
    ) -> Ticket[R]:
        """Queue ``payload`` (``size`` rows) and return its :class:`Ticket`; raises the refusals
        of the module docstring at once."""
        return self._submit(payload, size, key, solo, deadline, inline=False)[0]

    def run(
        self, payload: T, size: int, *, key: Hashable = None, solo: bool = False, deadline: float | None = None
    ) -> R:
        """:meth:`submit`, then wait for the answer, giving up at ``deadline`` if not started.

        Fast path: when the task's batch may run now and a batch slot is free (an idle model),
        the batch runs on this thread instead of being handed to a scheduler thread.
        """
        ticket, job = self._submit(payload, size, key, solo, deadline, inline=True)
        if job is not None:
            self._scheduler._execute(*job, inline=True)
        if deadline is None:
            return ticket.result()
        try:
            return ticket.result(max(0.0, deadline - self._scheduler._clock()))
        except TimeoutError:
            ticket.give_up()
            # Parts that started are waited for (their rows are being computed); the
            # cancelled ones make the answer DEADLINE_EXCEEDED.
            return ticket.result()

    def _submit(
        self, payload: T, size: int, key: Hashable, solo: bool, deadline: float | None, inline: bool
    ) -> tuple[Ticket[R], Any]:
        _positive("size", size, 0)
        o = self.options
        sched = self._scheduler
        with sched._cond:
            if self._closed or sched._stopped:
                raise UnavailableError(f"Batch queue {self.name} is closed; the request was not queued")
            if size > o.max_batch_size:
                self._stats.rejected_too_large += 1
                raise InvalidArgumentError(f"Task size {size} is larger than maximum input batch size {o.max_batch_size}")
            now = sched._clock()
            if deadline is not None and deadline <= now:
                self._stats.expired += 1
                raise DeadlineExceededError("The request's deadline passed before it was queued for batching")
            tasks = self._enqueue_locked(payload, size, key, solo, deadline, now)
            job = sched._claim_locked(self, tasks[0], now) if inline and len(tasks) == 1 else None
            if job is None:
                sched._cond.notify_all()
        return Ticket(tasks, self._merge), job

    def statistics(self) -> QueueStatistics:
        with self._scheduler._cond:
            return self._stats.snapshot(
                sum(len(b.tasks) for b in self._batches), len(self._batches), self._in_flight
            )

    def close(self) -> None:
        """Refuse new tasks; block until waiting and running batches finished; leave the
        scheduler. Idempotent. (Without threads, the waiting batches run on this thread.)"""
        sched = self._scheduler
        with sched._cond:
            self._closed = True
            sched._cond.notify_all()
            while sched._run_threads and not sched._stopped and (self._batches or self._in_flight):
                sched._cond.wait()
        while not sched._run_threads and sched._step_queue(self):
            pass
        sched._remove(self)

    # -- scheduler side (lock held) ------------------------------------------------------------

    def _enqueue_locked(
        self, payload: T, size: int, key: Hashable, solo: bool, deadline: float | None, now: float
    ) -> list[_Task]:
        o = self.options
        limit = o.execution_limit
        batches = self._batches
        open_batch = None
        if not solo:
            for batch in reversed(batches):
                if batch.key == key and not batch.closed:
                    open_batch = batch
                    break
        room = limit - open_batch.rows if open_batch is not None else 0
        if open_batch is not None and size <= room:
            return [self._add(open_batch, payload, 0, size, deadline, now)]
        splitting = o.enable_large_batch_splitting and not solo
        if splitting:
            capacity = (o.max_enqueued_batches - len(batches)) * limit + room
            if size > capacity:
                self._stats.rejected_full += 1
                raise UnavailableError(
                    "The batch scheduling queue to which this task was submitted is full; task size is "
                    f"{size} but scheduling capacity is only {capacity} (num_enqueued_batches={len(batches)}, "
                    f"max_enqueued_batches={o.max_enqueued_batches}, open_batch_size="
                    f"{open_batch.rows if open_batch else 0}, max_execution_batch_size={limit})"
                )
        elif len(batches) >= o.max_enqueued_batches:
            self._stats.rejected_full += 1
            raise UnavailableError(
                "The batch scheduling queue to which this task was submitted is full; currently "
                f"{len(batches)} batches enqueued and max_enqueued_batches is {o.max_enqueued_batches}"
            )
        tasks = []
        offset = 0
        if splitting and room > 0:
            tasks.append(self._add(open_batch, payload, 0, room, deadline, now))  # type: ignore[arg-type]
            offset = room
        elif open_batch is not None:
            open_batch.closed = True  # the task does not fit: later tasks of this key start anew
        while offset < size or not tasks:
            part = min(size - offset, limit) if splitting else size - offset
            batch = _Waiting(key, solo, now)
            batches.append(batch)
            tasks.append(self._add(batch, payload, offset, part, deadline, now))
            offset += part
        return tasks

    def _add(self, batch: _Waiting, payload: T, offset: int, size: int, deadline: float | None, now: float) -> _Task:
        task = _Task(BatchTask(payload, offset, size), deadline, now)
        batch.tasks.append(task)
        batch.rows += size
        if batch.rows >= self.options.execution_limit:
            batch.closed = True
        return task

    def _head_ready(self, now: float) -> bool:
        head = self._batches[0]
        timeout_micros = self.options.batch_timeout_micros
        return (
            head.closed
            or timeout_micros == 0
            or self._closed
            or self._in_flight == 0
            or now >= head.opened_at + timeout_micros / 1e6
        )

    def _wake_at(self) -> float:
        return self._batches[0].opened_at + self.options.batch_timeout_micros / 1e6

