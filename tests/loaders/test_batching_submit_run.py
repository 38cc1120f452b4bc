"""BatchingServable.submit_run: queue a run and return its Ticket, for callers without a thread.

Checked here: concurrent submitters each get exactly their own rows (mixed sizes, with and
without splitting); the inner model never runs on the submitting thread (not even on an
idle model, where ``run`` takes its fast path); refusals (too large, full queue, unknown
signature, bad inputs, a deadline already passed, a closed servable) raise at once and
never reach the model; a deadline that passes in the queue answers DEADLINE_EXCEEDED
without running; the ticket's callback runs once, on a batch thread.

A numpy fake as the inner servable; no TensorFlow. Real threads where threads are the
point, ``run_threads=False`` + ``step()`` and a fake clock where order and time must be
exact. No sleeps: threads meet at Events, every wait is bounded.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest

from pyserving.loaders.batching import BatchingServable
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.servable.batcher import BatchScheduler, Ticket
from pyserving.servable.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
)
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from tests.support.concurrency import hammer

WAIT_S = 30.0  # bound of every wait; a healthy run never gets near it
SCHEDULER = "submit_run"  # the batch threads are named "submit_run-N"


class Inner:
    """``y = 2 x`` and ``total`` = row sums, for any shape; ``fixed`` declares dimension 0 = 2.

    Records the inputs and the thread of every call. ``gate`` (when set) holds the next call
    until the test sets it (``entered`` is set then); ``fail`` is raised by every call.
    """

    def __init__(self) -> None:
        self._signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, None)},
                {"y": TensorSpec(DType.FLOAT, None), "total": TensorSpec(DType.FLOAT, (None,))},
            ),
            "fixed": SignatureSpec({"x": TensorSpec(DType.FLOAT, (2, None))}, {"y": TensorSpec(DType.FLOAT, (2, None))}),
        }
        self.seen: list[np.ndarray] = []
        self.threads: list[threading.Thread] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        self._lock = threading.Lock()  # guards seen, threads and gate

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict:
        if signature_name not in self._signatures:
            raise AssertionError(f"the inner model was asked for unknown signature {signature_name!r}")
        with self._lock:
            self.seen.append(np.array(inputs["x"], copy=True))
            self.threads.append(threading.current_thread())
            gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            assert gate.wait(WAIT_S), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        x = np.asarray(inputs["x"], dtype=np.float32)
        outputs = {"y": x * 2, "total": x.reshape(len(x), -1).sum(axis=1) if x.ndim else x}
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}

    def calls(self) -> int:
        with self._lock:
            return len(self.seen)

    def computed_values(self) -> set[float]:
        with self._lock:
            return {float(v) for x in self.seen for v in np.ravel(x)}


@pytest.fixture
def scheduler() -> Iterator[BatchScheduler]:
    s = BatchScheduler(2, name=SCHEDULER)
    yield s
    s.stop()


@pytest.fixture
def manual() -> Iterator[BatchScheduler]:
    """No threads: batches run only inside ``step()``."""
    s = BatchScheduler(1, run_threads=False)
    yield s
    s.stop()


def _servable(scheduler: BatchScheduler, inner: Inner | None = None, **parameters: Any) -> BatchingServable:
    return BatchingServable(inner or Inner(), scheduler, BatchingParameters(**parameters), name="m")


def _x(rows: int, value: float, width: int = 3) -> np.ndarray:
    return np.full((rows, width), value, np.float32) + np.arange(rows, dtype=np.float32).reshape(-1, 1) / 100


# -- every caller gets its own rows ------------------------------------------------------------


@pytest.mark.parametrize("splitting", [False, True], ids=["whole", "split"])
def test_concurrent_submitters_each_get_exactly_their_rows(scheduler: BatchScheduler, splitting: bool) -> None:
    inner = Inner()
    parameters: dict[str, Any] = {"max_batch_size": 16, "max_enqueued_batches": 1000}
    if splitting:
        parameters.update(enable_large_batch_splitting=True, max_execution_batch_size=5)
    servable = _servable(scheduler, inner, **parameters)
    submitters: set[threading.Thread] = set()
    lock = threading.Lock()

    def one_client(number: int, _call: int) -> str | None:
        with lock:
            submitters.add(threading.current_thread())
        rng = np.random.default_rng(number)
        requests = []
        for call in range(15):  # queue all first, then collect: many tickets in flight at once
            x = _x(int(rng.integers(1, 17)), number * 1000 + call * 10)
            output_filter = ("y",) if call % 2 else ()
            requests.append((x, output_filter, servable.submit_run("serving_default", {"x": x}, output_filter)))
        for call, (x, output_filter, ticket) in enumerate(requests):
            out = ticket.result(WAIT_S)
            if set(out) != ({"y"} if output_filter else {"y", "total"}):
                return f"call {call}: outputs {sorted(out)} for filter {output_filter}"
            if not np.array_equal(out["y"], x * 2):
                return f"call {call}: got rows of another request"
            if not output_filter and not np.allclose(out["total"], x.sum(axis=1)):
                return f"call {call}: wrong totals"
        return None

    assert hammer(12, 1, one_client, WAIT_S) == []
    assert not submitters & set(inner.threads), "the model ran on a submitting thread"
    assert all(t.name.startswith(f"{SCHEDULER}-") for t in inner.threads)
    stats = servable.statistics()
    assert stats.tasks == 12 * 15 if not splitting else stats.tasks >= 12 * 15  # tasks counts the parts
    assert stats.enqueued_tasks == 0 and stats.failed_batches == 0
    servable.close()


def test_callback_runs_once_on_a_batch_thread_after_every_part(scheduler: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(scheduler, inner, max_batch_size=10, enable_large_batch_splitting=True,
                         max_execution_batch_size=3)
    x = _x(7, 5.0)
    ticket = servable.submit_run("serving_default", {"x": x})  # parts of 3, 3 and 1 rows
    calls: list[tuple[Ticket[Any], threading.Thread]] = []
    called = threading.Event()

    def callback(done: Ticket[Any]) -> None:
        calls.append((done, threading.current_thread()))
        called.set()

    ticket.add_done_callback(callback)
    assert called.wait(WAIT_S)
    assert scheduler.wait_for(lambda: servable.statistics().in_flight_batches == 0, WAIT_S)
    assert len(calls) == 1 and calls[0][0] is ticket
    # Called on a batch thread (or at once here, had every part been answered before it was added).
    assert calls[0][1].name.startswith(f"{SCHEDULER}-") or calls[0][1] is threading.current_thread()
    out = ticket.result(0)
    assert out["y"].tolist() == (x * 2).tolist() and np.allclose(out["total"], x.sum(axis=1))
    assert sorted(len(seen) for seen in inner.seen) == [1, 3, 3]
    servable.close()


# -- never on the caller's thread ----------------------------------------------------------------


def test_an_idle_model_still_runs_on_a_batch_thread(scheduler: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(scheduler, inner)
    one = np.ones((1, 2), np.float32)
    # run() on an idle model takes the fast path: the caller computes its own batch ...
    assert servable.run("serving_default", {"x": one})["y"].tolist() == [[2.0, 2.0]]
    assert inner.threads[-1] is threading.current_thread()
    # ... submit_run never does, whatever the request: batched, unbatchable (a scalar), fixed dim 0.
    requests = [
        ("serving_default", {"x": one * 3}, [[6.0, 6.0]]),
        ("serving_default", {"x": np.array(4.0, np.float32)}, 8.0),
        ("fixed", {"x": np.ones((2, 1), np.float32)}, [[2.0], [2.0]]),
    ]
    for signature, inputs, expected in requests:
        ticket = servable.submit_run(signature, inputs)
        assert ticket.result(WAIT_S)["y"].tolist() == expected
        thread = inner.threads[-1]
        assert thread is not threading.current_thread() and thread.name.startswith(f"{SCHEDULER}-"), signature
    servable.close()


def test_without_batch_threads_nothing_runs_until_a_step(manual: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(manual, inner)
    ticket = servable.submit_run("serving_default", {"x": _x(2, 1.0)})
    assert not ticket.done() and inner.calls() == 0
    assert manual.step()
    assert ticket.done() and ticket.result(0)["y"].tolist() == (_x(2, 1.0) * 2).tolist()


# -- refusals raise at once ---------------------------------------------------------------------------


@pytest.mark.parametrize("splitting", [False, True], ids=["whole", "split"])
def test_too_large_is_invalid_argument_at_once(manual: BatchScheduler, splitting: bool) -> None:
    inner = Inner()
    parameters: dict[str, Any] = {"max_batch_size": 4}
    if splitting:
        parameters.update(enable_large_batch_splitting=True, max_execution_batch_size=2)
    servable = _servable(manual, inner, **parameters)
    with pytest.raises(InvalidArgumentError) as info:
        servable.submit_run("serving_default", {"x": _x(5, 1.0)})
    assert info.value.message == "Task size 5 is larger than maximum input batch size 4"
    stats = servable.statistics()
    assert stats.rejected_too_large == 1 and stats.enqueued_tasks == 0
    assert not manual.step() and inner.calls() == 0


def test_full_queue_is_unavailable_at_once_with_tf_servings_message() -> None:
    scheduler = BatchScheduler(1, name=SCHEDULER)
    try:
        inner = Inner()
        gate = inner.gate = threading.Event()
        servable = _servable(scheduler, inner, max_batch_size=1, max_enqueued_batches=1)
        running = servable.submit_run("serving_default", {"x": _x(1, 1.0)})
        assert inner.entered.wait(WAIT_S)  # it left the queue: the only thread holds it
        waiting = servable.submit_run("serving_default", {"x": _x(1, 2.0)})  # the one batch that may wait
        with pytest.raises(UnavailableError) as info:
            servable.submit_run("serving_default", {"x": _x(1, 3.0)})
        assert info.value.message == (
            "The batch scheduling queue to which this task was submitted is full; currently 1 batches enqueued "
            "and max_enqueued_batches is 1"
        )
        gate.set()
        assert running.result(WAIT_S)["y"].tolist() == (_x(1, 1.0) * 2).tolist()
        assert waiting.result(WAIT_S)["y"].tolist() == (_x(1, 2.0) * 2).tolist()
        assert 3.0 not in inner.computed_values()
        assert servable.statistics().rejected_full == 1
        servable.close()
    finally:
        scheduler.stop()


def test_full_queue_with_splitting_reports_the_capacity(manual: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(manual, inner, max_batch_size=10, max_enqueued_batches=2,
                         enable_large_batch_splitting=True, max_execution_batch_size=3)
    first = servable.submit_run("serving_default", {"x": _x(4, 1.0)})  # batches of 3 and 1 rows
    with pytest.raises(UnavailableError) as info:
        servable.submit_run("serving_default", {"x": _x(3, 2.0)})
    assert info.value.message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 3 but scheduling "
        "capacity is only 2 (num_enqueued_batches=2, max_enqueued_batches=2, open_batch_size=1, "
        "max_execution_batch_size=3)"
    )
    while manual.step():
        pass
    assert first.result(0)["y"].tolist() == (_x(4, 1.0) * 2).tolist()
    assert 2.0 not in inner.computed_values()


def test_unknown_signature_is_failed_precondition_without_asking_the_model(manual: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(manual, inner)
    with pytest.raises(FailedPreconditionError) as info:
        servable.submit_run("nope", {"x": _x(1, 1.0)})
    assert info.value.message == 'Serving signature key "nope" not found.'
    assert inner.calls() == 0 and not manual.step()


@pytest.mark.parametrize(
    ("inputs", "output_filter", "fragment"),
    [
        ({"x": np.ones((2, 1), np.int64)}, (), "DT_INT64"),
        ({"x": np.ones((2, 1), np.float32)}, ("nope",), "output tensor alias not found"),
        ({"x": np.ones((2, 1), np.float32), "extra": np.ones((2,), np.float32)}, (), "extra"),
    ],
    ids=["dtype", "output-filter", "unknown-input"],
)
def test_bad_requests_are_refused_at_once(
    manual: BatchScheduler, inputs: dict[str, np.ndarray], output_filter: tuple[str, ...], fragment: str
) -> None:
    inner = Inner()
    servable = _servable(manual, inner)
    with pytest.raises(InvalidArgumentError, match=fragment):
        servable.submit_run("serving_default", inputs, output_filter)
    assert servable.statistics().enqueued_tasks == 0 and not manual.step() and inner.calls() == 0


def test_deadline_already_passed_is_refused_at_once(manual: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(manual, inner)
    with pytest.raises(DeadlineExceededError):
        servable.submit_run("serving_default", {"x": _x(1, 1.0)}, deadline=0.0)  # long past
    assert servable.statistics().expired == 1 and not manual.step() and inner.calls() == 0


def test_closed_servable_is_unavailable_at_once(scheduler: BatchScheduler) -> None:
    inner = Inner()
    servable = _servable(scheduler, inner)
    servable.close()
    with pytest.raises(UnavailableError, match="closed"):
        servable.submit_run("serving_default", {"x": _x(1, 1.0)})
    assert inner.calls() == 0


# -- answers that come later ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_passing_in_the_queue_answers_deadline_exceeded_without_running() -> None:
    clock = FakeClock()
    scheduler = BatchScheduler(1, run_threads=False, clock=clock)
    try:
        inner = Inner()
        servable = _servable(scheduler, inner)
        late = servable.submit_run("serving_default", {"x": _x(1, 1.0)}, deadline=110.0)
        on_time = servable.submit_run("serving_default", {"x": _x(1, 2.0)}, deadline=130.0)
        clock.now = 120.0
        while scheduler.step():
            pass
        with pytest.raises(DeadlineExceededError, match="it was not run"):
            late.result(0)
        assert on_time.result(0)["y"].tolist() == (_x(1, 2.0) * 2).tolist()
        assert inner.computed_values() == {float(v) for v in np.ravel(_x(1, 2.0))}
        assert servable.statistics().expired == 1
    finally:
        scheduler.stop()


def test_model_error_is_the_tickets_answer_not_a_refusal(scheduler: BatchScheduler) -> None:
    inner = Inner()
    inner.fail = RuntimeError("kaput")
    servable = _servable(scheduler, inner)
    ticket = servable.submit_run("serving_default", {"x": _x(1, 1.0)})  # accepted: the failure comes later
    with pytest.raises(InternalError, match="RuntimeError: kaput"):
        ticket.result(WAIT_S)
    inner.fail = InvalidArgumentError("model says no")
    with pytest.raises(InvalidArgumentError, match="model says no"):
        servable.submit_run("serving_default", {"x": _x(1, 1.0)}).result(WAIT_S)
    servable.close()
