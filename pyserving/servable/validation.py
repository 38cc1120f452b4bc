"""Checking a request's tensors against a signature, and a model's classify/regress outputs.

One implementation for every servable and both transports, so gRPC, REST and library
callers cannot drift:

* :func:`check_inputs` / :func:`check_output_filter` run before any model code;
* :func:`check_classify_outputs` / :func:`check_regress_output` run on what a classify or
  regress signature returned, before it is encoded (TF Serving's ``classifier.cc`` /
  ``regressor.cc`` rules).

Messages follow TF Serving's where it has one ("input size does not match signature:
...") and otherwise name the input, the rule and the value. Every failure is an
:class:`InvalidArgumentError`. The functions are pure and thread-safe; the check
functions never modify their arguments. numpy is imported lazily (the core stays light
to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "check_inputs",
    "check_output_filter",
    "check_classify_outputs",
    "check_regress_output",
    "format_shape",
]


def _name_set(names: Sequence[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def format_shape(shape: Sequence[int | None] | None) -> str:
    """``[2,-1]`` for a shape (unknown dimensions as -1); ``<unknown rank>`` for None."""
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("-1" if d is None or d < 0 else str(d) for d in shape) + "]"


def _dtype_of(array: Any) -> DType | None:
    """The tensor type of ``array``; None when it has no dtype or one without a tensor type."""
    try:
        return DType.from_numpy(array.dtype)
    except (AttributeError, TypeError, ValueError):
        return None


def check_inputs(signature: SignatureSpec, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise ``InvalidArgumentError`` unless ``inputs`` match ``signature`` exactly.

    Rules: the set of input names equals the signature's; each value is an array whose
    dtype equals the declared dtype (numpy ``object``, bytes and str arrays all count as
    DT_STRING); when the rank is known it matches, and every known dimension matches.
    Values must already be arrays: callers that accept lists or scalars convert first.
    """
    expected = signature.inputs
    if len(inputs) != len(expected) or any(name not in expected for name in inputs):
        sent = list(inputs)
        extra = [n for n in sent if n not in expected]
        missing = [n for n in expected if n not in inputs]
        raise InvalidArgumentError(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_name_set(sent)}) != len({_name_set(list(expected))}). "
            f"Sent extra: {_name_set(extra)}. Missing but required: {_name_set(missing)}."
        )
    for name, array in inputs.items():
        _check_one(name, expected[name], array)


def _check_one(name: str, spec: TensorSpec, array: Any) -> None:
    got = _dtype_of(array)
    if got is not spec.dtype:
        got_text = got.tf_name if got is not None else str(getattr(array, "dtype", type(array).__name__))
        raise InvalidArgumentError(
            f"Input '{name}' has dtype {got_text}, but the signature expects {spec.dtype.tf_name}"
        )
    if spec.shape is None:
        return
    shape = tuple(array.shape)
    if len(shape) != len(spec.shape) or any(
        want is not None and want >= 0 and want != have for want, have in zip(spec.shape, shape)
    ):
        raise InvalidArgumentError(
            f"Input '{name}' has shape {format_shape(shape)}, but the signature expects "
            f"{format_shape(spec.shape)} (-1 = any size)"
        )


def check_output_filter(signature: SignatureSpec, output_filter: Sequence[str]) -> None:
    """TF Serving's rules: each alias exists in the signature and appears once."""
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgumentError(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {_name_set(list(signature.outputs))}."
            )
        if alias in seen:
            raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


_STRING_KINDS = "OSU"
_NUMBER_KINDS = "fiu"


def _as_float(array: np.ndarray) -> np.ndarray:
    """Integer arrays as float32; float arrays unchanged."""
    import numpy as np

    return array if array.dtype.kind == "f" else array.astype(np.float32)


def check_classify_outputs(
    classes: Any | None, scores: Any | None, batch_size: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate a classify signature's ``classes`` and ``scores``; return them as arrays.

    Rules: at least one of the two is given; then, in TF Serving's order, each given
    tensor has rank 2 (``[batch_size, num_classes]``), ``classes`` holds strings and
    ``scores`` numbers, each has ``batch_size`` rows, and when both are given they have
    the same number of columns. Returns ``(classes, scores)``: classes as an array of
    the given labels (``object``/bytes/str), scores as a float array (integer scores
    become float32); None where the tensor was not given.
    """
    import numpy as np

    if classes is None and scores is None:
        raise InvalidArgumentError("classify outputs must include classes or scores; got neither")
    checked: list[np.ndarray | None] = []
    for what, value, kinds, wanted in (
        ("classes", classes, _STRING_KINDS, "DT_STRING"),
        ("scores", scores, _NUMBER_KINDS, "DT_FLOAT"),
    ):
        if value is None:
            checked.append(None)
            continue
        array = np.asarray(value)
        if array.ndim != 2:
            raise InvalidArgumentError(
                f"Expected Tensor shape: [batch_size num_classes] but got {format_shape(array.shape)}"
            )
        if array.dtype.kind not in kinds:
            raise InvalidArgumentError(f"Expected {what} Tensor of {wanted}. Got: {array.dtype}")
        if array.shape[0] != batch_size:
            raise InvalidArgumentError(
                f"Expected {what} output batch size of {batch_size}. Got: {array.shape[0]}"
            )
        checked.append(array)
    label_array, score_array = checked
    if label_array is not None and score_array is not None and label_array.shape[1] != score_array.shape[1]:
        raise InvalidArgumentError(
            "Tensors class and score should match in dim_size(1). "
            f"Got {label_array.shape[1]} vs. {score_array.shape[1]}"
        )
    return label_array, None if score_array is None else _as_float(score_array)


def check_regress_output(values: Any, batch_size: int) -> np.ndarray:
    """Validate a regress signature's output; return it as a float array of shape ``[batch_size]``.

    Rules, in TF Serving's order: the shape is ``[batch_size]`` or ``[batch_size, 1]``;
    it has ``batch_size`` rows; it holds numbers (integers become float32).
    """
    import numpy as np

    array = np.asarray(values)
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise InvalidArgumentError(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {format_shape(array.shape)}"
        )
    if array.shape[0] != batch_size:
        raise InvalidArgumentError(
            f"Input batch size did not match output batch size: {batch_size} vs. {array.shape[0]}"
        )
    if array.dtype.kind not in _NUMBER_KINDS:
        raise InvalidArgumentError(f"Expected output Tensor of DT_FLOAT. Got: {array.dtype}")
    return _as_float(array.reshape(batch_size))
