"""TensorProto <-> numpy: every dtype, both encodings, TF's broadcast rule and the errors.

TensorFlow's own helpers (``tf.make_tensor_proto`` / ``tf.make_ndarray``) serve as the
reference; importing the proto package loads TensorFlow once per test session.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import DType
from pyserving.server.tensor_codec import from_numpy, tensor_proto_class, to_numpy

tf = pytest.importorskip("tensorflow")

SAMPLES = {
    "float32": np.array([[1.5, -2.25, 0.1], [np.inf, -0.0, 3.4028235e38]], dtype=np.float32),
    "float64": np.array([0.1, -1e300, 5e-324, np.nan], dtype=np.float64),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "uint8": np.array([0, 200, 255], dtype=np.uint8),
    "int16": np.array([-32768, 32767], dtype=np.int16),
    "uint16": np.array([0, 65535], dtype=np.uint16),
    "int32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    "int64": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
    "uint32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "bool": np.array([[True, False], [False, True]]),
    "float16": np.array([1.5, -0.0, 65504.0, np.inf], dtype=np.float16),
    "bfloat16": np.array([1.5, -3.0, 1e30], dtype=ml_dtypes.bfloat16),
    "complex64": np.array([1 + 2j, -3.5 - 0.25j], dtype=np.complex64),
    "complex128": np.array([[1e-300 + 2j]], dtype=np.complex128),
    "string": np.array([[b"hello", b""], [b"\x00\xff", "naïve".encode()]], dtype=object),
}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return a.shape == b.shape and list(a.ravel()) == list(b.ravel())
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


@pytest.mark.parametrize("as_content", [False, True], ids=["typed", "content"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_every_dtype(name: str, as_content: bool) -> None:
    array = SAMPLES[name]
    proto = from_numpy(array, as_tensor_content=as_content)
    assert proto.dtype == DType.from_numpy(array.dtype)
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    assert same(to_numpy(proto), array)
    # TensorFlow reads our protos the same way.
    reference = tf.make_ndarray(proto)
    assert same(reference.astype(object) if array.dtype == object else reference, array)


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n != "string"))
def test_decodes_tensorflow_protos(name: str) -> None:
    array = SAMPLES[name]
    assert same(to_numpy(tf.make_tensor_proto(array)), array)


def test_typed_fields_are_the_default_and_content_is_opt_in() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    typed = from_numpy(array)
    assert list(typed.float_val) == [0, 1, 2, 3, 4, 5]
    assert typed.tensor_content == b""
    packed = from_numpy(array, as_tensor_content=True)
    assert packed.tensor_content == array.astype("<f4").tobytes()
    assert len(packed.float_val) == 0


@pytest.mark.parametrize(
    ("array", "field"),
    [
        (np.array([1.0]), "double_val"),
        (np.array([1], np.int8), "int_val"),
        (np.array([1], np.uint16), "int_val"),
        (np.array([1], np.int64), "int64_val"),
        (np.array([1], np.uint32), "uint32_val"),
        (np.array([1], np.uint64), "uint64_val"),
        (np.array([True]), "bool_val"),
        (np.array([1.0], np.float16), "half_val"),
        (np.array([1.0], ml_dtypes.bfloat16), "half_val"),
        (np.array([1j], np.complex64), "scomplex_val"),
        (np.array([1j], np.complex128), "dcomplex_val"),
    ],
)
def test_each_dtype_uses_tensorflows_typed_field(array: np.ndarray, field: str) -> None:
    proto = from_numpy(array)
    assert proto.ListFields()[-1][0].name == field


def test_strings_always_use_string_val_and_accept_str() -> None:
    proto = from_numpy(np.array(["ab", b"c"], dtype=object), as_tensor_content=True)
    assert list(proto.string_val) == [b"ab", b"c"] and proto.tensor_content == b""
    assert list(from_numpy(np.array(["x", "yz"])).string_val) == [b"x", b"yz"]
    assert list(from_numpy(np.array([b"x", b"yz"])).string_val) == [b"x", b"yz"]
    decoded = to_numpy(proto)
    assert decoded.dtype == object and list(decoded) == [b"ab", b"c"]


def test_half_val_holds_bit_patterns() -> None:
    proto = from_numpy(np.array([1.0, -2.0], dtype=np.float16))
    assert list(proto.half_val) == [0x3C00, 0xC000]
    proto = tensor_proto_class()(dtype=DType.HALF, half_val=[0x3C00, 0x7C00])
    proto.tensor_shape.dim.add(size=2)
    assert same(to_numpy(proto), np.array([1.0, np.inf], dtype=np.float16))


def test_scalars_empty_and_non_contiguous_arrays() -> None:
    for array in (np.float32(2.5), np.array(7, np.int64), np.zeros((2, 0, 3), np.float32),
                  np.arange(12, dtype=np.int32).reshape(3, 4).T, np.array(b"s", dtype=object)):
        for as_content in (False, True):
            assert same(to_numpy(from_numpy(array, as_tensor_content=as_content)), np.asarray(array))


def test_big_endian_input_is_written_little_endian() -> None:
    array = np.array([1.5, 2.5], dtype=">f4")
    proto = from_numpy(array, as_tensor_content=True)
    assert proto.tensor_content == np.array([1.5, 2.5], "<f4").tobytes()
    assert same(to_numpy(from_numpy(array)), array.astype(np.float32))
    halves = np.array([1.0, -2.0], dtype=">f2")
    assert list(from_numpy(halves).half_val) == [0x3C00, 0xC000]


def test_tensor_content_decodes_without_copy_and_read_only() -> None:
    decoded = to_numpy(from_numpy(np.ones((4, 4), np.float32), as_tensor_content=True))
    assert not decoded.flags.writeable
    typed = to_numpy(from_numpy(np.ones((4, 4), np.float32)))
    assert typed.flags.writeable


def proto_with(dtype: DType, shape: list[int], **fields: object):
    proto = tensor_proto_class()(dtype=int(dtype), **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize(
    ("dtype", "field", "value", "expected"),
    [
        (DType.FLOAT, "float_val", [2.5], np.full((2, 3), 2.5, np.float32)),
        (DType.DOUBLE, "double_val", [-1.0], np.full((2, 3), -1.0)),
        (DType.INT32, "int_val", [7], np.full((2, 3), 7, np.int32)),
        (DType.UINT8, "int_val", [255], np.full((2, 3), 255, np.uint8)),
        (DType.INT64, "int64_val", [-9], np.full((2, 3), -9, np.int64)),
        (DType.UINT64, "uint64_val", [2**64 - 1], np.full((2, 3), 2**64 - 1, np.uint64)),
        (DType.BOOL, "bool_val", [True], np.ones((2, 3), bool)),
        (DType.HALF, "half_val", [0x3C00], np.ones((2, 3), np.float16)),
        (DType.COMPLEX64, "scomplex_val", [1.0, 2.0], np.full((2, 3), 1 + 2j, np.complex64)),
        (DType.STRING, "string_val", [b"x"], np.full((2, 3), b"x", dtype=object)),
    ],
)
def test_single_value_broadcasts_to_the_shape(dtype: DType, field: str, value: list, expected: np.ndarray) -> None:
    decoded = to_numpy(proto_with(dtype, [2, 3], **{field: value}))
    assert same(decoded, expected)
    assert same(tf.make_ndarray(proto_with(dtype, [2, 3], **{field: value})).astype(decoded.dtype), expected)


@pytest.mark.parametrize(
    ("dtype", "shape", "fields", "message"),
    [
        (DType.FLOAT, [2, 3], {"float_val": [1.0, 2.0]},
         "TensorProto of dtype DT_FLOAT and shape [2,3] has 2 values in float_val; expected 6 (or 1 to fill the shape)"),
        (DType.INT32, [2], {"int_val": [1, 2, 3]},
         "TensorProto of dtype DT_INT32 and shape [2] has 3 values in int_val; expected 2 (or 1 to fill the shape)"),
        (DType.STRING, [3], {},
         "TensorProto of dtype DT_STRING and shape [3] has 0 values in string_val; expected 3 (or 1 to fill the shape)"),
        (DType.COMPLEX64, [2], {"scomplex_val": [1.0, 2.0, 3.0]},
         "TensorProto of dtype DT_COMPLEX64 and shape [2] has 3 values in scomplex_val; expected 4 (or 2 to fill the shape)"),
        (DType.FLOAT, [0], {"float_val": [1.0]},
         "TensorProto of dtype DT_FLOAT and shape [0] has 1 values in float_val; expected 0 (or 1 to fill the shape)"),
        (DType.FLOAT, [2], {"tensor_content": b"\x00" * 7},
         "TensorProto tensor_content has 7 bytes, but dtype DT_FLOAT and shape [2] need 8 (2 x 4 bytes)"),
        (DType.FLOAT, [-1], {}, "TensorProto tensor_shape [-1] has a negative dimension"),
    ],
)
def test_wrong_value_counts_are_invalid_argument(dtype: DType, shape: list[int], fields: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        to_numpy(proto_with(dtype, shape, **fields))
    assert info.value.message == message


def test_unknown_rank_and_unsupported_dtypes_are_rejected() -> None:
    proto = proto_with(DType.FLOAT, [])
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidArgumentError, match="unknown_rank"):
        to_numpy(proto)
    for number, name in ((20, "DT_RESOURCE"), (0, "DT_INVALID"), (11, "DT_QINT8")):
        with pytest.raises(InvalidArgumentError, match=f"TensorProto dtype {name} is not supported"):
            to_numpy(tensor_proto_class()(dtype=number))
    with pytest.raises(InvalidArgumentError, match="cannot encode a numpy array of dtype datetime64"):
        from_numpy(np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(InvalidArgumentError, match="string tensor element 1 has type int; expected bytes or str"):
        from_numpy(np.array([b"a", 5], dtype=object))


def test_string_tensor_content_is_tensorflows_varint_list() -> None:
    strings = [b"ab", b"", b"x" * 200]
    content = bytes([2, 0, 0xC8, 0x01]) + b"".join(strings)
    decoded = to_numpy(proto_with(DType.STRING, [3], tensor_content=content))
    assert list(decoded) == strings
    with pytest.raises(InvalidArgumentError, match="lengths add up to 202"):
        to_numpy(proto_with(DType.STRING, [3], tensor_content=content + b"?"))
    with pytest.raises(InvalidArgumentError, match="ends inside its length prefix"):
        to_numpy(proto_with(DType.STRING, [3], tensor_content=bytes([2, 0x80])))


def test_narrow_int_vals_out_of_range_are_rejected() -> None:
    assert same(to_numpy(proto_with(DType.INT8, [2], int_val=[-128, 127])), np.array([-128, 127], np.int8))
    with pytest.raises(InvalidArgumentError) as info:
        to_numpy(proto_with(DType.INT8, [2], int_val=[300, -1]))
    assert info.value.message == "TensorProto int_val value 300 is out of range for DT_INT8 [-128, 127]"
    with pytest.raises(InvalidArgumentError, match="int_val value -1 is out of range for DT_UINT16"):
        to_numpy(proto_with(DType.UINT16, [1], int_val=[-1]))


def test_protos_survive_serialization() -> None:
    cls = tensor_proto_class()
    for name, array in SAMPLES.items():
        wire = from_numpy(array).SerializeToString()
        assert same(to_numpy(cls.FromString(wire)), array), name
