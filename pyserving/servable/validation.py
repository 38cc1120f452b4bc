"""Checking a request's tensors against a signature, before any model code runs.

One implementation for every servable and both transports, so gRPC and REST cannot
drift. Messages follow TF Serving's where it has one ("input size does not match
signature: ...") and otherwise name the input, the rule and the value. numpy is
imported lazily (the core stays light to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["check_inputs", "check_output_filter", "format_shape"]


def _name_set(names: Sequence[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def format_shape(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("-1" if d is None or d < 0 else str(d) for d in shape) + "]"


def _dtype_of(array: Any) -> DType | None:
    try:
        return DType.from_numpy(array.dtype)
    except ValueError:
        return None


def check_inputs(signature: SignatureSpec, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise ``InvalidArgumentError`` unless ``inputs`` match ``signature`` exactly.

    Rules: the set of input names equals the signature's; each array's dtype equals the
    declared dtype; when the rank is known it matches, and every known dimension matches.
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
