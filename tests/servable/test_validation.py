"""Unit tests for pyserving.servable.validation: request input checks and classify/regress output checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from pyserving.servable.validation import (
    check_classify_outputs,
    check_inputs,
    check_output_filter,
    check_regress_output,
    format_shape,
)

SIGNATURE = SignatureSpec(
    inputs={
        "a": TensorSpec(DType.FLOAT, (None, 2)),
        "b": TensorSpec(DType.INT64, (None,)),
        "text": TensorSpec(DType.STRING, None),
    },
    outputs={"sum": TensorSpec(DType.FLOAT, (None,)), "b_times_two": TensorSpec(DType.INT64, (None,))},
)


def good_inputs() -> dict[str, Any]:
    return {
        "a": np.ones((3, 2), np.float32),
        "b": np.array([1, 2, 3], np.int64),
        "text": np.array([b"x"], dtype=object),
    }


def message_of(fn: Any, *args: Any) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        fn(*args)
    return info.value.message


# -- format_shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "text"),
    [((), "[]"), ((3,), "[3]"), ((None, 2), "[-1,2]"), ((-1, 4, 5), "[-1,4,5]"), (None, "<unknown rank>")],
)
def test_format_shape(shape: Any, text: str) -> None:
    assert format_shape(shape) == text


# -- check_inputs ------------------------------------------------------------------------


def test_matching_inputs_pass() -> None:
    check_inputs(SIGNATURE, good_inputs())


@pytest.mark.parametrize("text", [np.array(["a", "b"]), np.array([b"a"]), np.array([["x"]], dtype=object)])
def test_every_numpy_string_kind_is_dt_string_and_unknown_rank_takes_any_shape(text: np.ndarray) -> None:
    check_inputs(SIGNATURE, {**good_inputs(), "text": text})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"remove": ["b", "text"]},
            "input size does not match signature: 1!=3 len({a}) != len({a,b,text}). "
            "Sent extra: {}. Missing but required: {b,text}.",
        ),
        (
            {"add": {"z": np.ones(1)}},
            "input size does not match signature: 4!=3 len({a,b,text,z}) != len({a,b,text}). "
            "Sent extra: {z}. Missing but required: {}.",
        ),
        (
            {"remove": ["b"], "add": {"c": np.ones(1)}},
            "input size does not match signature: 3!=3 len({a,c,text}) != len({a,b,text}). "
            "Sent extra: {c}. Missing but required: {b}.",
        ),
    ],
    ids=["missing", "extra", "renamed"],
)
def test_input_set_mismatch_uses_tf_servings_message(change: dict[str, Any], message: str) -> None:
    inputs = good_inputs()
    for name in change.get("remove", []):
        del inputs[name]
    inputs.update(change.get("add", {}))
    assert message_of(check_inputs, SIGNATURE, inputs) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("a", np.ones((3, 2), np.float64), "Input 'a' has dtype DT_DOUBLE, but the signature expects DT_FLOAT"),
        ("b", np.array([1], np.int32), "Input 'b' has dtype DT_INT32, but the signature expects DT_INT64"),
        ("text", np.array([1.0], np.float32), "Input 'text' has dtype DT_FLOAT, but the signature expects DT_STRING"),
        ("b", np.array(["1"]), "Input 'b' has dtype DT_STRING, but the signature expects DT_INT64"),
        ("b", [1, 2], "Input 'b' has dtype list, but the signature expects DT_INT64"),
        ("b", np.array([1], "datetime64[s]"), "Input 'b' has dtype datetime64[s], but the signature expects DT_INT64"),
    ],
)
def test_dtype_mismatch(name: str, value: Any, message: str) -> None:
    assert message_of(check_inputs, SIGNATURE, {**good_inputs(), name: value}) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "a",
            np.ones((3, 3), np.float32),
            "Input 'a' has shape [3,3], but the signature expects [-1,2] (-1 = any size)",
        ),
        ("a", np.ones((2,), np.float32), "Input 'a' has shape [2], but the signature expects [-1,2] (-1 = any size)"),
        ("b", np.array(3, np.int64), "Input 'b' has shape [], but the signature expects [-1] (-1 = any size)"),
    ],
)
def test_shape_mismatch(name: str, value: Any, message: str) -> None:
    assert message_of(check_inputs, SIGNATURE, {**good_inputs(), name: value}) == message


def test_minus_one_in_a_signature_shape_is_unknown() -> None:
    signature = SignatureSpec({"x": TensorSpec(DType.FLOAT, (-1, 2))}, {})
    check_inputs(signature, {"x": np.ones((7, 2), np.float32)})


# -- check_output_filter ---------------------------------------------------------------------


def test_output_filter_rules() -> None:
    check_output_filter(SIGNATURE, [])
    check_output_filter(SIGNATURE, ["b_times_two", "sum"])
    assert message_of(check_output_filter, SIGNATURE, ["sum", "nope"]) == (
        "output tensor alias not found in signature: nope Outputs expected to be in the set {b_times_two,sum}."
    )
    assert message_of(check_output_filter, SIGNATURE, ["sum", "sum"]) == "duplicate output tensor alias: sum"


# -- check_classify_outputs ------------------------------------------------------------------


LABELS = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object)
SCORES = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)


def test_classify_outputs_pass_through() -> None:
    classes, scores = check_classify_outputs(LABELS, SCORES, 2)
    assert classes is not None and classes.tolist() == LABELS.tolist()
    assert scores is SCORES
    assert check_classify_outputs(None, SCORES, 2) == (None, SCORES)
    classes, scores = check_classify_outputs([["x"], ["y"]], None, 2)
    assert scores is None and classes is not None and classes.shape == (2, 1)


def test_integer_scores_become_float32() -> None:
    _, scores = check_classify_outputs(None, np.array([[1, 2]], np.int64), 1)
    assert scores is not None and scores.dtype == np.float32 and scores.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    ("classes", "scores", "message"),
    [
        (None, None, "classify outputs must include classes or scores; got neither"),
        (None, SCORES[0], "Expected Tensor shape: [batch_size num_classes] but got [2]"),
        (LABELS[None], None, "Expected Tensor shape: [batch_size num_classes] but got [1,2,2]"),
        (SCORES, None, "Expected classes Tensor of DT_STRING. Got: float32"),
        (None, LABELS, "Expected scores Tensor of DT_FLOAT. Got: object"),
        (LABELS[:1], None, "Expected classes output batch size of 2. Got: 1"),
        (None, np.ones((3, 2), np.float32), "Expected scores output batch size of 2. Got: 3"),
        (LABELS, SCORES[:, :1], "Tensors class and score should match in dim_size(1). Got 2 vs. 1"),
    ],
    ids=[
        "neither", "scores-1d", "classes-3d", "classes-dtype", "scores-dtype", "classes-batch", "scores-batch", "width"
    ],
)
def test_classify_output_errors(classes: Any, scores: Any, message: str) -> None:
    assert message_of(check_classify_outputs, classes, scores, 2) == message


# -- check_regress_output ---------------------------------------------------------------------


@pytest.mark.parametrize("values", [np.array([1.5, 2.5], np.float32), np.array([[1.5], [2.5]], np.float32)])
def test_regress_output_is_flattened_to_batch(values: np.ndarray) -> None:
    out = check_regress_output(values, 2)
    assert out.shape == (2,) and out.dtype == np.float32 and out.tolist() == [1.5, 2.5]


def test_integer_regress_output_becomes_float32() -> None:
    out = check_regress_output([3, 4], 2)
    assert out.dtype == np.float32 and out.tolist() == [3.0, 4.0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            np.ones((2, 2), np.float32),
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]",
        ),
        (
            np.float32(1.0),
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got []",
        ),
        (np.ones(3, np.float32), "Input batch size did not match output batch size: 2 vs. 3"),
        (np.array([b"x", b"y"], dtype=object), "Expected output Tensor of DT_FLOAT. Got: object"),
    ],
    ids=["matrix", "scalar", "batch", "dtype"],
)
def test_regress_output_errors(values: Any, message: str) -> None:
    assert message_of(check_regress_output, values, 2) == message
