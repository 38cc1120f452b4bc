"""``TensorProto`` <-> numpy conversion for the gRPC wire, without TensorFlow's helpers.

Contract:

* :func:`to_numpy` decodes ``tensor_content`` (little-endian bytes, TF's host order) with
  ``np.frombuffer`` — zero copy, so the array is **read-only** and keeps the bytes alive —
  and typed repeated fields (``float_val``, ``int_val``, ``half_val`` bit patterns, …)
  into a fresh writable array. A typed field holding exactly one value fills the whole
  shape (TF's broadcast rule); any other count that differs from the shape's element
  count is an :class:`InvalidArgumentError` naming the field, the count and the shape.
  (TF's C++ ``Tensor::FromProto`` is laxer: it zero-fills an empty field, repeats the
  last value of a short one and ignores extra values; we reject those as client bugs.)
  Strings come back as ``object`` arrays of ``bytes``. ``int_val`` values outside a
  narrow dtype's range (300 for DT_INT8) are refused, as ``tf.make_ndarray`` does (the
  C++ server would wrap them).
* :func:`from_numpy` encodes typed fields by default (TF Serving's default,
  ``--enable_serialization_as_tensor_content=false``) or, with ``as_tensor_content``,
  every non-string dtype as raw little-endian bytes. Strings always use ``string_val``
  (``str`` elements are UTF-8 encoded). Fixed-width fields (float, double, complex,
  bool) are written as one packed wire-format chunk, which upb parses at memcpy speed.
* Unsupported dtypes (``DT_RESOURCE``, ``DT_VARIANT``, quantized types, numpy dtypes
  with no TF counterpart) raise :class:`InvalidArgumentError`.

Both functions are pure and thread-safe; they never import ``tf.make_tensor_proto`` /
``tf.make_ndarray``. The proto module ``tensorflow.core.framework.tensor_pb2`` is imported
on first use — that import runs ``tensorflow/__init__`` (about 1.8-2.5 s on the
reference machine, once per process), so this module itself imports instantly.
``bfloat16`` needs ``ml_dtypes`` (a TensorFlow dependency), also imported on first use.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType

__all__ = ["to_numpy", "from_numpy", "tensor_proto_class", "numpy_dtype"]

# dtype -> (TensorProto field with the values, little-endian wire dtype of a packed
# fixed-width payload or None for varint fields, proto values per tensor element).
_FIELDS: dict[DType, tuple[str, str | None, int]] = {
    DType.FLOAT: ("float_val", "<f4", 1),
    DType.DOUBLE: ("double_val", "<f8", 1),
    DType.COMPLEX64: ("scomplex_val", "<f4", 2),
    DType.COMPLEX128: ("dcomplex_val", "<f8", 2),
    DType.INT32: ("int_val", None, 1),
    DType.INT16: ("int_val", None, 1),
    DType.INT8: ("int_val", None, 1),
    DType.UINT8: ("int_val", None, 1),
    DType.UINT16: ("int_val", None, 1),
    DType.INT64: ("int64_val", None, 1),
    DType.UINT32: ("uint32_val", None, 1),
    DType.UINT64: ("uint64_val", None, 1),
    DType.BOOL: ("bool_val", "|u1", 1),  # packed bools are one varint byte each: 0 or 1
    DType.HALF: ("half_val", None, 1),
    DType.BFLOAT16: ("half_val", None, 1),
    DType.STRING: ("string_val", None, 1),
}

# Numpy dtype a typed field's values are first read as, before the final view/cast.
_READ_AS = {
    "float_val": np.float32, "double_val": np.float64, "scomplex_val": np.float32,
    "dcomplex_val": np.float64, "int_val": np.int32, "half_val": np.int32, "int64_val": np.int64,
    "uint32_val": np.uint32, "uint64_val": np.uint64, "bool_val": np.bool_,
}


def tensor_proto_class() -> Any:
    """The ``TensorProto`` message class (imports TensorFlow's proto package on first use)."""
    return _proto_support()[0]


@functools.cache
def _proto_support() -> tuple[Any, dict[str, bytes]]:
    from tensorflow.core.framework import tensor_pb2  # slow first import: see module doc

    cls = tensor_pb2.TensorProto
    tags = {}
    for field, wire, _ in _FIELDS.values():
        if wire is not None:  # packed (length-delimited) tag of a fixed-width field
            tags[field] = _varint(cls.DESCRIPTOR.fields_by_name[field].number << 3 | 2)
    return cls, tags


@functools.cache
def numpy_dtype(dtype: DType) -> np.dtype:
    """The native numpy dtype of ``dtype`` (``object`` for strings, ml_dtypes' bfloat16)."""
    if dtype is DType.BFLOAT16:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype.numpy_name)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _dtype_name(number: int) -> str:
    try:
        return DType(number).tf_name
    except ValueError:
        try:
            from tensorflow.core.framework import types_pb2

            return str(types_pb2.DataType.Name(number))
        except (ImportError, ValueError):
            return f"DataType {number}"


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# -- decode ---------------------------------------------------------------------------


def to_numpy(tensor: Any) -> np.ndarray:
    """The numpy array a ``TensorProto`` describes (see the module contract)."""
    try:
        dtype = DType(tensor.dtype)
    except ValueError:
        raise InvalidArgumentError(
            f"TensorProto dtype {_dtype_name(tensor.dtype)} is not supported; supported dtypes: "
            + ", ".join(d.tf_name for d in DType)
        ) from None
    shape_proto = tensor.tensor_shape
    if shape_proto.unknown_rank:
        raise InvalidArgumentError("TensorProto tensor_shape has unknown_rank set; a tensor value needs a known shape")
    shape = tuple(d.size for d in shape_proto.dim)
    if any(d < 0 for d in shape):
        raise InvalidArgumentError(f"TensorProto tensor_shape {_shape_text(shape)} has a negative dimension")
    count = math.prod(shape)
    content = tensor.tensor_content
    if content:
        return _from_content(content, dtype, shape, count)
    return _from_field(tensor, dtype, shape, count)


def _from_content(content: bytes, dtype: DType, shape: tuple[int, ...], count: int) -> np.ndarray:
    if dtype is DType.STRING:
        return _decode_string_list(content, shape, count)
    native = numpy_dtype(dtype)
    wire = native.newbyteorder("<")
    if len(content) != count * wire.itemsize:
        raise InvalidArgumentError(
            f"TensorProto tensor_content has {len(content)} bytes, but dtype {dtype.tf_name} and shape "
            f"{_shape_text(shape)} need {count * wire.itemsize} ({count} x {wire.itemsize} bytes)"
        )
    array = np.frombuffer(content, dtype=wire).reshape(shape)
    return array if wire == native else array.astype(native)  # byte swap on big-endian hosts only


def _decode_string_list(content: bytes, shape: tuple[int, ...], count: int) -> np.ndarray:
    """TF's string ``tensor_content``: ``count`` varint32 lengths, then the bytes back to back."""
    lengths, pos = [], 0
    try:
        for _ in range(count):
            value, shift = 0, 0
            while True:
                byte = content[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            lengths.append(value)
    except IndexError:
        raise InvalidArgumentError(
            f"DT_STRING tensor_content ends inside its length prefix (shape {_shape_text(shape)})"
        ) from None
    if pos + sum(lengths) != len(content):
        raise InvalidArgumentError(
            f"DT_STRING tensor_content has {len(content) - pos} data bytes, but its lengths add up to {sum(lengths)}"
        )
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = content[pos : pos + length]
        pos += length
    return out.reshape(shape)


def _from_field(tensor: Any, dtype: DType, shape: tuple[int, ...], count: int) -> np.ndarray:
    field_name, _, per_element = _FIELDS[dtype]
    field = getattr(tensor, field_name)
    have = len(field)
    if have == count * per_element:
        fill = False
    elif have == per_element and count > 0:
        fill = True  # a single value broadcasts to the whole shape
    else:
        raise InvalidArgumentError(
            f"TensorProto of dtype {dtype.tf_name} and shape {_shape_text(shape)} has {have} values in "
            f"{field_name}; expected {count * per_element} (or {per_element} to fill the shape)"
        )
    values = _read_values(field, dtype, field_name)
    if fill:
        return np.full(shape, values[0], dtype=values.dtype)
    return values.reshape(shape)


def _read_values(field: Any, dtype: DType, field_name: str) -> np.ndarray:
    if dtype is DType.STRING:
        out = np.empty(len(field), dtype=object)
        out[:] = list(field)
        return out
    raw = np.array(field, dtype=_READ_AS[field_name])
    if dtype in (DType.COMPLEX64, DType.COMPLEX128):
        return raw.view(numpy_dtype(dtype))  # (re, im) pairs
    if dtype in (DType.HALF, DType.BFLOAT16):
        return raw.astype(np.uint16).view(numpy_dtype(dtype))  # half_val holds bit patterns
    target = numpy_dtype(dtype)
    if raw.dtype == target:
        return raw
    limits = np.iinfo(target)
    if raw.size and (raw.min() < limits.min or raw.max() > limits.max):
        bad = raw[(raw < limits.min) | (raw > limits.max)][0]
        raise InvalidArgumentError(
            f"TensorProto {field_name} value {bad} is out of range for {dtype.tf_name} [{limits.min}, {limits.max}]"
        )
    return raw.astype(target)


# -- encode ---------------------------------------------------------------------------


def from_numpy(array: Any, *, as_tensor_content: bool = False) -> Any:
    """A ``TensorProto`` holding ``array`` (see the module contract for the encoding)."""
    array = np.asarray(array)
    try:
        dtype = DType.from_numpy(array.dtype)
    except ValueError:
        raise InvalidArgumentError(
            f"cannot encode a numpy array of dtype {array.dtype} as a TensorProto; supported dtypes: "
            + ", ".join(DType(d).numpy_name for d in DType)
        ) from None
    cls, tags = _proto_support()
    proto = cls(dtype=int(dtype))
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if dtype is DType.STRING:
        proto.string_val.extend(_string_values(array))
        return proto
    if as_tensor_content:
        proto.tensor_content = array.astype(numpy_dtype(dtype).newbyteorder("<"), copy=False).tobytes()
        return proto
    field_name, wire, _ = _FIELDS[dtype]
    if wire is not None:
        if dtype in (DType.COMPLEX64, DType.COMPLEX128):
            array = array.astype(numpy_dtype(dtype).newbyteorder("<"), copy=False)  # (re, im) pairs
        else:
            array = array.astype(wire, copy=False)
        payload = array.tobytes()
        if payload:
            proto.MergeFromString(tags[field_name] + _varint(len(payload)) + payload)
    elif dtype in (DType.HALF, DType.BFLOAT16):
        native = array.astype(numpy_dtype(dtype), copy=False)  # bit patterns in host order
        proto.half_val.extend(native.view(np.uint16).ravel().tolist())
    else:
        getattr(proto, field_name).extend(array.ravel().tolist())
    return proto


def _string_values(array: np.ndarray) -> list[bytes]:
    values = array.ravel().tolist()
    if array.dtype.kind == "S":
        return values
    out = []
    for index, value in enumerate(values):
        if isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            out.append(value.encode("utf-8", "surrogateescape"))
        else:
            raise InvalidArgumentError(
                f"string tensor element {index} has type {type(value).__name__}; expected bytes or str"
            )
    return out
