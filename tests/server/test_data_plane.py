"""Unit tests for the transport-neutral DataPlane over a fake ServingCore (no TensorFlow, no server).

The core is pyserving.testing.StaticServingCore (ServableId -> servable, labels, published
states); it tracks every handle it hands out so each test checks the data plane released them all.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest

from pyserving.servable.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnimplementedError,
    UnknownError,
)
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    DType,
    SignatureSpec,
    TensorSpec,
)
from pyserving.servable.state import ManagerState, ServableState
from pyserving.server.data_plane import ClassifyResult, DataPlane, ModelSpec, RegressResult
from pyserving.testing import StaticServingCore

_EXAMPLES = TensorSpec(DType.STRING, (None,))
_SIGNATURES = {
    "serving_default": SignatureSpec({"x": TensorSpec(DType.FLOAT, (None,))}, {"y": TensorSpec(DType.FLOAT, (None,))}),
    "two": SignatureSpec(
        {"x": TensorSpec(DType.FLOAT, (None,))},
        {"double": TensorSpec(DType.FLOAT, (None,)), "square": TensorSpec(DType.FLOAT, (None,))},
    ),
    "classify": SignatureSpec({"inputs": _EXAMPLES}, {"scores": TensorSpec(DType.FLOAT)}, method_name=CLASSIFY_METHOD),
    "regress": SignatureSpec({"inputs": _EXAMPLES}, {"outputs": TensorSpec(DType.FLOAT)}, method_name=REGRESS_METHOD),
}


class Model:
    """y = x + version; classify/regress return whatever a test put in ``classify_out`` / ``regress_out``."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.runs: list[tuple[str, tuple[str, ...]]] = []
        self.classify_out: Any = None
        self.regress_out: Any = None

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return _SIGNATURES

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict:
        self.runs.append((signature_name, tuple(output_filter)))
        x = inputs["x"]
        if signature_name == "two":
            outputs = {"double": x * 2, "square": x * x}
            return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}
        return {"y": x + self.version}

    def classify(self, signature_name: str, examples: list[bytes]) -> Any:
        return self.classify_out

    def regress(self, signature_name: str, examples: list[bytes]) -> Any:
        return self.regress_out

    def signature_def_map(self) -> dict[str, Any]:
        return {"serving_default": f"def of version {self.version}"}


class NoExamples:
    """Runs predict only: no classify / regress."""

    signatures = _SIGNATURES

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> dict:
        return {}


@pytest.fixture
def core() -> Iterator[StaticServingCore]:
    servables: dict[ServableId, Any] = {ServableId("m", v): Model(v) for v in (1, 2, 3)}
    servables[ServableId("plain", 1)] = object()
    servables[ServableId("predict_only", 1)] = NoExamples()
    states = [
        ServableState(ServableId("m", 2), ManagerState.AVAILABLE),
        ServableState(ServableId("m", 4), ManagerState.END, UnknownError("Loading m 4 failed")),
        ServableState(ServableId("m", 1), ManagerState.AVAILABLE),
        ServableState(ServableId("m", 3), ManagerState.LOADING),
    ]
    fake = StaticServingCore(servables, labels={"m": {"stable": 1, "canary": 3}}, states={"m": states})
    yield fake
    assert fake.held_handles() == [], "a handle outlived its request"


@pytest.fixture
def plane(core: StaticServingCore) -> DataPlane:
    return DataPlane(core)


def x_input(*values: float) -> Any:
    return lambda signature: {"x": np.array(values, np.float32)}


def error(cls: type[ServingError], fn: Any, *args: Any) -> str:
    with pytest.raises(cls) as info:
        fn(*args)
    return info.value.message


# -- resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        (ModelSpec("m"), 3),
        (ModelSpec("m", version=1), 1),
        (ModelSpec("m", version=2), 2),
        (ModelSpec("m", version_label="stable"), 1),
        (ModelSpec("m", version_label="canary"), 3),
    ],
    ids=["latest", "version-1", "version-2", "label-stable", "label-canary"],
)
def test_resolution_by_version_label_or_latest(plane: DataPlane, spec: ModelSpec, version: int) -> None:
    result = plane.predict(spec, x_input(1.0))
    assert result.id == ServableId("m", version)
    assert result.outputs["y"].tolist() == [1.0 + version]


@pytest.mark.parametrize(
    ("spec", "cls", "message"),
    [
        (ModelSpec(""), InvalidArgumentError, "ModelSpec has no name specified."),
        (ModelSpec("m", version_label="nope"), InvalidArgumentError, "Unrecognized servable version label: nope"),
        (ModelSpec("m", version=-1), InvalidArgumentError, "model version must be >= 0, got -1"),
        (ModelSpec("m", version=7), NotFoundError, "Servable not found for request: Specific(m, 7)"),
        (ModelSpec("x"), NotFoundError, "Servable not found for request: Latest(x)"),
    ],
    ids=["empty-name", "unknown-label", "negative-version", "unknown-version", "unknown-model"],
)
def test_resolution_errors(plane: DataPlane, spec: ModelSpec, cls: type[ServingError], message: str) -> None:
    assert error(cls, plane.predict, spec, x_input(1.0)) == message


# -- predict ---------------------------------------------------------------------------------


def test_predict_defaults_to_serving_default_and_reports_the_signature(plane: DataPlane, core: StaticServingCore) -> None:
    seen: list[SignatureSpec] = []

    def decode(signature: SignatureSpec) -> dict[str, np.ndarray]:
        seen.append(signature)
        return {"x": np.array([2.0], np.float32)}

    result = plane.predict(ModelSpec("m", version=1), decode)
    assert (result.signature_name, result.signature) == ("serving_default", _SIGNATURES["serving_default"])
    assert seen == [_SIGNATURES["serving_default"]]
    assert core.servable("m", 1).runs == [("serving_default", ())]


def test_predict_passes_the_output_filter(plane: DataPlane, core: StaticServingCore) -> None:
    result = plane.predict(ModelSpec("m", signature_name="two"), x_input(3.0), ["square"])
    assert list(result.outputs) == ["square"] and result.outputs["square"].tolist() == [9.0]
    assert core.servable("m", 3).runs == [("two", ("square",))]


def test_predict_unknown_signature_is_failed_precondition(plane: DataPlane) -> None:
    message = error(FailedPreconditionError, plane.predict, ModelSpec("m", signature_name="nope"), x_input(1.0))
    assert message == 'Serving signature key "nope" not found.'


def test_bad_inputs_and_filters_never_reach_the_model(plane: DataPlane, core: StaticServingCore) -> None:
    wrong_dtype = lambda signature: {"x": np.array([1], np.int64)}  # noqa: E731
    assert "DT_INT64" in error(InvalidArgumentError, plane.predict, ModelSpec("m"), wrong_dtype)
    message = error(InvalidArgumentError, plane.predict, ModelSpec("m", signature_name="two"), x_input(1.0), ["nope"])
    assert message.startswith("output tensor alias not found in signature: nope")
    assert core.servable("m", 3).runs == []


class DeadlineAware(Model):
    """Takes the optional ``deadline`` keyword of ``run`` (as the batching servable does)."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.deadlines: list[float | None] = []

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
            *, deadline: float | None = None) -> dict:
        self.deadlines.append(deadline)
        return super().run(signature_name, inputs, output_filter)


def test_predict_hands_the_deadline_to_servables_that_take_it() -> None:
    aware, plain = DeadlineAware(1), Model(1)
    core = StaticServingCore({ServableId("aware", 1): aware, ServableId("plain", 1): plain})
    plane = DataPlane(core)
    deadline = time.monotonic() + 60
    assert plane.predict(ModelSpec("aware"), x_input(1.0), deadline=deadline).outputs["y"].tolist() == [2.0]
    assert plane.predict(ModelSpec("aware"), x_input(1.0)).outputs["y"].tolist() == [2.0]
    assert aware.deadlines == [deadline, None]
    assert plane.predict(ModelSpec("plain"), x_input(1.0), deadline=deadline).outputs["y"].tolist() == [2.0]
    assert plain.runs == [("serving_default", ())]
    assert core.held_handles() == []


def test_predict_past_its_deadline_is_not_run(plane: DataPlane, core: StaticServingCore) -> None:
    message = error(DeadlineExceededError, plane.predict, ModelSpec("m", version=1), x_input(1.0), (),
                    time.monotonic() - 1)
    assert message == f"The request's deadline passed before {ServableId('m', 1)} could run it; it was not run"
    assert core.servable("m", 1).runs == []


def test_a_servable_without_signatures_is_failed_precondition(plane: DataPlane) -> None:
    message = error(FailedPreconditionError, plane.predict, ModelSpec("plain"), x_input(1.0))
    assert message == f"Servable {ServableId('plain', 1)} (object) has no signatures to run"


# -- classify / regress -----------------------------------------------------------------------


def test_classify_returns_checked_arrays(plane: DataPlane, core: StaticServingCore) -> None:
    core.servable("m", 3).classify_out = {"scores": np.array([[1], [2]], np.int64)}
    result = plane.classify(ModelSpec("m", signature_name="classify"), [b"a", b"b"])
    assert isinstance(result, ClassifyResult)
    assert (result.id, result.signature_name, result.classes) == (ServableId("m", 3), "classify", None)
    assert result.scores is not None and result.scores.dtype == np.float32 and result.scores.tolist() == [[1.0], [2.0]]
    core.servable("m", 3).classify_out = {"classes": [[b"x"], [b"y"]], "scores": [[0.5], [0.25]]}
    result = plane.classify(ModelSpec("m", signature_name="classify"), [b"a", b"b"])
    assert result.classes is not None and result.classes.tolist() == [[b"x"], [b"y"]]
    assert result.scores is not None and result.scores.tolist() == [[0.5], [0.25]]


_LABELS_2X2 = np.array([[b"a", b"b"]] * 2, dtype=object)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"scores": np.ones(2, np.float32)}, "Expected Tensor shape: [batch_size num_classes] but got [2]"),
        ({"scores": np.ones((3, 1), np.float32)}, "Expected scores output batch size of 2. Got: 3"),
        ({"classes": np.ones((2, 1), np.float32)}, "Expected classes Tensor of DT_STRING. Got: float32"),
        (
            {"classes": _LABELS_2X2, "scores": np.ones((2, 1), np.float32)},
            "Tensors class and score should match in dim_size(1). Got 2 vs. 1",
        ),
        ({}, "classify outputs must include classes or scores; got neither"),
    ],
    ids=["scores-1d", "batch", "classes-dtype", "width", "empty-dict"],
)
def test_classify_output_checks(plane: DataPlane, core: StaticServingCore, output: Any, message: str) -> None:
    core.servable("m", 3).classify_out = output
    spec = ModelSpec("m", signature_name="classify")
    assert error(InvalidArgumentError, plane.classify, spec, [b"a", b"b"]) == message


def test_classify_must_return_a_mapping(plane: DataPlane, core: StaticServingCore) -> None:
    core.servable("m", 3).classify_out = (None, np.ones((1, 1), np.float32))
    assert error(InternalError, plane.classify, ModelSpec("m", signature_name="classify"), [b"a"]) == (
        f"Servable {ServableId('m', 3)} classify() returned tuple; expected a dict with 'classes' and/or 'scores'"
    )


@pytest.mark.parametrize(
    "values", [np.array([1.5, 2.5], np.float32), np.array([[1.5], [2.5]], np.float32), [1.5, 2.5]]
)
def test_regress_returns_batch_shaped_floats(plane: DataPlane, core: StaticServingCore, values: Any) -> None:
    core.servable("m", 3).regress_out = values
    result = plane.regress(ModelSpec("m", signature_name="regress"), [b"a", b"b"])
    assert isinstance(result, RegressResult)
    assert (result.id, result.signature_name) == (ServableId("m", 3), "regress")
    assert result.values.shape == (2,) and result.values.dtype.kind == "f" and result.values.tolist() == [1.5, 2.5]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            np.ones((2, 2), np.float32),
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]",
        ),
        (np.ones(3, np.float32), "Input batch size did not match output batch size: 2 vs. 3"),
        (np.array([b"a", b"b"], dtype=object), "Expected output Tensor of DT_FLOAT. Got: object"),
    ],
)
def test_regress_output_checks(plane: DataPlane, core: StaticServingCore, values: Any, message: str) -> None:
    core.servable("m", 3).regress_out = values
    assert error(InvalidArgumentError, plane.regress, ModelSpec("m", signature_name="regress"), [b"a", b"b"]) == message


def test_classify_and_regress_request_errors(plane: DataPlane) -> None:
    assert error(InvalidArgumentError, plane.classify, ModelSpec("m", signature_name="nope"), [b"a"]) == (
        "No signature was found with the name: nope"
    )
    assert error(InvalidArgumentError, plane.classify, ModelSpec("m", signature_name="regress"), [b"a"]) == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress"
    )
    assert error(InvalidArgumentError, plane.regress, ModelSpec("m"), [b"a"]) == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/predict"
    )
    assert error(InvalidArgumentError, plane.regress, ModelSpec("m", signature_name="regress"), []) == "Input is empty."
    message = error(UnimplementedError, plane.regress, ModelSpec("predict_only", signature_name="regress"), [b"a"])
    assert message == f"Servable {ServableId('predict_only', 1)} does not support {REGRESS_METHOD}"


# -- multi-inference --------------------------------------------------------------------------


def test_multi_inference_runs_every_task_in_order(plane: DataPlane, core: StaticServingCore) -> None:
    core.servable("m", 1).classify_out = {"scores": [[0.5]]}
    core.servable("m", 1).regress_out = [[4.0]]
    tasks = [
        (ModelSpec("m", version=1, signature_name="regress"), REGRESS_METHOD),
        (ModelSpec("m", signature_name="classify"), CLASSIFY_METHOD),
    ]
    first, second = plane.multi_inference(tasks, [b"a"])
    assert isinstance(first, RegressResult) and first.values.tolist() == [4.0]
    assert isinstance(second, ClassifyResult) and second.scores is not None and second.scores.tolist() == [[0.5]]
    assert first.id == second.id == ServableId("m", 1)  # resolved once, from the first task


@pytest.mark.parametrize(
    ("tasks", "cls", "message"),
    [
        ([], InvalidArgumentError, "MultiInferenceRequest has no tasks"),
        (
            [
                (ModelSpec("m", signature_name="classify"), CLASSIFY_METHOD),
                (ModelSpec("x", signature_name="regress"), REGRESS_METHOD),
            ],
            InvalidArgumentError,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [(ModelSpec("m", signature_name="regress"), REGRESS_METHOD)] * 2,
            InvalidArgumentError,
            "Duplicate evaluation of signature: regress",
        ),
        (
            [(ModelSpec("m"), "tensorflow/serving/predict")],
            UnimplementedError,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            [(ModelSpec("m", signature_name="nope"), REGRESS_METHOD)],
            InvalidArgumentError,
            "Requested signature not found in model graph: nope",
        ),
    ],
    ids=["no-tasks", "two-models", "duplicate", "predict-method", "unknown-signature"],
)
def test_multi_inference_errors(plane: DataPlane, tasks: Any, cls: type[ServingError], message: str) -> None:
    assert error(cls, plane.multi_inference, tasks, [b"a"]) == message


# -- metadata and status -----------------------------------------------------------------------


def test_metadata_uses_the_servables_signature_defs(plane: DataPlane) -> None:
    result = plane.metadata(ModelSpec("m", version_label="stable"))
    assert result.id == ServableId("m", 1)
    assert result.signature_def_map == {"serving_default": "def of version 1"}


@pytest.mark.slow  # builds TensorFlow SignatureDef protos
def test_metadata_builds_signature_defs_from_specs(plane: DataPlane) -> None:
    defs = plane.metadata(ModelSpec("predict_only")).signature_def_map
    assert set(defs) == set(_SIGNATURES)
    assert defs["classify"].method_name == CLASSIFY_METHOD
    assert defs["serving_default"].inputs["x"].dtype == int(DType.FLOAT)


def test_metadata_of_a_servable_without_signatures_is_failed_precondition(plane: DataPlane) -> None:
    assert "has no signatures to run" in error(FailedPreconditionError, plane.metadata, ModelSpec("plain"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((), "GetModelMetadataRequest must specify at least one metadata_field"),
        (("signature_def", "graph"), "Metadata field graph is not supported"),
    ],
)
def test_metadata_fields(plane: DataPlane, fields: Sequence[str], message: str) -> None:
    assert error(InvalidArgumentError, plane.metadata, ModelSpec("m"), fields) == message


def test_status_is_highest_version_first(plane: DataPlane) -> None:
    states = plane.status(ModelSpec("m"))
    assert [(s.id.version, s.manager_state) for s in states] == [
        (4, ManagerState.END),
        (3, ManagerState.LOADING),
        (2, ManagerState.AVAILABLE),
        (1, ManagerState.AVAILABLE),
    ]
    assert [s.id.version for s in plane.status(ModelSpec("m", version=2))] == [2]
    assert len(plane.status(ModelSpec("m", version_label="nope"))) == 4  # the label is ignored


@pytest.mark.parametrize(
    ("spec", "cls", "message"),
    [
        (ModelSpec("m", version=9), NotFoundError, "Could not find version 9 of model m"),
        (ModelSpec("x"), NotFoundError, "Could not find any versions of model x"),
        (ModelSpec(""), InvalidArgumentError, "ModelSpec has no name specified."),
    ],
)
def test_status_errors(plane: DataPlane, spec: ModelSpec, cls: type[ServingError], message: str) -> None:
    assert error(cls, plane.status, spec) == message
