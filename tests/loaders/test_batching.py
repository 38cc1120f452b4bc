"""Tests for pyserving.loaders.batching (BatchingServable, BatchingLoader, BatchingConfig) and
batching_tensors, over a numpy servable: no TensorFlow, real threads, bounded waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest

from pyserving.loaders.batching import BatchingConfig, BatchingLoader, BatchingServable
from pyserving.loaders.batching_params import BatchingParameters
from pyserving.loaders.batching_tensors import batch_key, concat_inputs, merge_outputs, split_outputs
from pyserving.loaders.simple_loader import SimpleLoader
from pyserving.servable.batcher import BatchScheduler
from pyserving.servable.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    UnavailableError,
    UnimplementedError,
)
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, DType, InferenceServable, SignatureSpec, TensorSpec

WAIT_S = 30.0
_EXAMPLES = {"inputs": TensorSpec(DType.STRING, (None,))}


class Doubler:
    """``y = 2 x`` (any shape), ``total`` = row sums; classify / regress score an example by
    its length. Records every batch it computes; ``gate`` (when set) blocks the next call."""

    def __init__(self) -> None:
        self._signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, None)},
                {"y": TensorSpec(DType.FLOAT, None), "total": TensorSpec(DType.FLOAT, (None,))},
            ),
            "scalar_out": SignatureSpec({"x": TensorSpec(DType.FLOAT, None)}, {"s": TensorSpec(DType.FLOAT, ())}),
            "fixed": SignatureSpec({"x": TensorSpec(DType.FLOAT, (2, None))}, {"y": TensorSpec(DType.FLOAT, (2, None))}),
            "classify": SignatureSpec(_EXAMPLES, {"scores": TensorSpec(DType.FLOAT, (None, 1))},
                                      method_name=CLASSIFY_METHOD),
            "regress": SignatureSpec(_EXAMPLES, {"outputs": TensorSpec(DType.FLOAT, (None,))},
                                     method_name=REGRESS_METHOD),
        }
        self.inputs_seen: list[dict[str, np.ndarray]] = []
        self.direct_calls: list[str] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_with: BaseException | None = None
        self.work_s = 0.0  # simulated model time, GIL released (as TensorFlow does)
        self.closed = False
        self._lock = threading.Lock()

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    def signature_def_map(self) -> dict[str, str]:
        return {"serving_default": "a SignatureDef"}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict:
        with self._lock:
            self.inputs_seen.append({k: np.array(v, copy=True) for k, v in inputs.items()})
            gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            assert gate.wait(WAIT_S)
        if self.work_s:
            time.sleep(self.work_s)
        if self.fail_with is not None:
            raise self.fail_with
        if signature_name == "scalar_out":
            return {"s": np.float32(1.0)}
        if signature_name in ("classify", "regress"):
            lengths = np.array([len(e) for e in inputs["inputs"]], dtype=np.float32)
            return {"scores": lengths.reshape(-1, 1)} if signature_name == "classify" else {"outputs": lengths}
        x = np.asarray(inputs["x"], dtype=np.float32)
        outputs = {"y": x * 2, "total": x.reshape(len(x), -1).sum(axis=1) if x.ndim else x}
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}

    def classify(self, signature_name: str, examples: Sequence[bytes]) -> dict:
        self.direct_calls.append(f"classify {signature_name}")
        return {"scores": np.array([[len(e)] for e in examples], dtype=np.float32)}

    def regress(self, signature_name: str, examples: Sequence[bytes]) -> np.ndarray:
        self.direct_calls.append(f"regress {signature_name}")
        return np.array([len(e) for e in examples], dtype=np.float32)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def scheduler() -> Iterator[BatchScheduler]:
    s = BatchScheduler(2, name="test_batching")
    yield s
    s.stop()


def _queued(scheduler: BatchScheduler, count: int) -> bool:
    """Wait until ``count`` tasks wait in the scheduler's queues."""
    return scheduler.wait_for(lambda: sum(s.enqueued_tasks for s in scheduler.statistics()) == count, WAIT_S)


def _in_threads(calls: list[Any]) -> list[Any]:
    """Run each zero-argument call on its own thread; their results (or exceptions) in order."""
    results: list[Any] = [None] * len(calls)

    def target(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return [threads, results]  # type: ignore[list-item]


def _join(started: list[Any]) -> list[Any]:
    threads, results = started
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads)
    return results


# --- BatchingServable -------------------------------------------------------------------------------


def test_is_an_inference_servable_and_delegates_other_attributes(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler, name="m")
    assert isinstance(servable, InferenceServable)
    assert servable.signatures is inner.signatures and servable.inner is inner
    assert servable.signature_def_map() == {"serving_default": "a SignatureDef"}
    with pytest.raises(AttributeError):
        servable._no_such_private  # noqa: B018
    servable.close()


def test_concurrent_callers_each_get_their_own_rows(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    inner.work_s = 0.0005
    servable = BatchingServable(inner, scheduler, BatchingParameters(max_batch_size=64, max_enqueued_batches=100),
                                name="m")
    failures: list[str] = []

    def client(number: int) -> None:
        rng = np.random.default_rng(number)
        for call in range(30):
            x = rng.standard_normal((int(rng.integers(1, 9)), 3)).astype(np.float32) + number * 1000 + call
            try:
                out = servable.run("serving_default", {"x": x}, ("y",) if call % 2 else ())
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(f"client {number} call {call}: {exc!r}")
                continue
            if not np.array_equal(out["y"], x * 2) or (call % 2 == 0 and not np.allclose(out["total"], x.sum(axis=1))):
                failures.append(f"client {number} call {call}")
            if call % 2 and "total" in out:
                failures.append(f"client {number} call {call}: output filter ignored")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert failures == []
    stats = servable.statistics()
    assert stats.name == "m" and stats.tasks == 300 and stats.batches == len(inner.inputs_seen)
    assert stats.batches < 300, "no two requests were ever batched"
    servable.close()


def _gated(scheduler: BatchScheduler, inner: Doubler, parameters: BatchingParameters) -> BatchingServable:
    """A servable whose first model call blocks until ``inner.gate`` is set."""
    inner.gate = threading.Event()
    return BatchingServable(inner, scheduler, parameters, name="m")


def test_batch_is_padded_to_an_allowed_size_and_padding_is_sliced_off() -> None:
    scheduler = BatchScheduler(1)
    try:
        inner = Doubler()
        gate = threading.Event()
        servable = _gated(scheduler, inner, BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4, 8)))
        inner.gate = gate
        blocker = _in_threads([lambda: servable.run("serving_default", {"x": np.ones((1, 2), np.float32)})])
        assert inner.entered.wait(WAIT_S)
        xs = [np.full((n, 2), n, np.float32) for n in (2, 3)]
        callers = _in_threads([lambda x=x: servable.run("serving_default", {"x": x}) for x in xs])
        assert _queued(scheduler, 2)
        gate.set()
        _join(blocker)
        results = _join(callers)
        assert [r["y"].tolist() for r in results] == [(x * 2).tolist() for x in xs]
        batch = inner.inputs_seen[1]["x"]
        assert batch.shape == (8, 2)  # 5 rows padded to 8 with copies of the first row
        assert batch[5:].tolist() == [[2.0, 2.0]] * 3
        assert servable.statistics().padded_rows == 3 + 3  # the lone first request: 1 -> 4
    finally:
        scheduler.stop()


def test_variable_length_inputs_share_a_batch_only_when_padding_is_on() -> None:
    for pad in (False, True):
        scheduler = BatchScheduler(1)
        try:
            inner = Doubler()
            gate = threading.Event()
            servable = _gated(scheduler, inner, BatchingParameters(max_batch_size=8, pad_variable_length_inputs=pad))
            inner.gate = gate
            blocker = _in_threads([lambda: servable.run("serving_default", {"x": np.ones((1, 1), np.float32)})])
            assert inner.entered.wait(WAIT_S)
            xs = [np.array([[1, 2]], np.float32), np.array([[3, 4, 5], [6, 7, 8]], np.float32)]
            callers = _in_threads([lambda x=x: servable.run("serving_default", {"x": x}) for x in xs])
            assert _queued(scheduler, 2)
            gate.set()
            _join(blocker)
            short, long = _join(callers)
            assert long["y"].tolist() == [[6, 8, 10], [12, 14, 16]]
            if pad:  # one call; the short row padded with its own first element, as TF Serving does
                assert [s["x"].shape for s in inner.inputs_seen[1:]] == [(3, 3)]
                assert inner.inputs_seen[1]["x"][0].tolist() == [1, 2, 1]
                assert short["y"].tolist() == [[2, 4, 2]]
            else:
                assert sorted(s["x"].shape for s in inner.inputs_seen[1:]) == [(1, 2), (2, 3)]
                assert short["y"].tolist() == [[2, 4]]
        finally:
            scheduler.stop()


def test_large_request_is_split_and_reassembled(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    parameters = BatchingParameters(max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=3)
    servable = BatchingServable(inner, scheduler, parameters)
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = servable.run("serving_default", {"x": x})
    assert out["y"].tolist() == (x * 2).tolist() and out["total"].tolist() == x.sum(axis=1).tolist()
    assert sorted(seen["x"].shape[0] for seen in inner.inputs_seen) == [1, 3, 3, 3]
    with pytest.raises(InvalidArgumentError, match="Task size 11 is larger than maximum input batch size 10"):
        servable.run("serving_default", {"x": np.zeros((11, 2), np.float32)})


def test_full_queue_is_unavailable_and_expired_deadline_never_runs() -> None:
    scheduler = BatchScheduler(1)
    try:
        inner = Doubler()
        gate = threading.Event()
        servable = _gated(scheduler, inner, BatchingParameters(max_batch_size=1, max_enqueued_batches=1))
        inner.gate = gate
        one = np.ones((1, 1), np.float32)
        blocker = _in_threads([lambda: servable.run("serving_default", {"x": one})])
        assert inner.entered.wait(WAIT_S)
        waiting = _in_threads([lambda: servable.run("serving_default", {"x": one * 3})])
        assert _queued(scheduler, 1)
        with pytest.raises(UnavailableError, match="The batch scheduling queue to which this task was submitted is full"):
            servable.run("serving_default", {"x": one})
        with pytest.raises(DeadlineExceededError):
            servable.run("serving_default", {"x": one}, deadline=0.0)  # long past
        gate.set()
        _join(blocker)
        assert _join(waiting)[0]["y"].tolist() == [[6.0]]
        assert len(inner.inputs_seen) == 2
    finally:
        scheduler.stop()


def test_bad_request_is_refused_before_it_can_fail_a_batch(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler)
    with pytest.raises(InvalidArgumentError, match="has dtype DT_INT64"):
        servable.run("serving_default", {"x": np.ones((2, 1), np.int64)})
    with pytest.raises(InvalidArgumentError, match="output tensor alias not found"):
        servable.run("serving_default", {"x": np.ones((2, 1), np.float32)}, ("nope",))
    assert inner.inputs_seen == []


def test_model_error_fails_the_batch_with_its_code(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler)
    inner.fail_with = InvalidArgumentError("model says no")
    with pytest.raises(InvalidArgumentError, match="model says no"):
        servable.run("serving_default", {"x": np.ones((1, 1), np.float32)})
    inner.fail_with = RuntimeError("crash")
    with pytest.raises(InternalError, match="RuntimeError: crash"):
        servable.run("serving_default", {"x": np.ones((1, 1), np.float32)})
    inner.fail_with = None
    assert servable.run("serving_default", {"x": np.ones((1, 1), np.float32)})["y"].tolist() == [[2.0]]


def test_unbatchable_requests_run_alone_unchanged(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler)
    assert servable.run("serving_default", {"x": np.array(3.0, np.float32)})["y"] == 6.0  # a scalar
    assert servable.run("serving_default", {"x": [[1.0]]})["y"].tolist() == [[2.0]]  # not an array
    with pytest.raises(FailedPreconditionError, match="Batched output tensor has 0 dimensions"):
        servable.run("scalar_out", {"x": np.ones((2,), np.float32)})
    assert servable.run("scalar_out", {"x": np.array(1.0, np.float32)})["s"] == 1.0  # alone: untouched
    # A signature with a fixed dimension 0 is never batched (its requests run one by one).
    assert servable.run("fixed", {"x": np.ones((2, 1), np.float32)})["y"].tolist() == [[2.0], [2.0]]
    assert servable.signature_statistics()["fixed"].batch_sizes == {1: 1}  # counted as one solo row


def test_unknown_signature_is_answered_by_the_inner_servable(scheduler: BatchScheduler) -> None:
    class Strict(Doubler):
        def run(self, signature_name: str, inputs: Any, output_filter: Sequence[str] = ()) -> dict:
            if signature_name not in self.signatures:
                raise FailedPreconditionError(f'Serving signature key "{signature_name}" not found.')
            return super().run(signature_name, inputs, output_filter)

    servable = BatchingServable(Strict(), scheduler)
    with pytest.raises(FailedPreconditionError, match='Serving signature key "nope" not found.'):
        servable.run("nope", {"x": np.ones((1,), np.float32)})


def test_classify_and_regress_are_batched_runs_when_enabled(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler, batch_examples=True)
    examples = [b"a", b"bbb"]
    assert servable.classify("classify", examples)["scores"].tolist() == [[1.0], [3.0]]
    assert servable.regress("regress", examples).tolist() == [1.0, 3.0]
    assert inner.direct_calls == [] and len(inner.inputs_seen) == 2
    assert servable.statistics().tasks == 2
    # Anything the batched path cannot take goes to the inner servable, which words the errors.
    servable.classify("serving_default", examples)
    servable.regress("regress", [])
    assert inner.direct_calls == ["classify serving_default", "regress regress"]


def test_classify_goes_to_the_inner_servable_by_default(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler, name="{name: m version: 1}")
    assert servable.classify("classify", [b"xy"])["scores"].tolist() == [[2.0]]
    assert inner.direct_calls == ["classify classify"] and inner.inputs_seen == []

    class PredictOnly:
        signatures = inner.signatures

        def run(self, *args: Any) -> dict:
            return {}

    bare = BatchingServable(PredictOnly(), scheduler, name="{name: m version: 1}")
    with pytest.raises(UnimplementedError, match=r"Servable \{name: m version: 1\} does not support tensorflow/serving/regress"):
        bare.regress("regress", [b"x"])


def test_close_drains_then_refuses_and_closes_the_inner_only_when_asked(scheduler: BatchScheduler) -> None:
    inner = Doubler()
    servable = BatchingServable(inner, scheduler)
    servable.run("serving_default", {"x": np.ones((1,), np.float32)})
    servable.close()
    assert not inner.closed
    with pytest.raises(UnavailableError, match="closed"):
        servable.run("serving_default", {"x": np.ones((1,), np.float32)})
    owner = BatchingServable(Doubler(), scheduler, close_inner=True)
    owner.close()
    assert owner.inner.closed
    assert scheduler.statistics() == []


# --- batching_tensors ------------------------------------------------------------------------------


def test_batch_key_groups_by_filter_dtype_and_shape() -> None:
    a = {"x": np.zeros((2, 3), np.float32)}
    assert batch_key(a, (), False) == batch_key({"x": np.ones((5, 3), np.float32)}, (), False)
    assert batch_key(a, (), False) != batch_key({"x": np.ones((5, 4), np.float32)}, (), False)
    assert batch_key(a, (), True) == batch_key({"x": np.ones((5, 4), np.float32)}, (), True)
    assert batch_key(a, ("y",), False) != batch_key(a, (), False)
    assert batch_key(a, (), False) != batch_key({"x": np.zeros((2, 3), np.float64)}, (), False)
    s1 = {"s": np.array([b"a"], dtype="S1")}
    assert batch_key(s1, (), False) == batch_key({"s": np.array([b"abc"], dtype="S3")}, (), False)


def test_concat_split_and_merge_round_trip() -> None:
    a = {"x": np.arange(6).reshape(3, 2), "s": np.array([b"a", b"b", b"c"], dtype=object)}
    b = {"x": np.arange(6, 10).reshape(2, 2), "s": np.array([b"d", b"e"], dtype=object)}
    batch = concat_inputs([(a, 1, 2), (b, 0, 2)], 6, False)
    assert batch["x"].tolist() == [[2, 3], [4, 5], [6, 7], [8, 9], [2, 3], [2, 3]]
    assert batch["s"].tolist() == [b"b", b"c", b"d", b"e", b"b", b"b"]
    parts = split_outputs({"y": batch["x"] * 10}, [2, 2], 6)
    assert [p["y"].tolist() for p in parts] == [[[20, 30], [40, 50]], [[60, 70], [80, 90]]]
    assert merge_outputs(parts)["y"].shape == (4, 2)
    with pytest.raises(FailedPreconditionError, match="0th dimension does not equal"):
        split_outputs({"y": np.zeros(5)}, [2, 2], 6)
    padded = merge_outputs([{"y": np.ones((1, 2))}, {"y": np.ones((1, 3)) * 2}])
    assert padded["y"].tolist() == [[1, 1, 1], [2, 2, 2]]


# --- BatchingLoader and BatchingConfig -----------------------------------------------------------------


def _loader(tmp_path: Path, scheduler: BatchScheduler, per_model: bool, params_text: str | None) -> tuple[BatchingLoader, Doubler]:
    inner_servable = Doubler()
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    if params_text is not None:
        (version_dir / "batching_params.pbtxt").write_text(params_text)
    config = BatchingConfig(scheduler, BatchingParameters(max_batch_size=16), per_model=per_model)
    return BatchingLoader(SimpleLoader(lambda: inner_servable), config, version_dir), inner_servable


def test_loader_wraps_the_servable_with_the_global_parameters(tmp_path: Path, scheduler: BatchScheduler) -> None:
    loader, inner = _loader(tmp_path, scheduler, per_model=False, params_text="max_batch_size { value: 2 }")
    assert loader.servable is None
    loader.load()
    servable = loader.servable
    assert isinstance(servable, BatchingServable) and servable.inner is inner
    assert servable.parameters.max_batch_size == 16  # the per-model file is ignored
    assert servable.run("serving_default", {"x": np.ones((1,), np.float32)})["y"].tolist() == [2.0]
    loader.unload()
    assert loader.servable is None and scheduler.statistics() == []
    with pytest.raises(UnavailableError):
        servable.run("serving_default", {"x": np.ones((1,), np.float32)})


def test_per_model_parameters_come_from_the_version_directory(tmp_path: Path, scheduler: BatchScheduler) -> None:
    loader, _ = _loader(tmp_path, scheduler, per_model=True, params_text="max_batch_size { value: 4 }")
    loader.load()
    assert loader.servable.parameters.max_batch_size == 4
    assert loader.servable.parameters.max_enqueued_batches == 10  # omitted: TF Serving's default
    loader.unload()


def test_per_model_without_a_file_is_not_batched(tmp_path: Path, scheduler: BatchScheduler) -> None:
    loader, inner = _loader(tmp_path, scheduler, per_model=True, params_text=None)
    loader.load()
    assert loader.servable is inner and scheduler.statistics() == []
    loader.unload()


def test_bad_per_model_file_fails_the_load_before_the_model_loads(tmp_path: Path, scheduler: BatchScheduler) -> None:
    loader, _ = _loader(tmp_path, scheduler, per_model=True, params_text="max_batch_size { value: 0 }")
    with pytest.raises(InvalidArgumentError, match=r"batching_params.pbtxt: max_batch_size must be an int >= 1, got 0"):
        loader.load()
    assert loader.servable is None and loader.inner.servable is None
