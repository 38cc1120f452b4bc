"""Dynamic request batching: one :class:`BatchScheduler` (threads) shared by many :class:`BatchQueue` s.

TF Serving's ``SharedBatchScheduler`` semantics, plus bounded waiting, deadlines and
adaptive release. Generic: a task is an opaque ``payload`` with a ``size`` in rows; a
queue's ``process(batch)`` callback computes a whole :class:`Batch` at once and returns one
result per task, in order. Nothing here imports numpy or TensorFlow
(:mod:`pyserving.loaders.batching` does the tensor work for servables)::

    scheduler = BatchScheduler(num_batch_threads=2)
    queue = scheduler.add_queue("m/serving_default", QueueOptions(max_batch_size=32), process,
                                merge=concat_parts)
    result = queue.run(payload, size=len(payload), key=shape_key, deadline=time.monotonic() + 1)
    ...
    queue.close()          # drain and leave; the threads end with the last queue

Batch formation. A queue keeps a FIFO of waiting batches. A task joins the newest waiting
batch of the same ``key`` that has room (the key says which tasks may share one call:
signature, output filter, input shapes...); otherwise it opens a new batch and the previous
one of that key is closed. ``solo=True`` tasks never share a batch. A batch holds at most
``options.execution_limit`` rows. With ``enable_large_batch_splitting`` a task is split:
its first part fills the room left in the open batch, the rest goes into new batches of at
most ``max_execution_batch_size`` rows; each part reaches ``process`` as a
:class:`BatchTask` (``payload``, ``offset``, ``size``; nothing is copied) and the caller's
answer is ``merge([part results])``.

Release. A waiting batch may run at once when ``batch_timeout_micros`` is 0 (then batches
grow only while every thread is busy: TF Serving's advice for CPUs). Otherwise it waits
until it is full or closed, its first task waited ``batch_timeout_micros``, its queue is
closing, or **no batch of its queue is running**: an idle model runs a lone request at
once instead of waiting out the timeout (a fixed wait only pays while the model is busy).
Free threads take the queues' head batches round-robin; at most ``num_batch_threads``
batches run at once over all queues. Fast path: when :meth:`BatchQueue.run` queues a task
whose batch may run now and a batch slot is free (an idle model), the caller computes that
batch on its own thread (other tasks that joined it are answered too) instead of handing it
to a scheduler thread and waiting to be woken: about 50 us less per lone request.

Refusals, raised by :meth:`BatchQueue.submit` at once (a refused task is never queued):
``size > max_batch_size`` -> INVALID_ARGUMENT ``Task size N is larger than maximum input
batch size M``; no room within ``max_enqueued_batches`` waiting batches -> UNAVAILABLE
``The batch scheduling queue to which this task was submitted is full...`` (TF Serving's
messages, so memory never grows with load); a deadline already passed ->
DEADLINE_EXCEEDED; a closed queue or stopped scheduler -> UNAVAILABLE.

Deadlines (values of ``clock``, by default ``time.monotonic()``): a task whose deadline
passed before its batch starts is answered DEADLINE_EXCEEDED and never computed;
:meth:`BatchQueue.run` stops waiting at the deadline and cancels the task if it has not
started. A task that started is waited for (a servable's caller must keep its handle until
the model finished its rows) and its answer is returned even if late.

Threading contract:

* ``add_queue`` / ``submit`` / ``run`` / ``statistics`` / ``close`` / ``stop``: any thread
  except a ``process`` callback (``close`` and ``stop`` there would wait for themselves).
  ``submit`` only takes one short lock; ``run`` blocks until the answer; ``close`` blocks
  until the queue's waiting and running batches finished (a drain: queued tasks still
  run); ``stop`` answers every waiting task UNAVAILABLE at once, then blocks until the
  running batches finished.
* ``process(batch)`` runs with no lock held on a scheduler thread, on the thread of a
  ``run`` caller (the fast path above), or inside :meth:`BatchScheduler.step`; different
  batches of one queue may run concurrently. ``merge`` runs on the caller's thread.
* One lock, the scheduler's ``_cond``, guards every queue's waiting batches and counters
  and the thread set; no callback runs while it is held.

Failure: every submitted task gets exactly one answer. If ``process`` raises (anything,
``SystemExit`` included) or returns the wrong number of results, exactly the tasks of that
batch fail: a ``ServingError`` keeps its code and message; any other exception is logged
once with its traceback and answered INTERNAL. Each caller gets its own exception object
(the original is its ``__cause__``). On the fast path a ``KeyboardInterrupt`` /
``SystemExit`` is raised again in the caller once the batch is answered. A worker thread
that ends by a bug is logged and replaced while queues remain.

Lifetime: threads (daemon, named ``<name>-N``) start with the first queue and end once the
last queue closed, so a scheduler needs no explicit stop unless waiting tasks must be
failed. Testing: ``run_threads=False`` starts no threads and :meth:`BatchScheduler.step`
runs one ready batch on the calling thread; ``clock`` is injectable.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from pyserving.servable.batch_queue import (
    Batch,
    BatchQueue,
    BatchTask,
    Merge,
    ProcessBatch,
    QueueOptions,
    Ticket,
    _Task,
    _Waiting,
    answer_copy,
)
from pyserving.servable.batch_statistics import QueueStatistics
from pyserving.servable.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
)

__all__ = [
    "BatchScheduler",
    "BatchQueue",
    "QueueOptions",
    "Batch",
    "BatchTask",
    "Ticket",
    "QueueStatistics",
    "ProcessBatch",
    "Merge",
]

_log = logging.getLogger(__name__)

_Job = tuple[BatchQueue[Any, Any], _Waiting]


class BatchScheduler:
    """A pool of ``num_batch_threads`` threads running the batches of every queue added.

    See the module docstring for the contract. ``name`` names the threads and appears in
    messages (TF Serving's ``thread_pool_name``).
    """

    def __init__(
        self,
        num_batch_threads: int,
        *,
        name: str = "batch_threads",
        run_threads: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(num_batch_threads, bool) or not isinstance(num_batch_threads, int) or num_batch_threads < 1:
            raise InvalidArgumentError(f"num_batch_threads must be an int >= 1, got {num_batch_threads!r}")
        self.name = name
        self.num_batch_threads = num_batch_threads
        self._run_threads = run_threads
        self._clock = clock
        self._cond = threading.Condition()  # guards everything below and every queue's state
        self._queues: list[BatchQueue[Any, Any]] = []
        self._next = 0  # round-robin position in _queues
        self._threads: set[threading.Thread] = set()
        self._thread_seq = 0
        self._running = 0  # batches running now (on threads or inline); at most num_batch_threads
        self._stopped = False

    # -- queues ----------------------------------------------------------------------------

    def add_queue(
        self, name: str, options: QueueOptions, process: ProcessBatch[Any, Any], *, merge: Merge[Any] | None = None
    ) -> BatchQueue[Any, Any]:
        """A new queue whose batches this scheduler runs with ``process``.

        ``merge(part_results)`` builds a split task's answer (None: the list of parts).
        """
        with self._cond:
            if self._stopped:
                raise UnavailableError(f"The batch scheduler {self.name} is stopped; cannot add queue {name}")
            queue: BatchQueue[Any, Any] = BatchQueue(self, name, options, process, merge)
            self._queues.append(queue)
            self._start_threads_locked()
        return queue

    def _remove(self, queue: BatchQueue[Any, Any]) -> None:
        with self._cond:
            if queue in self._queues:
                self._queues.remove(queue)
                self._next = 0
            self._cond.notify_all()  # threads with nothing left to serve end

    def statistics(self) -> list[QueueStatistics]:
        """A snapshot of every queue, in the order they were added."""
        with self._cond:
            queues = list(self._queues)
        return [queue.statistics() for queue in queues]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` is true; False after ``timeout_s`` seconds.

        ``predicate`` is called with the scheduler's lock held (it may read ``statistics()``)
        each time a task is queued or a batch ends. For tests and monitoring.
        """
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    @property
    def thread_count(self) -> int:
        """Worker threads alive now."""
        with self._cond:
            return len(self._threads)

    # -- running batches -------------------------------------------------------------------

    def step(self) -> bool:
        """Run one ready batch on this thread; False when none is ready. For ``run_threads=False``."""
        with self._cond:
            job, _ = self._pick_locked(self._clock())
        if job is None:
            return False
        self._execute(*job)
        return True

    def _step_queue(self, queue: BatchQueue[Any, Any]) -> bool:
        """Run ``queue``'s head batch on this thread (draining without threads)."""
        with self._cond:
            if not queue._batches:
                return False
            job = self._take_locked(queue)
        self._execute(*job)
        return True

    def _pick_locked(self, now: float) -> tuple[_Job | None, float | None]:
        """The next ready head batch (round-robin), else when the earliest may become ready
        (None: nothing to wait for, or every batch slot is taken)."""
        if self._running >= self.num_batch_threads:
            return None, None  # a batch that ends notifies
        queues = self._queues
        wake_at: float | None = None
        for i in range(len(queues)):
            index = (self._next + i) % len(queues)
            queue = queues[index]
            if not queue._batches:
                continue
            if queue._head_ready(now):
                self._next = (index + 1) % len(queues)
                return self._take_locked(queue), None
            when = queue._wake_at()
            wake_at = when if wake_at is None else min(wake_at, when)
        return None, wake_at

    def _take_locked(self, queue: BatchQueue[Any, Any]) -> _Job:
        waiting = queue._batches.popleft()
        queue._in_flight += 1
        self._running += 1
        return queue, waiting

    def _claim_locked(self, queue: BatchQueue[Any, Any], task: _Task, now: float) -> _Job | None:
        """The batch holding ``task`` for its caller to run inline, when it is the queue's ready
        head and a batch slot is free (threads mode only); else None."""
        if not self._run_threads or self._running >= self.num_batch_threads or not queue._batches:
            return None
        head = queue._batches[0]
        if task not in head.tasks or not queue._head_ready(now):
            return None
        return self._take_locked(queue)

    def _execute(self, queue: BatchQueue[Any, Any], waiting: _Waiting, inline: bool = False) -> None:
        """Answer every task of ``waiting``: expired / cancelled ones without running them.

        ``inline``: on a caller's thread; a ``BaseException`` that is not an ``Exception``
        (KeyboardInterrupt, SystemExit) is raised again once the batch is answered."""
        now = self._clock()
        live: list[_Task] = []
        delays: list[float] = []
        expired = cancelled = 0
        for task in waiting.tasks:
            if not task.future.set_running_or_notify_cancel():
                expired, cancelled = (expired + 1, cancelled) if task.gave_up else (expired, cancelled + 1)
            elif task.deadline is not None and task.deadline <= now:
                task.future.set_exception(_expired_error())
                expired += 1
            else:
                task.started_at = now
                live.append(task)
                delays.append(now - task.enqueued_at)
        rows = sum(task.part.size for task in live)
        padded = rows if waiting.solo else queue.options.padded_size(rows)
        failed = False
        try:
            if live:
                batch = Batch(queue.name, waiting.key, tuple(t.part for t in live), rows, padded, waiting.solo)
                results = queue._process(batch)
                if len(results) != len(live):
                    raise InternalError(
                        f"Batch of queue {queue.name} returned {len(results)} results for {len(live)} tasks"
                    )
                for task, result in zip(live, results):
                    task.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - every task of the batch must be answered
            failed = True
            error = exc if isinstance(exc, ServingError) else self._internal_error(queue, exc)
            for task in live:
                if not task.future.done():
                    task.future.set_exception(answer_copy(error))
            if inline and not isinstance(exc, Exception):
                raise
        finally:
            for task in live:  # defensive: nothing above may leave a caller waiting forever
                if not task.future.done():
                    task.future.set_exception(InternalError(f"Batch of queue {queue.name} ended without an answer"))
            with self._cond:
                queue._in_flight -= 1
                self._running -= 1
                stats = queue._stats
                if live:
                    stats.record_batch(rows, padded - rows, delays, failed)
                stats.expired += expired
                stats.cancelled += cancelled
                self._cond.notify_all()  # the queue may be idle now, or drained for close()

    @staticmethod
    def _internal_error(queue: BatchQueue[Any, Any], exc: BaseException) -> ServingError:
        _log.error("A batch of %s failed with an unexpected error; its requests get INTERNAL", queue.name,
                   exc_info=(type(exc), exc, exc.__traceback__))
        error = InternalError(f"Batched computation failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    # -- threads ---------------------------------------------------------------------------

    def _start_threads_locked(self) -> None:
        if not self._run_threads or self._stopped or not self._queues:
            return
        while len(self._threads) < self.num_batch_threads:
            self._thread_seq += 1
            thread = threading.Thread(target=self._worker, name=f"{self.name}-{self._thread_seq}", daemon=True)
            self._threads.add(thread)
            thread.start()

    def _worker(self) -> None:
        me = threading.current_thread()
        finished = False
        try:
            while True:
                with self._cond:
                    job = self._wait_locked(me)
                if job is None:
                    finished = True
                    return
                self._execute(*job)
        finally:
            if not finished:
                with self._cond:
                    self._threads.discard(me)
                    _log.error("Batch thread %s of %s ended unexpectedly; starting a replacement", me.name, self.name)
                    self._start_threads_locked()
                    self._cond.notify_all()

    def _wait_locked(self, me: threading.Thread) -> _Job | None:
        while True:
            if self._stopped or not self._queues:
                self._threads.discard(me)  # under the lock: add_queue then starts a new thread
                self._cond.notify_all()  # for wait_for(thread_count == 0)
                return None
            now = self._clock()
            job, wake_at = self._pick_locked(now)
            if job is not None:
                return job
            self._cond.wait(None if wake_at is None else max(0.0, wake_at - now))

    # -- shutdown --------------------------------------------------------------------------

    def stop(self) -> None:
        """Answer every waiting task UNAVAILABLE, refuse new ones, wait for running batches
        and end the threads. Idempotent."""
        with self._cond:
            first = not self._stopped
            self._stopped = True
            pending: list[tuple[BatchQueue[Any, Any], _Task]] = []
            for queue in self._queues:
                queue._closed = True
                for waiting in queue._batches:
                    pending.extend((queue, task) for task in waiting.tasks)
                queue._batches.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        counts: dict[int, tuple[BatchQueue[Any, Any], int, int]] = {}
        for queue, task in pending:
            _, shut, gave_up = counts.get(id(queue), (queue, 0, 0))
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(
                    UnavailableError(f"The batch scheduler {self.name} stopped before the request ran")
                )
                shut += 1
            else:
                gave_up += 1  # its caller already gave up (deadline) or cancelled it
            counts[id(queue)] = (queue, shut, gave_up)
        with self._cond:
            for queue, shut, gave_up in counts.values():
                queue._stats.shut_down += shut
                queue._stats.cancelled += gave_up
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join()
        with self._cond:  # batches that callers run on their own threads (the fast path)
            self._cond.wait_for(lambda: self._running == 0)
        if first and pending:
            _log.info("Batch scheduler %s stopped; %d queued request(s) answered UNAVAILABLE", self.name, len(pending))


def _expired_error() -> ServingError:
    return DeadlineExceededError("The request's deadline passed while it waited in the batch queue; it was not run")

