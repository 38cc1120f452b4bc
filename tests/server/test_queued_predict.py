"""Predicts queued on a batching version without a waiting thread.

Part 1, :meth:`DataPlane.batches` / :meth:`DataPlane.start_predict` / :class:`PendingPredict`
over a :class:`StaticServingCore` (and a :class:`BasicManager` for the unload check): which
versions batch; None (without decoding) for a version that does not; the answer and the
version that gave it; the handle held while queued and released before the callback; errors
raised at once with the handle released; a route's statistics recorded and its shadow
mirrored before the callback. Mostly ``run_threads=False`` + ``step()``: deterministic.

Part 2 (``slow``: real uvicorn on a free loopback port, real HTTP): the REST server answers
predicts of a batching version from the event loop. 32 concurrent clients each get their
answer; no worker thread is used for them (the executor's submissions are counted, and the
data plane records which method ran on which thread); answers match the worker path's
byte for byte; a request blocked past ``timeout_ms`` gets 504 and its rows are never
computed; observers get one event per request.

Numpy fakes only (the observer test builds protos, which imports TensorFlow's protos).
No sleeps: threads meet at Events, waits are bounded, every server and scheduler is stopped.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pytest
import requests

from pyserving.loaders.batching import BatchingServable
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.loaders.simple_loader import SimpleLoader
from pyserving.manager.basic_manager import BasicManager, BasicManagerOptions
from pyserving.manager.router import Router
from pyserving.manager.routes import Arm, Route, Shadow
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from pyserving.server import rest_runner
from pyserving.server.data_plane import DataPlane, ModelSpec
from pyserving.server.pending_predict import PendingPredict
from pyserving.server.request_events import RequestEvent
from pyserving.server.rest_server import RestServerHandle, RestServerOptions, start_rest_server
from pyserving.testing import StaticServingCore
from tests.support.concurrency import hammer
from tests.support.polling import poll_until

WAIT_S = 30.0  # bound of every wait; a healthy run never gets near it

_VEC = TensorSpec(DType.FLOAT, (None,))
SIGNATURES = {
    "serving_default": SignatureSpec({"x": _VEC}, {"y": _VEC}),
    "two": SignatureSpec({"x": _VEC}, {"double": _VEC, "square": _VEC}),
    "boom": SignatureSpec({"x": _VEC}, {"y": _VEC}),
}


class Model:
    """``y = x + offset``; ``two``: double and square; ``boom`` raises RuntimeError("kaput").

    Records the x values and the thread of every call. A call whose x holds ``block_on``
    waits for ``gate`` (``entered`` is set then).
    """

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.block_on: float | None = None
        self.gate = threading.Event()
        self.entered = threading.Event()
        self._lock = threading.Lock()  # guards seen and threads
        self.seen: list[list[float]] = []
        self.threads: list[threading.Thread] = []

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return SIGNATURES

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict:
        x = np.asarray(inputs["x"], np.float32)
        with self._lock:
            self.seen.append(x.tolist())
            self.threads.append(threading.current_thread())
        if self.block_on is not None and self.block_on in x:
            self.entered.set()
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        if signature_name == "boom":
            raise RuntimeError("kaput")
        if signature_name == "two":
            outputs = {"double": x * 2, "square": x * x}
        else:
            outputs = {"y": x + self.offset}
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}

    def values(self) -> set[float]:
        with self._lock:
            return {v for x in self.seen for v in x}

    def calls(self) -> int:
        with self._lock:
            return len(self.seen)


def x_input(*values: float) -> Callable[[SignatureSpec], dict[str, np.ndarray]]:
    return lambda signature: {"x": np.array(values, np.float32)}


def _drain(scheduler: BatchScheduler) -> None:
    while scheduler.step():
        pass


def _make_core(scheduler: BatchScheduler, **parameters: Any) -> StaticServingCore:
    """batched 1 and 2 (offsets 1 and 2) batch; plain, twin and shadow do not; object has no signatures."""

    def batched(offset: float, name: str) -> BatchingServable:
        return BatchingServable(Model(offset), scheduler, BatchingParameters(**parameters), name=name)

    servables = {
        ServableId("batched", 1): batched(1.0, "batched 1"),
        ServableId("batched", 2): batched(2.0, "batched 2"),
        ServableId("plain", 1): Model(10.0),
        ServableId("twin", 1): Model(1.0),  # what batched 1 computes, served without batching
        ServableId("shadow", 1): Model(100.0),
        ServableId("object", 1): object(),
    }
    return StaticServingCore(servables, labels={"batched": {"stable": 1}})


def _inner(core: StaticServingCore, version: int = 2) -> Model:
    return core.servable("batched", version).inner  # type: ignore[no-any-return]


def _close(core: StaticServingCore) -> None:
    for servable in core.servables.values():
        if isinstance(servable, BatchingServable):
            servable.close()


class Answers:
    """A PendingPredict callback: records (pending, thread, ``probe()`` at call time)."""

    def __init__(self, probe: Callable[[], Any] = lambda: None) -> None:
        self.calls: list[tuple[PendingPredict, threading.Thread, Any]] = []
        self.called = threading.Event()
        self._probe = probe

    def __call__(self, pending: PendingPredict) -> None:
        self.calls.append((pending, threading.current_thread(), self._probe()))
        self.called.set()


@pytest.fixture
def manual() -> Iterator[BatchScheduler]:
    """No threads: batches run only inside ``step()``, on the test's thread."""
    scheduler = BatchScheduler(1, run_threads=False)
    yield scheduler
    scheduler.stop()


@pytest.fixture
def core(manual: BatchScheduler) -> Iterator[StaticServingCore]:
    fake = _make_core(manual)
    yield fake
    _drain(manual)
    assert fake.held_handles() == [], "a handle outlived its request"
    _close(fake)


@pytest.fixture
def plane(core: StaticServingCore) -> DataPlane:
    return DataPlane(core)


# == Part 1: the data plane ==========================================================================


def test_batches_is_true_only_for_a_version_that_queues_runs(plane: DataPlane, core: StaticServingCore) -> None:
    assert plane.batches(ModelSpec("batched"))
    assert plane.batches(ModelSpec("batched", version=1))
    assert plane.batches(ModelSpec("batched", version_label="stable"))
    for spec in (ModelSpec("plain"), ModelSpec("object"), ModelSpec("missing"), ModelSpec(""),
                 ModelSpec("batched", version=9), ModelSpec("batched", version_label="nope")):
        assert not plane.batches(spec), spec
    assert _inner(core).calls() == 0


def test_batches_is_false_for_a_route_even_when_its_arm_batches(core: StaticServingCore) -> None:
    router = Router(core, lambda: {"batched", "plain", "shadow"})
    try:
        router.set_routes([Route("r", (Arm("main", "batched"),))])
        routed = DataPlane(core, router)
        assert not routed.batches(ModelSpec("r"))
        assert routed.batches(ModelSpec("batched"))
    finally:
        router.close()


@pytest.mark.parametrize("name", ["plain", "object"])
def test_start_predict_of_a_version_that_does_not_batch_is_none_without_decoding(
    plane: DataPlane, core: StaticServingCore, name: str
) -> None:
    decoded: list[SignatureSpec] = []

    def decode(signature: SignatureSpec) -> dict[str, np.ndarray]:
        decoded.append(signature)
        return {"x": np.ones(1, np.float32)}

    assert plane.start_predict(ModelSpec(name), decode) is None
    assert decoded == [] and core.handles_handed_out() == 1 and core.held_handles() == []
    if name == "plain":
        assert core.servable("plain", 1).calls() == 0


@pytest.mark.parametrize(
    ("spec", "version"),
    [(ModelSpec("batched"), 2), (ModelSpec("batched", version=1), 1), (ModelSpec("batched", version_label="stable"), 1)],
    ids=["latest", "version", "label"],
)
def test_start_predict_queues_and_answers_with_the_version_that_ran(
    plane: DataPlane, core: StaticServingCore, manual: BatchScheduler, spec: ModelSpec, version: int
) -> None:
    pending = plane.start_predict(spec, x_input(1.0, 2.0))
    assert isinstance(pending, PendingPredict) and not pending.done()
    assert len(core.held_handles()) == 1  # held while queued: the version cannot unload under it
    answers = Answers(lambda: len(core.held_handles()))
    pending.add_done_callback(answers)
    assert answers.calls == [] and _inner(core, version).calls() == 0  # queued, not run
    assert manual.step()
    assert len(answers.calls) == 1
    called_with, thread, held_then = answers.calls[0]
    assert called_with is pending and thread is threading.current_thread()  # the thread that ran the batch
    assert held_then == 0, "the handle must be released before the callback runs"
    assert pending.done()
    result = pending.result()
    assert result.id == ServableId("batched", version)
    assert (result.signature_name, result.signature) == ("serving_default", SIGNATURES["serving_default"])
    assert result.outputs["y"].tolist() == [1.0 + version, 2.0 + version]
    assert result.inputs["x"].tolist() == [1.0, 2.0]
    assert _inner(core, version).seen == [[1.0, 2.0]]


def test_start_predict_passes_signature_and_output_filter(
    plane: DataPlane, core: StaticServingCore, manual: BatchScheduler
) -> None:
    pending = plane.start_predict(ModelSpec("batched", signature_name="two"), x_input(3.0), ["square"])
    assert pending is not None
    answers = Answers()
    pending.add_done_callback(answers)
    _drain(manual)
    result = pending.result()
    assert result.signature_name == "two" and list(result.outputs) == ["square"]
    assert result.outputs["square"].tolist() == [9.0]


def test_callback_of_an_answered_request_runs_at_once(plane: DataPlane, manual: BatchScheduler) -> None:
    pending = plane.start_predict(ModelSpec("batched"), x_input(1.0))
    assert pending is not None
    _drain(manual)  # answered before anyone listens
    answers = Answers()
    pending.add_done_callback(answers)
    assert len(answers.calls) == 1 and answers.calls[0][1] is threading.current_thread()
    assert pending.result().outputs["y"].tolist() == [3.0]


def test_answer_and_release_happen_on_the_batch_thread() -> None:
    scheduler = BatchScheduler(2, name="queued_dp")
    core = _make_core(scheduler)
    try:
        inner = _inner(core)
        inner.block_on = 5.0
        pending = DataPlane(core).start_predict(ModelSpec("batched"), x_input(5.0))
        assert pending is not None
        assert inner.entered.wait(WAIT_S)  # running: the callback is registered before the answer
        answers = Answers(lambda: len(core.held_handles()))
        pending.add_done_callback(answers)
        assert not pending.done() and len(core.held_handles()) == 1
        inner.gate.set()
        assert answers.called.wait(WAIT_S)
        _, thread, held_then = answers.calls[0]
        assert thread is inner.threads[0] and thread.name.startswith("queued_dp-")
        assert held_then == 0 and pending.result().outputs["y"].tolist() == [7.0]
    finally:
        inner.gate.set()
        _close(core)
        scheduler.stop()
    assert core.held_handles() == []


def _decode_raises(error: BaseException) -> Callable[[SignatureSpec], Any]:
    def decode(signature: SignatureSpec) -> Any:
        raise error

    return decode


@pytest.mark.parametrize(
    ("spec", "decode", "output_filter", "deadline", "cls", "fragment"),
    [
        (ModelSpec("batched"), _decode_raises(InvalidArgumentError("bad JSON")), (), None, InvalidArgumentError, "bad JSON"),
        (ModelSpec("batched"), _decode_raises(ValueError("decoder bug")), (), None, ValueError, "decoder bug"),
        (ModelSpec("batched"), lambda s: {"x": np.ones(1, np.int64)}, (), None, InvalidArgumentError, "DT_INT64"),
        (ModelSpec("batched"), lambda s: {"x": np.ones((1, 2), np.float32)}, (), None, InvalidArgumentError, "has shape [1,2]"),
        (ModelSpec("batched"), x_input(1.0), ("nope",), None, InvalidArgumentError, "output tensor alias not found"),
        (ModelSpec("batched", signature_name="nope"), _decode_raises(AssertionError("decoded")), (), None,
         FailedPreconditionError, 'Serving signature key "nope" not found.'),
        (ModelSpec("batched"), x_input(1.0), (), 0.0, DeadlineExceededError, "it was not run"),
        (ModelSpec("missing"), _decode_raises(AssertionError("decoded")), (), None, NotFoundError,
         "Servable not found for request: Latest(missing)"),
    ],
    ids=["decode-error", "decode-bug", "dtype", "shape", "output-filter", "signature", "deadline", "not-found"],
)
def test_errors_raise_at_once_and_release_the_handle(
    plane: DataPlane, core: StaticServingCore, manual: BatchScheduler, spec: ModelSpec, decode: Any,
    output_filter: tuple[str, ...], deadline: float | None, cls: type[BaseException], fragment: str,
) -> None:
    with pytest.raises(cls) as info:
        plane.start_predict(spec, decode, output_filter, deadline)
    assert fragment in str(info.value)
    assert core.held_handles() == []
    assert not manual.step() and _inner(core).calls() == 0  # nothing was queued


def test_full_queue_raises_unavailable_and_releases_only_its_own_handle(manual: BatchScheduler) -> None:
    core = _make_core(manual, max_batch_size=1, max_enqueued_batches=1)
    plane = DataPlane(core)
    try:
        first = plane.start_predict(ModelSpec("batched"), x_input(1.0))
        assert first is not None
        with pytest.raises(UnavailableError, match="The batch scheduling queue to which this task was submitted is full"):
            plane.start_predict(ModelSpec("batched"), x_input(2.0))
        assert len(core.held_handles()) == 1  # the first request's
        answers = Answers()
        first.add_done_callback(answers)
        _drain(manual)
        assert first.result().outputs["y"].tolist() == [3.0] and core.held_handles() == []
        assert _inner(core).values() == {1.0}
    finally:
        _close(core)


def test_model_error_is_the_result_and_the_handle_is_released(
    plane: DataPlane, core: StaticServingCore, manual: BatchScheduler
) -> None:
    pending = plane.start_predict(ModelSpec("batched", signature_name="boom"), x_input(1.0))
    assert pending is not None
    answers = Answers(lambda: len(core.held_handles()))
    pending.add_done_callback(answers)
    _drain(manual)
    assert len(answers.calls) == 1 and answers.calls[0][2] == 0 and pending.done()
    with pytest.raises(InternalError, match="RuntimeError: kaput"):
        pending.result()


def test_give_up_before_it_ran_answers_deadline_exceeded_and_never_runs(
    plane: DataPlane, core: StaticServingCore, manual: BatchScheduler
) -> None:
    pending = plane.start_predict(ModelSpec("batched"), x_input(4.0))
    assert pending is not None
    answers = Answers(lambda: len(core.held_handles()))
    pending.add_done_callback(answers)
    pending.give_up()
    assert len(answers.calls) == 1 and answers.calls[0][1] is threading.current_thread()
    assert answers.calls[0][2] == 0 and pending.done()
    with pytest.raises(DeadlineExceededError):
        pending.result()
    _drain(manual)
    assert _inner(core).calls() == 0


class ManagerCore:
    """A BasicManager as the data plane's ServingCore (no labels)."""

    def __init__(self, manager: BasicManager) -> None:
        self._manager = manager

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]:
        return self._manager.get_handle(request)

    def version_labels(self, name: str) -> Mapping[str, int]:
        return {}

    def version_states(self, name: str) -> list[Any]:
        return []


def test_an_unload_waits_for_the_queued_predict_and_only_for_it(manual: BatchScheduler) -> None:
    manager = BasicManager(BasicManagerOptions(num_load_threads=0, num_unload_threads=1, max_num_load_retries=0))
    servable_id = ServableId("managed", 1)
    inner = Model(1.0)
    loader = SimpleLoader(lambda: BatchingServable(inner, manual, name="managed 1"), unloader=lambda s: s.close())
    try:
        manager.manage(ServableData.of(servable_id, loader))
        manager.load(servable_id)
        pending = DataPlane(ManagerCore(manager)).start_predict(ModelSpec("managed"), x_input(1.0))
        assert pending is not None
        answers = Answers()
        pending.add_done_callback(answers)
        unloaded = threading.Event()
        errors: list[Any] = []
        manager.unload(servable_id, lambda error: (errors.append(error), unloaded.set()))
        assert not unloaded.is_set()  # the queued request holds its handle (nothing ran yet: no threads)
        assert manual.step()  # the batch runs; its handle is released on this thread
        assert answers.called.is_set() and pending.result().outputs["y"].tolist() == [2.0]
        assert unloaded.wait(WAIT_S), "the unload stayed blocked after the answer"
        assert errors == [None] and inner.calls() == 1
    finally:
        manager.stop()


# -- through a route ------------------------------------------------------------------------------


@pytest.fixture
def router(core: StaticServingCore) -> Iterator[Router]:
    router = Router(core, lambda: {"batched", "plain", "shadow", "gone"})
    router.set_routes([
        Route("r", (Arm("main", "batched", version=1),), shadow=Shadow("shadow")),
        Route("plain_route", (Arm("main", "plain"),)),
        Route("gone_route", (Arm("main", "gone"),)),
    ])
    yield router
    router.close()


def _arm(router: Router, route: str = "r") -> dict[str, Any]:
    return router.statistics(route)["arms"]["main"]  # type: ignore[no-any-return]


def _shadow(router: Router) -> dict[str, Any]:
    return router.statistics("r")["shadow"]  # type: ignore[no-any-return]


def test_route_records_statistics_and_mirrors_the_shadow_before_the_callback(
    router: Router, core: StaticServingCore, manual: BatchScheduler
) -> None:
    plane = DataPlane(core, router)
    pending = plane.start_predict(ModelSpec("r"), x_input(1.0, 2.0))
    assert pending is not None
    assert _arm(router)["requests"] == 0  # counted when answered
    answers = Answers(lambda: (_arm(router)["requests"], _arm(router)["errors"]))
    pending.add_done_callback(answers)
    assert manual.step()
    assert answers.calls[0][2] == (1, 0), "statistics must be recorded before the callback"
    result = pending.result()
    assert result.id == ServableId("batched", 1) and result.outputs["y"].tolist() == [2.0, 3.0]
    shadow = core.servable("shadow", 1)
    assert poll_until(lambda: _shadow(router)["requests"] == 1, WAIT_S)
    assert shadow.seen == [[1.0, 2.0]] and shadow.threads[0].name == "pyserving-shadow"
    assert _shadow(router)["errors"] == 0
    assert router.statistics("r")["choices"]["weight"] == 1


def test_route_errors_are_recorded_and_not_mirrored(
    router: Router, core: StaticServingCore, manual: BatchScheduler
) -> None:
    plane = DataPlane(core, router)
    pending = plane.start_predict(ModelSpec("r", signature_name="boom"), x_input(1.0))  # fails in the model
    assert pending is not None
    pending.add_done_callback(Answers())
    _drain(manual)
    with pytest.raises(InternalError):
        pending.result()
    with pytest.raises(InvalidArgumentError):  # fails before it is queued
        plane.start_predict(ModelSpec("r"), _decode_raises(InvalidArgumentError("bad JSON")))
    assert (_arm(router)["requests"], _arm(router)["errors"]) == (2, 2)
    assert core.held_handles() == []
    with pytest.raises(InvalidArgumentError, match="is a route"):  # refused before choosing: not counted
        plane.start_predict(ModelSpec("r", version=1), x_input(1.0))
    assert _arm(router)["requests"] == 2
    # A mirror would have been queued before the callback; none was (its queue never saw a job).
    assert _shadow(router)["requests"] == 0 and _shadow(router)["dropped"] == 0
    assert core.servable("shadow", 1).calls() == 0


def test_route_to_a_version_that_does_not_batch_is_none_and_counted_once_by_predict(
    router: Router, core: StaticServingCore
) -> None:
    plane = DataPlane(core, router)
    assert plane.start_predict(ModelSpec("plain_route"), _decode_raises(AssertionError("decoded"))) is None
    assert _arm(router, "plain_route")["requests"] == 0 and core.held_handles() == []
    assert plane.predict(ModelSpec("plain_route"), x_input(1.0)).outputs["y"].tolist() == [11.0]
    assert _arm(router, "plain_route")["requests"] == 1


def test_route_arm_that_does_not_resolve_is_counted_as_an_error(router: Router, core: StaticServingCore) -> None:
    plane = DataPlane(core, router)
    with pytest.raises(NotFoundError):
        plane.predict(ModelSpec("gone_route"), x_input(1.0))
    assert (_arm(router, "gone_route")["requests"], _arm(router, "gone_route")["errors"]) == (1, 1)
    with pytest.raises(NotFoundError):
        plane.start_predict(ModelSpec("gone_route"), x_input(1.0))
    assert (_arm(router, "gone_route")["requests"], _arm(router, "gone_route")["errors"]) == (2, 2)


# == Part 2: the REST server ==========================================================================


class CountingExecutor(ThreadPoolExecutor):
    """The REST workers, counting every job handed to them."""

    submitted = 0  # class-wide: the server builds its own instance
    _count_lock = threading.Lock()

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        with CountingExecutor._count_lock:
            CountingExecutor.submitted += 1
        return super().submit(*args, **kwargs)


class WatchedPlane(DataPlane):
    """A DataPlane recording (method, thread name) of every predict / start_predict call."""

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.calls: list[tuple[str, str]] = []
        self._calls_lock = threading.Lock()

    def _note(self, method: str) -> None:
        with self._calls_lock:
            self.calls.append((method, threading.current_thread().name))

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self._note("predict")
        return super().predict(*args, **kwargs)

    def start_predict(self, *args: Any, **kwargs: Any) -> Any:
        self._note("start_predict")
        return super().start_predict(*args, **kwargs)

    def methods(self) -> list[str]:
        with self._calls_lock:
            return [method for method, _ in self.calls]


class Events:
    """A RequestObserver keeping every event."""

    def __init__(self) -> None:
        self.events: list[RequestEvent] = []
        self._lock = threading.Lock()

    def observe(self, event: RequestEvent) -> None:
        with self._lock:
            self.events.append(event)

    def snapshot(self) -> list[RequestEvent]:
        with self._lock:
            return list(self.events)


@contextlib.contextmanager
def rest_server(
    num_batch_threads: int = 2, observers: Sequence[Any] = (), **options: Any
) -> Iterator[tuple[RestServerHandle, WatchedPlane, StaticServingCore, BatchScheduler]]:
    scheduler = BatchScheduler(num_batch_threads, name="rest_batch")
    core = _make_core(scheduler, max_enqueued_batches=1000)
    plane = WatchedPlane(core)
    options.setdefault("num_threads", 2)
    handle = start_rest_server(plane, RestServerOptions(host="127.0.0.1", port=0, **options), observers=observers)
    try:
        yield handle, plane, core, scheduler
    finally:
        for version in (1, 2):
            _inner(core, version).gate.set()
        handle.stop()
        _close(core)
        scheduler.stop()
    assert core.held_handles() == [], "a handle outlived its request"


def _idle(scheduler: BatchScheduler) -> bool:
    """Nothing waits or runs in any queue (call inside ``scheduler.wait_for``)."""
    return all(q.enqueued_tasks == 0 and q.in_flight_batches == 0 for q in scheduler.statistics())


def _url(handle: RestServerHandle, path: str) -> str:
    return f"http://127.0.0.1:{handle.port}/v1/models/{path}"


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingExecutor]:
    monkeypatch.setattr(rest_runner, "ThreadPoolExecutor", CountingExecutor)
    CountingExecutor.submitted = 0
    return CountingExecutor


@pytest.mark.slow
def test_32_concurrent_clients_each_get_their_answer_without_a_worker_thread(counting: type[CountingExecutor]) -> None:
    with rest_server() as (handle, plane, core, scheduler):
        url = _url(handle, "batched:predict")

        def one_call(client: int, call: int) -> str | None:
            values = [client * 100.0 + call * 10.0 + i for i in range(1 + (client + call) % 5)]
            response = requests.post(url, json={"instances": values}, timeout=WAIT_S)
            if response.status_code != 200:
                return f"{response.status_code} {response.text}"
            if response.json() != {"predictions": [v + 2.0 for v in values]}:
                return f"got {response.text} for {values}"
            if response.headers.get("x-pyserving-model-version") != "2":
                return f"answered by {response.headers}"
            return None

        assert hammer(32, 2, one_call, 2 * WAIT_S) == []
        loop_thread = f"pyserving-rest-{handle.port}"
        assert plane.methods() == ["start_predict"] * 64, "a batching predict went to a worker"
        assert {thread for _, thread in plane.calls} == {loop_thread}
        assert counting.submitted == 0, "the worker executor was used"
        assert scheduler.wait_for(lambda: _idle(scheduler), WAIT_S)  # batch statistics are counted after the answers
        inner = _inner(core)
        assert all(t.name.startswith("rest_batch-") for t in inner.threads)
        assert _inner(core, 1).calls() == 0 and core.servable("batched", 2).statistics().tasks == 64


@pytest.mark.slow
def test_predicts_that_do_not_batch_still_go_to_a_worker(counting: type[CountingExecutor]) -> None:
    """The instruments of the test above, shown to see a worker when one is used."""
    with rest_server() as (handle, plane, _, _):
        response = requests.post(_url(handle, "plain:predict"), json={"instances": [1.0]}, timeout=WAIT_S)
        assert response.json() == {"predictions": [11.0]}
        assert requests.get(_url(handle, "batched"), timeout=WAIT_S).status_code == 200  # status: a worker job
        assert counting.submitted == 2
        assert [(method, thread.startswith("pyserving-rest_")) for method, thread in plane.calls] == [("predict", True)]


#: Bodies whose answer must not depend on whether the version batches.
PARITY_BODIES: list[Any] = [
    {"instances": [1.0, 2.0]},
    {"inputs": [1.0, 2.0]},
    {"inputs": {"x": [1.5]}},
    {"signature_name": "two", "instances": [3.0, 4.0]},
    {"signature_name": "two", "inputs": [3.0]},
    {"signature_name": "nope", "instances": [1.0]},
    {"instances": ["a"]},
    {"instances": []},
    {"instances": [[1.0, 2.0]]},
    {"instances": [1.0], "inputs": [1.0]},
    {"instances": [{"x": 1.0, "z": 2.0}]},
    b"not json",
]


@pytest.mark.slow
def test_queued_answers_match_the_worker_path_byte_for_byte(counting: type[CountingExecutor]) -> None:
    with rest_server() as (handle, plane, _, _):
        with requests.Session() as session:
            for body in PARITY_BODIES:
                answers = []
                for model in ("batched/versions/1", "twin"):  # the same model, batched and not
                    kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"data": json.dumps(body)}
                    response = session.post(_url(handle, f"{model}:predict"), timeout=WAIT_S, **kw)
                    answers.append((response.status_code, response.content, response.headers["content-type"]))
                assert answers[0] == answers[1], body
        parsed = len(PARITY_BODIES) - 1  # a body that is not JSON never reaches the data plane
        assert plane.methods().count("start_predict") == parsed and plane.methods().count("predict") == parsed
        assert counting.submitted == len(PARITY_BODIES)  # the twin's requests only


@pytest.mark.slow
def test_queued_path_specials_gzip_body_limit_model_error_and_no_timeout() -> None:
    with rest_server(max_body_bytes=4096, timeout_ms=0) as (handle, plane, _, _):
        url = _url(handle, "batched/labels/stable:predict")
        body = gzip.compress(json.dumps({"instances": [1.0, 2.0]}).encode())
        response = requests.post(url, data=body, headers={"Content-Encoding": "gzip"}, timeout=WAIT_S)
        assert response.json() == {"predictions": [2.0, 3.0]}
        assert response.headers["x-pyserving-model"] == "batched" and response.headers["x-pyserving-model-version"] == "1"
        bomb = gzip.compress(json.dumps({"instances": [0.0] * 5000}).encode())
        assert len(bomb) < 4096
        response = requests.post(url, data=bomb, headers={"Content-Encoding": "gzip"}, timeout=WAIT_S)
        assert response.status_code == 413 and "4096" in response.json()["error"]
        response = requests.post(url, json={"signature_name": "boom", "instances": [1.0]}, timeout=WAIT_S)
        assert response.status_code == 500 and "RuntimeError: kaput" in response.json()["error"]
        assert set(plane.methods()) == {"start_predict"}


@pytest.mark.slow
def test_request_blocked_past_the_timeout_gets_504_and_its_rows_never_run() -> None:
    events = Events()
    with rest_server(num_batch_threads=1, observers=[events], timeout_ms=300) as (handle, plane, core, scheduler):
        inner = _inner(core)
        inner.block_on = -1.0
        url = _url(handle, "batched:predict")
        blocked: list[requests.Response] = []
        holder = threading.Thread(
            target=lambda: blocked.append(requests.post(url, json={"instances": [-1.0]}, timeout=WAIT_S))
        )
        holder.start()
        try:
            assert inner.entered.wait(WAIT_S)  # the only batch thread is held by the first request
            late = requests.post(url, json={"instances": [7.0]}, timeout=WAIT_S)  # waits in the queue
            assert late.status_code == 504 and list(late.json()) == ["error"]
            holder.join(WAIT_S)
            assert blocked[0].status_code == 504  # running past the timeout: finishes unseen
        finally:
            inner.gate.set()
            holder.join(WAIT_S)
        assert scheduler.wait_for(lambda: _idle(scheduler), WAIT_S)
        assert 7.0 not in inner.values() and inner.values() == {-1.0}
        assert core.servable("batched", 2).statistics().expired == 1
        assert poll_until(lambda: core.held_handles() == [], WAIT_S)
        after = requests.post(url, json={"instances": [1.0]}, timeout=WAIT_S)
        assert after.json() == {"predictions": [3.0]}  # the server still serves
        statuses = [(e.status, e.version) for e in events.snapshot()]
        assert statuses == [("DEADLINE_EXCEEDED", None)] * 2 + [("OK", 2)]
        assert set(plane.methods()) == {"start_predict"}


@pytest.mark.slow
def test_observers_get_one_event_per_queued_predict() -> None:
    events = Events()
    with rest_server(observers=[events]) as (handle, _, _, _):
        url = _url(handle, "batched:predict")
        bodies = [
            ({"instances": [1.0, 2.0]}, 200),
            ({"signature_name": "two", "instances": [3.0]}, 200),
            ({"instances": ["a"]}, 400),
            ({"signature_name": "nope", "instances": [1.0]}, 400),
            ({"signature_name": "boom", "instances": [1.0]}, 500),
        ]
        for body, status in bodies:
            assert requests.post(url, json=body, timeout=WAIT_S).status_code == status, body
        seen = events.snapshot()  # each event is told before its answer is sent
        assert [(e.status, e.model, e.version, e.api, e.entrypoint) for e in seen] == [
            ("OK", "batched", 2, "predict", "REST"),
            ("OK", "batched", 2, "predict", "REST"),
            ("INVALID_ARGUMENT", "batched", None, "predict", "REST"),
            ("FAILED_PRECONDITION", "batched", None, "predict", "REST"),
            ("INTERNAL", "batched", None, "predict", "REST"),
        ]
        assert all(e.latency_s >= 0 for e in seen)
        assert all(e.request is None and e.response is None for e in seen[2:])
        first, second = seen[0], seen[1]
        assert first.request is not None and first.response is not None
        request = first.request()
        assert type(request).__name__ == "PredictRequest" and request.model_spec.name == "batched"
        assert list(request.inputs["x"].float_val) == [1.0, 2.0]
        response = first.response()
        assert response.model_spec.version.value == 2 and response.model_spec.signature_name == "serving_default"
        assert list(response.outputs["y"].float_val) == [3.0, 4.0]
        assert second.request is not None and second.request().model_spec.signature_name == "two"



@pytest.mark.slow
def test_a_predict_still_queued_when_the_server_stops_is_never_run() -> None:
    with rest_server(num_batch_threads=1, timeout_ms=0) as (handle, _, core, scheduler):
        inner = _inner(core)
        inner.block_on = -1.0
        url = _url(handle, "batched:predict")
        answers: list[Any] = []

        def post(value: float) -> None:
            try:
                answers.append(requests.post(url, json={"instances": [value]}, timeout=WAIT_S).status_code)
            except requests.RequestException as exc:
                answers.append(exc)

        clients = [threading.Thread(target=post, args=(-1.0,))]
        clients[0].start()
        try:
            assert inner.entered.wait(WAIT_S)  # the only batch thread is held
            clients.append(threading.Thread(target=post, args=(7.0,)))
            clients[1].start()
            assert scheduler.wait_for(lambda: sum(q.enqueued_tasks for q in scheduler.statistics()) == 1, WAIT_S)
            handle.stop(grace_s=0.2)  # neither request can answer within the grace: both are cancelled
        finally:
            inner.gate.set()
            for client in clients:
                client.join(WAIT_S)
        assert scheduler.wait_for(lambda: _idle(scheduler), WAIT_S)
        assert len(answers) == 2 and 7.0 not in inner.values()
