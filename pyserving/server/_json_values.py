"""JSON values -> numpy arrays, with TF Serving's rules (private to :mod:`rest_json`).

Follows ``json_tensor.cc``'s ``FillTensorProto``: a value's shape is found by following
the first element of each nested list, every list must then match it, and every leaf
is checked against the dtype (``1.0`` is not an int, ``true`` is not a number, ints
beyond 2**24-1 are refused for float, base64 objects are exactly ``{"b64": "..."}``);
int8/int16/uint8 values outside their range are refused too (TF wraps them).
:func:`to_array` first tries vectorized paths and, when any rule is broken, walks the
value exactly as TF does (:func:`exact_array`), so messages name the first problem in
document order. Both paths give the same array for every accepted value.

Contract: pure functions, safe from any thread; JSON values passed in are read, never
modified or kept, and each result is a new array the caller owns (strings: object
arrays of ``bytes``). Errors are :class:`InvalidArgumentError` (HTTP 400), except a
dtype with no JSON form, which is :class:`UnimplementedError` (HTTP 501) as in TF.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from pyserving.servable.errors import InvalidArgumentError, ServingError, UnimplementedError
from pyserving.servable.signature import DType
from pyserving.server._json_floats import FLT_MAX, SMALL
from pyserving.server._json_messages import dump, lossy_error, type_error
from pyserving.server.tensor_codec import numpy_dtype

__all__ = ["is_b64", "b64decode", "utf8", "dense_shape", "to_array", "quick_array", "exact_array"]

_EXACT_INT = {DType.FLOAT: (1 << 24) - 1, DType.DOUBLE: (1 << 53) - 1}
_INT_RANGE = {
    DType.INT8: (-(1 << 7), (1 << 7) - 1), DType.UINT8: (0, (1 << 8) - 1),
    DType.INT16: (-(1 << 15), (1 << 15) - 1), DType.INT32: (-(1 << 31), (1 << 31) - 1),
    DType.INT64: (-(1 << 63), (1 << 63) - 1), DType.UINT32: (0, (1 << 32) - 1),
    DType.UINT64: (0, (1 << 64) - 1),
}
_FAST_TYPES = {DType.FLOAT: {float, int}, DType.DOUBLE: {float, int}, DType.BOOL: {bool}, DType.STRING: {str}}
_FAST_TYPES.update({d: {int} for d in _INT_RANGE})


def is_b64(value: Any) -> bool:
    """Whether ``value`` is a base64 object: exactly ``{"b64": "<string>"}``."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def b64decode(value: Any) -> bytes:
    """The bytes of a base64 object (whitespace skipped, padding optional)."""
    if not is_b64(value):
        raise InvalidArgumentError(f"JSON Value: {dump(value)} not formatted correctly for base64 data")
    text = "".join(value["b64"].split())  # absl's decoder skips whitespace and needs no padding
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("Unable to base64 decode") from None


def utf8(text: str) -> bytes:
    """A JSON string as bytes: UTF-8, with a non-UTF-8 body's raw bytes restored."""
    try:
        return text.encode("utf-8", "surrogateescape")  # raw bytes of a non-UTF-8 body come back
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def dense_shape(value: Any) -> list[int]:
    """TF's GetDenseTensorShape: follow the first element of each nested list."""
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _element(value: Any, dtype: DType) -> Any:
    """One leaf value checked exactly as TF's AddValueToTensor (plus narrow-int ranges)."""
    kind = type(value)
    if kind is dict:
        if dtype is DType.STRING:
            return b64decode(value)
        raise type_error(value, dtype)
    if dtype in _EXACT_INT:
        if kind is float:
            if dtype is DType.FLOAT and math.isfinite(value) and abs(value) > FLT_MAX:
                raise lossy_error(value, "float")
            return value
        if kind is int:
            if abs(value) > _EXACT_INT[dtype]:
                raise lossy_error(value, dtype.name.lower())
            return value
        raise type_error(value, dtype)
    if dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        if kind is int and low <= value <= high:
            return value
        raise type_error(value, dtype)
    if dtype is DType.BOOL:
        if kind is bool:
            return value
        raise type_error(value, dtype)
    if dtype is DType.STRING:
        if kind is str:
            return utf8(value)
        raise type_error(value, dtype)
    raise UnimplementedError(f"Conversion of JSON Value: {dump(value)} to type: {dtype.name.lower()}")


def to_array(value: Any, dtype: DType) -> np.ndarray:
    """One JSON value as a tensor of ``dtype``: a fast vectorized path, else TF's exact walk."""
    shape = dense_shape(value)
    array = quick_array(value, dtype, shape)
    return array if array is not None else exact_array(value, dtype, shape)


def quick_array(value: Any, dtype: DType, shape: list[int]) -> np.ndarray | None:
    """The tensor, or None when some rule is broken (the exact walk then says which)."""
    if math.prod(shape) <= SMALL:
        try:
            return exact_array(value, dtype, shape)
        except ServingError:
            return None
    return _fast_array(value, dtype, shape)


def exact_array(value: Any, dtype: DType, shape: list[int]) -> np.ndarray:
    """TF's walk of ``value`` against ``shape`` (from :func:`dense_shape`), leaf by leaf."""
    rank, flat = len(shape), []

    def fill(node: Any, level: int) -> None:
        if type(node) is not list:
            if level != rank:
                raise InvalidArgumentError(
                    f"JSON Value: {dump(node)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}"
                )
            flat.append(_element(node, dtype))
            return
        if level >= rank:
            raise InvalidArgumentError(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(node) != shape[level]:
            raise InvalidArgumentError(
                f"Encountered list at unexpected size: {len(node)} at level: {level} expected size: {shape[level]}"
            )
        for child in node:
            fill(child, level + 1)

    try:
        fill(value, 0)
    except RecursionError:
        raise InvalidArgumentError("JSON value is nested too deeply to be a tensor") from None
    if dtype is DType.STRING:
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    return np.array(flat, dtype=numpy_dtype(dtype)).reshape(shape)


def _fast_array(value: Any, dtype: DType, shape: list[int]) -> np.ndarray | None:
    """The tensor when every leaf has an accepted type and the nesting is dense; None to
    let the exact walk find the first problem (and its message) in document order."""
    allowed = _FAST_TYPES.get(dtype)
    if allowed is None:
        return None
    if not shape:
        return None if type(value) not in allowed else np.array(_element(value, dtype), dtype=numpy_dtype(dtype))
    if len(shape) <= 2 or shape[-1] >= 8:
        seen = _leaf_types(value, shape, 0)  # long rows: one set(map(type)) per row
        if seen is None or not seen <= allowed:
            return None
        objects = None
    else:  # many short rows: let numpy find the nesting, then look at every leaf once
        try:
            objects = np.array(value, dtype=object)
        except ValueError:  # ragged
            return None
        if list(objects.shape) != shape:
            return None
        seen = set(map(type, objects.ravel().tolist()))
        if not seen <= allowed:
            return None
    try:
        source = value if objects is None else objects
        if dtype is DType.STRING:
            return np.frompyfunc(utf8, 1, 1)(np.array(source, dtype=object)).reshape(shape)
        if dtype is DType.BOOL:
            return np.array(source, dtype=np.bool_)
        if dtype in _EXACT_INT:
            wide = np.array(source, dtype=np.float64)
            magnitude = np.abs(wide)
            finite = np.isfinite(wide)
            if dtype is DType.FLOAT and np.any(finite & (magnitude > FLT_MAX)):
                return None
            if int in seen:  # an int beyond the exact range is a whole number beyond it: walk those
                big = wide[finite & (magnitude > _EXACT_INT[dtype])]
                if big.size and np.any(big == np.trunc(big)):
                    return None
            return wide.astype(np.float32) if dtype is DType.FLOAT else wide
        wide = np.array(source, dtype=np.uint64 if dtype is DType.UINT64 else np.int64)
    except (OverflowError, ValueError, TypeError):
        return None
    low, high = _INT_RANGE[dtype]
    if wide.size and (int(wide.min()) < low or int(wide.max()) > high):
        return None
    return wide.astype(numpy_dtype(dtype), copy=False)


def _leaf_types(node: Any, shape: list[int], level: int) -> set[type] | None:
    if type(node) is not list or len(node) != shape[level]:
        return None
    if level == len(shape) - 1:
        return set(map(type, node))
    seen: set[type] = set()
    for child in node:
        found = _leaf_types(child, shape, level + 1)
        if found is None:
            return None
        seen |= found
    return seen
