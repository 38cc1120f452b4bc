"""The public test helpers of pyserving.testing: StaticServingCore and HalfPlusTwoServable.

FakeLoader and FakeSource are exercised by the manager and source tests that use them.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from typing import Any, Mapping

import numpy as np
import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError, UnimplementedError, UnknownError
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    DType,
    InferenceServable,
    SignatureSpec,
    TensorSpec,
)
from pyserving.servable.state import ManagerState, ServableState
from pyserving.server.data_plane import DataPlane, ModelSpec
from pyserving.testing import HalfPlusTwoServable, StaticServingCore

# -- StaticServingCore -----------------------------------------------------------------------


def _core() -> StaticServingCore:
    servables = {ServableId("m", v): f"m{v}" for v in (1, 2, 5)}
    servables[ServableId("other", 7)] = "other7"
    failed = ServableState(ServableId("other", 8), ManagerState.END, UnknownError("Loading other 8 failed"))
    return StaticServingCore(
        servables,
        labels={"m": {"stable": 1, "canary": 5, "gone": 9}},
        states={"other": [ServableState(ServableId("other", 7), ManagerState.AVAILABLE), failed]},
    )


@pytest.mark.parametrize(
    ("request_", "version"),
    [
        (ServableRequest.latest("m"), 5),
        (ServableRequest.earliest("m"), 1),
        (ServableRequest.specific("m", 2), 2),
        (ServableRequest.label("m", "stable"), 1),
        (ServableRequest.label("m", "canary"), 5),
    ],
    ids=["latest", "earliest", "specific", "label-stable", "label-canary"],
)
def test_get_handle_resolves_like_the_manager(request_: ServableRequest, version: int) -> None:
    core = _core()
    with core.get_handle(request_) as handle:
        assert (handle.id, handle.servable) == (ServableId("m", version), f"m{version}")
    assert core.held_handles() == [] and core.handles_handed_out() == 1


@pytest.mark.parametrize(
    ("request_", "cls", "message"),
    [
        (ServableRequest.latest("x"), NotFoundError, "Servable not found for request: Latest(x)"),
        (ServableRequest.earliest("x"), NotFoundError, "Servable not found for request: Earliest(x)"),
        (ServableRequest.specific("m", 3), NotFoundError, "Servable not found for request: Specific(m, 3)"),
        (ServableRequest.label("m", "gone"), NotFoundError, "Servable not found for request: Label(m, gone)"),
        (ServableRequest.label("m", "nope"), InvalidArgumentError, "Unrecognized servable version label: nope"),
    ],
    ids=["latest", "earliest", "specific", "stale-label", "unknown-label"],
)
def test_get_handle_misses(request_: ServableRequest, cls: type[Exception], message: str) -> None:
    core = _core()
    with pytest.raises(cls) as info:
        core.get_handle(request_)
    assert info.value.message == message  # type: ignore[attr-defined]
    assert core.handles_handed_out() == 0


def test_held_handles_lists_unreleased_handles_even_after_the_caller_dropped_them() -> None:
    core = _core()
    first = core.get_handle(ServableRequest.latest("m"))
    second = core.get_handle(ServableRequest.specific("m", 1))
    assert core.held_handles() == [first, second]
    first.release()
    first.release()  # a second release changes nothing
    assert core.held_handles() == [second]
    del second
    gc.collect()
    (forgotten,) = core.held_handles()  # the core's reference keeps it from being collected
    assert forgotten.id == ServableId("m", 1) and not forgotten.released
    forgotten.release()
    assert core.held_handles() == [] and core.handles_handed_out() == 2


def test_handles_from_many_threads_are_all_counted() -> None:
    core = _core()
    start = threading.Barrier(8, timeout=30)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            for _ in range(200):
                with core.get_handle(ServableRequest.latest("m")) as handle:
                    assert handle.servable == "m5"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert core.held_handles() == [] and core.handles_handed_out() == 8 * 200


def test_labels_and_states() -> None:
    core = _core()
    labels = core.version_labels("m")
    assert labels == {"stable": 1, "canary": 5, "gone": 9}
    labels["stable"] = 2  # type: ignore[index]  # a copy: the core is unchanged
    assert core.version_labels("m")["stable"] == 1 and core.version_labels("x") == {}
    assert core.version_states("m") == [ServableState(ServableId("m", v), ManagerState.AVAILABLE) for v in (1, 2, 5)]
    assert [(s.id.version, s.manager_state) for s in core.version_states("other")] == [
        (7, ManagerState.AVAILABLE),
        (8, ManagerState.END),
    ]
    assert core.version_states("x") == []
    assert core.servable("other", 7) == "other7" and core.servables[ServableId("m", 2)] == "m2"
    with pytest.raises(TypeError):
        core.servables[ServableId("m", 9)] = "new"  # type: ignore[index]


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="servables keys must be ServableId, got 'm'"):
        StaticServingCore({"m": object()})  # type: ignore[dict-item]
    wrong = ServableState(ServableId("b", 1), ManagerState.AVAILABLE)
    with pytest.raises(InvalidArgumentError, match=r"states\['a'\] must hold ServableStates of 'a'"):
        StaticServingCore({}, states={"a": [wrong]})


# -- HalfPlusTwoServable ---------------------------------------------------------------------


def test_half_plus_two_predicts_and_records_calls() -> None:
    servable = HalfPlusTwoServable()
    assert isinstance(servable, InferenceServable)
    assert set(servable.signatures) == {
        "serving_default", "classify_x_to_y", "regress_x_to_y", "tensorflow/serving/regress"
    }
    assert servable.signatures["serving_default"].inputs["x"] == TensorSpec(DType.FLOAT, (None,), "x:0")
    y = servable.run("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)})["y"]
    assert y.dtype == np.float32 and y.tolist() == [2.5, 3.0, 4.5]
    assert servable.run("serving_default", {"x": np.array([0.0], np.float32)}, ["y"])["y"].tolist() == [2.0]
    assert servable.calls == ["serving_default", "serving_default"]
    three = HalfPlusTwoServable(3.0, x_shape=None)
    assert three.signatures["serving_default"].outputs["y"].shape is None
    assert three.run("serving_default", {"x": np.array([[1.0, 2.0]], np.float32)})["y"].tolist() == [[3.5, 4.0]]


class _Extended(HalfPlusTwoServable):
    def __init__(self) -> None:
        extra = {
            "both": SignatureSpec({"x": TensorSpec(DType.FLOAT)}, {"y": TensorSpec(DType.FLOAT), "z": TensorSpec(DType.FLOAT)}),
            "declared_only": SignatureSpec({"x": TensorSpec(DType.FLOAT)}, {"y": TensorSpec(DType.FLOAT)}),
            "classify_extra": SignatureSpec({}, {}, method_name=CLASSIFY_METHOD),
            "regress_extra": SignatureSpec({}, {}, method_name=REGRESS_METHOD),
        }
        super().__init__(extra_signatures=extra)

    def compute(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if signature_name == "both":
            return {"y": self.half_plus(inputs["x"]), "z": -inputs["x"]}
        return super().compute(signature_name, inputs)


def test_subclasses_add_signatures_and_run_filters_outputs() -> None:
    servable = _Extended()
    x = np.array([2.0], np.float32)
    assert {k: v.tolist() for k, v in servable.run("both", {"x": x}).items()} == {"y": [3.0], "z": [-2.0]}
    assert list(servable.run("both", {"x": x}, ["z"])) == ["z"]
    assert servable.run("serving_default", {"x": x})["y"].tolist() == [3.0]
    with pytest.raises(UnimplementedError, match="does not compute predict signature 'declared_only'"):
        servable.run("declared_only", {"x": x})
    with pytest.raises(UnimplementedError, match="does not compute classify signature 'classify_extra'"):
        servable.classify("classify_extra", [b""])
    with pytest.raises(UnimplementedError, match="does not compute regress signature 'regress_extra'"):
        servable.regress("regress_extra", [b""])
    assert servable.calls == ["both", "both", "serving_default", "declared_only"]


def test_predict_through_the_data_plane_releases_every_handle() -> None:
    core = StaticServingCore({ServableId("half", 1): HalfPlusTwoServable(), ServableId("half", 2): HalfPlusTwoServable(3.0)})
    plane = DataPlane(core)
    decode = lambda signature: {"x": np.array([1.0], np.float32)}  # noqa: E731
    assert plane.predict(ModelSpec("half"), decode).outputs["y"].tolist() == [3.5]
    assert plane.predict(ModelSpec("half", version=1), decode).outputs["y"].tolist() == [2.5]
    with pytest.raises(NotFoundError):
        plane.predict(ModelSpec("half", version=3), decode)
    assert [s.id.version for s in plane.status(ModelSpec("half"))] == [2, 1]
    assert core.held_handles() == [] and core.handles_handed_out() == 2


def _examples(*features: dict[str, Any]) -> list[bytes]:
    from tensorflow.core.example import example_pb2

    records = []
    for values in features:
        example = example_pb2.Example()
        for key, value in values.items():
            feature = example.features.feature[key]
            (feature.int64_list if isinstance(value, int) else feature.float_list).value.append(value)
        records.append(example.SerializeToString())
    return records


@pytest.mark.slow  # parses tf.Example protos (imports TensorFlow)
def test_classify_and_regress_follow_tf_servings_half_plus_two() -> None:
    servable = HalfPlusTwoServable()
    examples = _examples({"x": 2.0}, {"x": 4})
    scores = servable.classify("classify_x_to_y", examples)["scores"]
    assert scores.shape == (2, 1) and scores.dtype == np.float32 and scores.tolist() == [[3.0], [4.0]]
    assert servable.regress("regress_x_to_y", examples).tolist() == [3.0, 4.0]
    assert HalfPlusTwoServable(3.0).regress("tensorflow/serving/regress", examples).tolist() == [4.0, 5.0]
    assert HalfPlusTwoServable.feature_values(_examples({"x": 1.0}, {}), "x", 7.0).tolist() == [1.0, 7.0]
    with pytest.raises(InvalidArgumentError, match="example 1 has no feature 'x' and no default was given"):
        servable.regress("regress_x_to_y", _examples({"x": 1.0}, {"y": 1.0}))
    assert servable.calls == []  # only run() is recorded

    plane = DataPlane(core := StaticServingCore({ServableId("half", 1): servable}))
    result = plane.classify(ModelSpec("half", signature_name="classify_x_to_y"), examples)
    assert result.classes is None and result.scores is not None and result.scores.tolist() == [[3.0], [4.0]]
    assert plane.regress(ModelSpec("half", signature_name="regress_x_to_y"), examples).values.tolist() == [3.0, 4.0]
    assert core.held_handles() == []


def test_importing_pyserving_testing_loads_no_tensorflow_grpc_or_server() -> None:
    code = (
        "import sys, pyserving.testing;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tensorflow_serving', 'grpc'}),"
        " 'pyserving.server' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[] False"
