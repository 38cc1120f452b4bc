"""TF Serving's REST JSON codec: request parsing, dtype rules, response text and messages.

Expected texts come from ``tensorflow_serving/util/json_tensor{,_test}.cc`` and the REST
API documentation (reference §5).
"""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import orjson
import pytest

from pyserving.servable.errors import InvalidArgumentError, ServingError, UnimplementedError
from pyserving.servable.signature import REGRESS_METHOD, DType, SignatureSpec, TensorSpec
from pyserving.server import _json_floats, _json_values
from pyserving.server.rest_json import (
    encode_classify_response,
    encode_error,
    encode_predict_response,
    encode_regress_response,
    examples_from_json,
    parse_json_body,
    predict_inputs,
    request_signature_name,
)


def signature(**inputs: DType) -> SignatureSpec:
    return SignatureSpec(inputs={k: TensorSpec(v) for k, v in inputs.items()}, outputs={"y": TensorSpec(DType.FLOAT)})


X_FLOAT = signature(x=DType.FLOAT)


def predict(body: bytes | str, sig: SignatureSpec = X_FLOAT) -> tuple[dict[str, np.ndarray], bool]:
    doc = parse_json_body(body)
    request_signature_name(doc)
    return predict_inputs(doc, sig)


def error_of(body: bytes | str, sig: SignatureSpec = X_FLOAT) -> ServingError:
    with pytest.raises(ServingError) as info:
        predict(body, sig)
    return info.value


def assert_array(array: np.ndarray, dtype: object, values: object) -> None:
    expected = np.array(values, dtype=dtype)
    assert array.dtype == expected.dtype and array.shape == expected.shape
    if array.dtype == object:
        assert array.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(array, expected)


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
        (b"abc", "JSON Parse error: Invalid value. at offset: 0"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
        (b'{"a": [1, 2}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 11"),
        (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
        (b'{"a": 1} x', "JSON Parse error: The document root must not be followed by other values. at offset: 9"),
        (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string. at offset: 8"),
        (b'{"a": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (b'{"a": "\x01"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
        (b'{"a": [1e400]}', "JSON Parse error: Number too big to be stored in double. at offset: 7"),
        ('{"é": [1, Inf, ]}'.encode(), "JSON Parse error: Invalid value. at offset: 16"),
        (b'{"a": [1, Infx]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 13"),
        (b"[1, 2]", "JSON Value: [\n    1,\n    2\n] Is not object"),
        (b'"text"', 'JSON Value: "text" Is not object'),
    ],
)
def test_parse_errors_use_rapidjson_wording(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_json_body(body)
    assert info.value.message == message


def test_nan_and_infinity_tokens_are_accepted() -> None:
    doc = parse_json_body(b'{"a": [NaN, Infinity, -Infinity, Inf, -Inf, -NaN], "s": "Inf -NaN", "Inf": 1}')
    assert [str(v) for v in doc["a"]] == ["nan", "inf", "-inf", "inf", "-inf", "nan"]
    assert doc["s"] == "Inf -NaN" and doc["Inf"] == 1


def test_numbers_follow_rapidjson_types() -> None:
    doc = parse_json_body(b'{"a": [18446744073709551615, 18446744073709551616, -9223372036854775809, -0, 1E2]}')
    assert doc["a"] == [2**64 - 1, 1.8446744073709552e19, -9.223372036854776e18, 0, 100.0]
    assert [type(v) for v in doc["a"]] == [int, float, float, int, float]
    # The tolerant path (taken for NaN) gives the same types.
    doc = parse_json_body(b'{"a": [NaN, 18446744073709551616, 3]}')
    assert [type(v) for v in doc["a"]] == [float, float, int]


def test_bodies_that_are_not_utf8_keep_their_bytes() -> None:
    inputs, _ = predict(b'{"instances": ["\xff\xfeok"]}', signature(x=DType.STRING))
    assert inputs["x"].tolist() == [b"\xff\xfeok"]


def test_signature_name() -> None:
    assert request_signature_name({"instances": []}) is None
    assert request_signature_name({"signature_name": "serving_default"}) == "serving_default"
    for bad in (5, None, ["hello"]):
        with pytest.raises(InvalidArgumentError) as info:
            request_signature_name({"signature_name": bad})
        assert info.value.message.endswith("not formatted correctly. 'signature_name' key must be a string value.")
    with pytest.raises(InvalidArgumentError) as info:
        request_signature_name(parse_json_body(b'{"signature_name": 5, "instances": [1]}'))
    assert info.value.message == (
        'JSON Value: {\n    "signature_name": 5,\n    "instances": [\n        1\n    ]\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )


# -- predict: request formats ----------------------------------------------------------------


def test_row_format_single_input() -> None:
    inputs, row = predict(b'{"instances": [1.0, 2.0, 5.0]}')
    assert row is True
    assert_array(inputs["x"], np.float32, [1.0, 2.0, 5.0])
    inputs, _ = predict(b'{"instances": [[1,2],[3,4],[5,6]]}', signature(default=DType.INT32))
    assert_array(inputs["default"], np.int32, [[1, 2], [3, 4], [5, 6]])


def test_columnar_format_single_input_named_or_not() -> None:
    sig = signature(int_tensor=DType.INT32)
    for body in (b'{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', b'{"inputs": [[[1,2],[3,4],[5,6]]]}'):
        inputs, row = predict(body, sig)
        assert row is False
        assert_array(inputs["int_tensor"], np.int32, [[[1, 2], [3, 4], [5, 6]]])
    inputs, _ = predict(b'{"inputs": 3}', sig)
    assert_array(inputs["int_tensor"], np.int32, 3)


def test_row_format_multiple_named_inputs() -> None:
    sig = signature(int_tensor=DType.INT32, str_tensor=DType.STRING, float_tensor=DType.FLOAT, dbl_tensor=DType.DOUBLE)
    body = b"""{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}
    ]}"""
    inputs, row = predict(body, sig)
    assert row is True
    assert_array(inputs["int_tensor"], np.int32, [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]])
    assert_array(inputs["str_tensor"], object, [[b"foo", b"bar"], [b"baz", b"bat"]])
    assert_array(inputs["float_tensor"], np.float32, [[1.0, np.nan], [2.0, np.inf]])
    assert_array(inputs["dbl_tensor"], np.float64, [[np.nan], [2.0]])


def test_columnar_format_multiple_inputs_ignores_extra_keys() -> None:
    sig = signature(int_tensor=DType.INT32, str_tensor=DType.STRING, bin_tensor=DType.STRING)
    body = b"""{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
                "bin_tensor": {"b64": "aGVsbG8="}, "extra": [1]}}"""
    inputs, _ = predict(body, sig)
    assert sorted(inputs) == ["bin_tensor", "int_tensor", "str_tensor"]
    assert_array(inputs["bin_tensor"], object, b"hello")
    assert_array(inputs["str_tensor"], object, [b"foo", b"bar"])


def test_base64_instances() -> None:
    sig = signature(default=DType.STRING)
    inputs, _ = predict(b'{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', sig)
    assert_array(inputs["default"], object, [b"hello", b"world"])
    inputs, _ = predict(b'{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ"}]]}', sig)
    assert_array(inputs["default"], object, [[b"hello"], [b"world"]])  # unpadded base64 is fine
    inputs, _ = predict(b'{"instances": [{"default": [[{"b64": "aGVs bG8="}], [{"b64": "d29ybGQ="}]]}]}', sig)
    assert_array(inputs["default"], object, [[[b"hello"], [b"world"]]])


def test_mixed_ints_and_floats_for_float_tensors() -> None:
    inputs, _ = predict(b'{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}')
    assert_array(inputs["x"], np.float32, [1, 2.0, 3, 4, 5.003, 0.007, 0.0])
    inputs, _ = predict(b'{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', signature(x=DType.DOUBLE))
    assert_array(inputs["x"], np.float64, [1.0, 2, 3, 4, 0.662, 0, 0.0])
    inputs, _ = predict(b'{"inputs": [16777215, -16777215, 16777216.0, 3.4028234663852886e38]}')
    assert_array(inputs["x"], np.float32, [16777215, -16777215, 16777216.0, 3.4028234663852886e38])


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (DType.INT8, [-128, 127]), (DType.UINT8, [0, 255]), (DType.INT16, [-32768, 32767]),
        (DType.INT32, [-(2**31), 2**31 - 1]), (DType.INT64, [-(2**63), 2**63 - 1]),
        (DType.UINT32, [0, 2**32 - 1]), (DType.UINT64, [0, 2**64 - 1]), (DType.BOOL, [True, False]),
        (DType.STRING, ["a", "naïve"]), (DType.DOUBLE, [0.1, -1e308]),
    ],
)
def test_accepted_values_per_dtype(dtype: DType, values: list) -> None:
    inputs, _ = predict(orjson.dumps({"inputs": [values]}), signature(x=dtype))
    expected = [[v.encode() for v in values]] if dtype is DType.STRING else [values]
    assert_array(inputs["x"], object if dtype is DType.STRING else np.dtype(dtype.numpy_name), expected)


def test_empty_lists_give_empty_tensors() -> None:
    assert predict(b'{"inputs": []}')[0]["x"].shape == (0,)
    assert predict(b'{"instances": [[], []]}')[0]["x"].shape == (2, 0)
    assert predict(b'{"inputs": []}', signature(x=DType.HALF))[0]["x"].dtype == np.float16


def test_deep_tensors_with_short_rows() -> None:
    images = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3) / 7
    inputs, _ = predict(orjson.dumps({"instances": images.tolist()}))
    np.testing.assert_array_equal(inputs["x"], images)
    inputs, _ = predict(orjson.dumps({"instances": images.astype(int).tolist()}), signature(x=DType.UINT8))
    np.testing.assert_array_equal(inputs["x"], images.astype(np.uint8))


# -- predict: errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sig", "message"),
    [
        (b"{}", X_FLOAT, "Missing 'inputs' or 'instances' key"),
        (b'{"instances": [1], "inputs": [1]}', X_FLOAT,
         'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n    ]\n} Not formatted '
         "correctly expecting only one of 'inputs' or 'instances' keys to exist "),
        (b'{"instances": []}', X_FLOAT, "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
        (b'{"instances": 5}', X_FLOAT, "JSON Value: {\n    \"instances\": 5\n} Excepting 'instances' to be an list/array"),
        (b'{"instances": [1, 2]}', signature(a=DType.FLOAT, b=DType.FLOAT),
         "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
         "tensorinfo_map"),
        (b'{"inputs": [1, 2]}', signature(a=DType.FLOAT, b=DType.FLOAT),
         "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
         "tensorinfo_map"),
        (b'{"inputs": {"a": [1]}}', signature(a=DType.FLOAT, b=DType.FLOAT), "Missing named input: b in 'inputs' object."),
        (b'{"inputs": {"y": [1]}}', X_FLOAT, "Missing named input: x in 'inputs' object."),
        (b'{"inputs": [[1, 2], [3]]}', X_FLOAT, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        (b'{"inputs": [[1, 2], 3]}', X_FLOAT,
         "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        (b'{"inputs": [1, [2]]}', X_FLOAT, "Encountered list at unexpected level: 1 expected < 1"),
        (b'{"inputs": [1.5, "a"]}', X_FLOAT, 'JSON Value: "a" Type: String is not of expected type: float'),
        (b'{"inputs": [true]}', X_FLOAT, "JSON Value: true Type: True is not of expected type: float"),
        (b'{"inputs": [null]}', X_FLOAT, "JSON Value: null Type: Null is not of expected type: float"),
        (b'{"inputs": [{"b64": "AA=="}]}', X_FLOAT,
         'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of expected type: float'),
        (b'{"inputs": [16777217]}', X_FLOAT, "Cannot convert JSON value: 16777217 to float without loss of precision."),
        (b'{"inputs": [1, -16777217]}', X_FLOAT,
         "Cannot convert JSON value: -16777217 to float without loss of precision."),
        (b'{"inputs": [1e39]}', X_FLOAT, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
        (b'{"inputs": [9007199254740993]}', signature(x=DType.DOUBLE),
         "Cannot convert JSON value: 9007199254740993 to double without loss of precision."),
        (b'{"inputs": [1.0]}', signature(x=DType.INT32), "JSON Value: 1.0 Type: Number is not of expected type: int32"),
        (b'{"inputs": [1, 2.5]}', signature(x=DType.INT64), "JSON Value: 2.5 Type: Number is not of expected type: int64"),
        (b'{"inputs": [2147483648]}', signature(x=DType.INT32),
         "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        (b'{"inputs": [300]}', signature(x=DType.INT8), "JSON Value: 300 Type: Number is not of expected type: int8"),
        (b'{"inputs": [-1]}', signature(x=DType.UINT32), "JSON Value: -1 Type: Number is not of expected type: uint32"),
        (b'{"inputs": [9223372036854775808]}', signature(x=DType.INT64),
         "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"),
        (b'{"inputs": [-1]}', signature(x=DType.UINT64), "JSON Value: -1 Type: Number is not of expected type: uint64"),
        (b'{"inputs": [1]}', signature(x=DType.BOOL), "JSON Value: 1 Type: Number is not of expected type: bool"),
        (b'{"inputs": [false, 0]}', signature(x=DType.BOOL), "JSON Value: 0 Type: Number is not of expected type: bool"),
        (b'{"inputs": [1]}', signature(x=DType.STRING), "JSON Value: 1 Type: Number is not of expected type: string"),
        (b'{"inputs": [{"b64": "AA==", "x": 1}]}', signature(x=DType.STRING),
         'JSON Value: {\n    "b64": "AA==",\n    "x": 1\n} not formatted correctly for base64 data'),
        (b'{"inputs": [{"b64": "A"}]}', signature(x=DType.STRING), "Unable to base64 decode"),
        (b'{"inputs": [{"b64": "!!!!"}]}', signature(x=DType.STRING), "Unable to base64 decode"),
    ],
)
def test_predict_error_messages(body: bytes, sig: SignatureSpec, message: str) -> None:
    error = error_of(body, sig)
    assert isinstance(error, InvalidArgumentError)
    assert error.message == message


@pytest.mark.parametrize(
    ("body", "sig", "message"),
    [
        (b'{"instances": [[1,2],[3,4],[5,6,7]]}', signature(default=DType.INT32),
         "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
        (b'{"instances": [[1,2],[3,4],[[5,6]]]}', signature(default=DType.INT32),
         "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]"),
        (b'{"instances": [1, [1]]}', X_FLOAT,
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]"),
        (b'{"instances": [[1,2],["a", "b"]]}', signature(default=DType.INT32),
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String is "
         "not of expected type: int32"),
        (b'{"instances": [{"a": 1, "b": 2}, [1, 20, 30]]}', signature(a=DType.INT32, b=DType.INT32),
         "Expecting object but got list at item 1 of input list"),
        (b'{"instances": [["baz", "bar"], {"x": ["baz", "bat"]}]}', signature(x=DType.STRING),
         "Expecting value/list but got object at item 1 of input list"),
        (b'{"instances": [{"a": 1, "c": 2}]}', signature(a=DType.INT32, b=DType.INT32),
         "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have "
         "named input: c"),
        (b'{"instances": [{"a": 1, "b": 2}, {"a": 1}]}', signature(a=DType.INT32, b=DType.INT32),
         "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b"),
        (b'{"instances": [{"a": [1, 2], "b": 1}, {"a": [[7]], "b": 2}]}', signature(a=DType.INT32, b=DType.INT32),
         "Failed to process element: 1 key: a of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but "
         "got: 1"),
        (b'{"instances": [[1.5]]}', signature(x=DType.HALF),
         "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.5 to "
         "type: half"),
    ],
)
def test_row_format_errors_name_the_instance(body: bytes, sig: SignatureSpec, message: str) -> None:
    error = error_of(body, sig)
    assert isinstance(error, InvalidArgumentError)
    assert error.message == message


def test_unsupported_dtypes_are_unimplemented() -> None:
    error = error_of(b'{"inputs": [1.5]}', signature(x=DType.HALF))
    assert isinstance(error, UnimplementedError)
    assert error.message == "Conversion of JSON Value: 1.5 to type: half"
    assert error_of(b'{"inputs": ["a"]}', signature(x=DType.COMPLEX64)).message == (
        'Conversion of JSON Value: "a" to type: complex64'
    )
    # Objects fail the type check before the dtype is looked at, as in TF.
    assert isinstance(error_of(b'{"inputs": [{"a": 1}]}', signature(x=DType.HALF)), InvalidArgumentError)


def test_empty_signature_inputs() -> None:
    empty = SignatureSpec(inputs={}, outputs={})
    assert error_of(b'{"instances": [1]}', empty).message == "Failed to get input map for signature: DEFAULT"
    assert error_of(b'{"signature_name": "s", "instances": [1]}', empty).message == (
        "Failed to get input map for signature: s"
    )


def test_long_values_are_cut_in_messages() -> None:
    error = error_of(orjson.dumps({"instances": [1], "inputs": list(range(500))}))
    dump = error.message[len("JSON Value: ") :]
    assert dump.index("...") == 256


def random_tensor(rng: random.Random, dtype: DType) -> object:
    shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 4))]

    def leaf() -> object:
        if dtype is DType.FLOAT:
            return rng.choice([rng.random(), rng.randint(-100, 100), float("nan"), 16777216.0])
        if dtype is DType.INT8:
            return rng.randint(-128, 127)
        if dtype is DType.BOOL:
            return rng.random() < 0.5
        return rng.choice(["s", "", "ü"])

    def build(level: int) -> object:
        return leaf() if level == len(shape) else [build(level + 1) for _ in range(shape[level])]

    return build(0)


def corrupt(rng: random.Random, value: object) -> object:
    """Replace one random leaf or list by a value of another kind."""
    if not isinstance(value, list) or not value or rng.random() < 0.3:
        return rng.choice([None, True, "x", 1.5, 7, 2**40, {"b64": "AA=="}, [1], [], [[1, 2]]])
    copy = list(value)
    index = rng.randrange(len(copy))
    copy[index] = corrupt(rng, copy[index])
    return copy


@pytest.mark.parametrize("dtype", [DType.FLOAT, DType.INT8, DType.BOOL, DType.STRING])
def test_fast_path_agrees_with_tensorflows_walk(dtype: DType) -> None:
    rng = random.Random(int(dtype))
    for _ in range(300):
        value = random_tensor(rng, dtype)
        if rng.random() < 0.5:
            value = corrupt(rng, value)
        shape = _json_values.dense_shape(value)
        try:
            expected = _json_values.exact_array(value, dtype, shape)
        except ServingError as exc:
            with pytest.raises(ServingError) as info:
                _json_values.to_array(value, dtype)
            assert info.value == exc
            continue
        got = _json_values.to_array(value, dtype)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tolist() == expected.tolist() or np.array_equal(got, expected, equal_nan=True)


# -- predict responses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (9000000, "9e+06"), (999999, "999999.0"), (0.5, "0.5"), (0.0003, "0.0003"), (0.00003, "3e-05"),
        (555557.5, "555557.5"), (3.0, "3.0"), (0.0, "0.0"), (-0.0, "-0.0"), (0.1, "0.1"), (1234567, "1234567.0"),
        (0.2, "0.2"), (1 / 3, "0.333333343"), (16777216, "16777216.0"), (1e10, "1e+10"), (123456789, "123456792.0"),
        (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (1e-45, "1.4013e-45"), (1.5e-45, "1.4013e-45"), (3e-45, "2.8026e-45"), (1.1754942e-38, "1.17549421e-38"),
    ],
)
def test_float32_text(value: float, text: str) -> None:
    body = encode_predict_response({"y": np.array([value], np.float32)}, True)
    assert body == b'{"predictions":[' + text.encode() + b"]}"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1, "0.1"), (1 / 3, "0.33333333333333331"), (1e22, "1e+22"), (2.0**53, "9007199254740992.0"),
     (1e-310, "1e-310"), (123456.5, "123456.5"), (1e16, "1e+16")],
)
def test_float64_text(value: float, text: str) -> None:
    assert encode_predict_response({"y": np.array([value])}, False) == b'{"outputs":[' + text.encode() + b"]}"


def test_float_text_matches_scalar_reference_on_random_values() -> None:
    rng = np.random.default_rng(7)
    for dtype, bits in ((np.float32, np.uint32), (np.float64, np.uint64)):
        raw = rng.integers(0, np.iinfo(bits).max, 4000, dtype=bits).view(dtype)
        values = np.concatenate([raw, rng.random(2000).astype(dtype), np.round(rng.random(2000) * 1e5).astype(dtype)])
        texts = _json_floats.float_texts(values, 1)
        single = dtype is np.float32
        assert texts == [_json_floats.write_decimal(float(v), single) for v in values]


def test_vectorized_float_text_matches_small_path() -> None:
    values = [9000000, 999999, 0.5, 0.0003, 0.00003, 555557.5, 3.0, -0.0, np.nan, np.inf, -np.inf, 1 / 3]
    small = encode_predict_response({"y": np.array(values, np.float32)}, False)
    large = encode_predict_response({"y": np.array(values * 4, np.float32)}, False)
    assert small == b'{"outputs":[9e+06,999999.0,0.5,0.0003,3e-05,555557.5,3.0,-0.0,NaN,Infinity,-Infinity,0.333333343]}'
    assert large == b'{"outputs":[' + b",".join([small[12:-2]] * 4) + b"]}"


def test_large_requests_take_the_vectorized_path_with_the_same_results() -> None:
    rng = np.random.default_rng(3)
    floats = rng.random((32, 784)).astype(np.float32)
    mixed = [[int(v * 100) if i % 3 == 0 else v for i, v in enumerate(row)] for row in floats.tolist()]
    inputs, _ = predict(orjson.dumps({"instances": mixed}))
    expected = np.array(mixed, np.float32)
    np.testing.assert_array_equal(inputs["x"], expected)
    rows = floats.tolist()
    rows[31][783] = "oops"
    message = "Failed to process element: 31 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"oops\" Type: " \
              "String is not of expected type: float"
    assert error_of(orjson.dumps({"instances": rows})).message == message
    rows[31][783] = 16777217
    assert "Cannot convert JSON value: 16777217 to float" in error_of(orjson.dumps({"instances": rows})).message
    rows[31][783] = 16777216.0  # a float may be large; only ints must be exact
    assert predict(orjson.dumps({"instances": rows}))[0]["x"][31, 783] == 16777216.0
    ints = rng.integers(-1000, 1000, (8, 300))
    inputs, _ = predict(orjson.dumps({"inputs": ints.tolist()}), signature(x=DType.INT16))
    np.testing.assert_array_equal(inputs["x"], ints.astype(np.int16))
    words = [["w%d" % i for i in range(40)]] * 3
    inputs, _ = predict(orjson.dumps({"instances": words}), signature(x=DType.STRING))
    assert inputs["x"].shape == (3, 40) and inputs["x"][2, 39] == b"w39"


def test_tensorflow_documented_outputs() -> None:
    floats = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert encode_predict_response({"float_tensor": floats}, True) == (
        b'{"predictions":[[9e+06,999999.0,0.5],[0.0003,3e-05,555557.5]]}'
    )
    special = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert encode_predict_response({"float_tensor": special}, True) == (
        b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'
    )
    ints = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    assert encode_predict_response({"int_tensor": ints}, True) == b'{"predictions":' + orjson.dumps(ints.tolist()) + b"}"
    assert encode_predict_response({"int_tensor": ints}, False) == b'{"outputs":' + orjson.dumps(ints.tolist()) + b"}"


def test_multiple_outputs_row_and_columnar() -> None:
    outputs = {
        "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "float_tensor": np.array([[1.0], [2.0]], np.float32),
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    rows = json.loads(encode_predict_response(outputs, True))
    assert rows == {"predictions": [
        {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
         "str_tensor": ["foo", "bar"], "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]},
        {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
         "str_tensor": ["baz", "bat"], "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]},
    ]}
    columns = json.loads(encode_predict_response(outputs, False))
    assert columns == {"outputs": {
        "double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]],
        "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
        "str_tensor": [["foo", "bar"], ["baz", "bat"]],
        "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]],
    }}


def test_other_output_dtypes() -> None:
    outputs = {"b": np.array([True, False]), "u": np.array([2**64 - 1, 0], np.uint64), "s": np.array(["ü", "x"]),
               "i8": np.array([-1, 2], np.int8)}
    assert encode_predict_response(outputs, True) == (
        '{"predictions":[{"b":true,"i8":-1,"s":"ü","u":18446744073709551615},{"b":false,"i8":2,"s":"x","u":0}]}'
    ).encode()
    assert encode_predict_response({"y": np.array(7, np.int64)}, False) == b'{"outputs":7}'
    assert encode_predict_response({"y": np.array(2.5, np.float32)}, False) == b'{"outputs":2.5}'
    assert encode_predict_response({"y": np.array(b"\xffa", dtype=object)}, False) == '{"outputs":"\ufffda"}'.encode()
    big_endian = np.array([1, 2], dtype=">i4")
    assert encode_predict_response({"y": big_endian}, False) == b'{"outputs":[1,2]}'
    assert encode_predict_response({"y": np.arange(4, dtype=np.int32).reshape(2, 2).T}, False) == (
        b'{"outputs":[[0,2],[1,3]]}'
    )


def test_signature_dtype_is_applied_to_numeric_outputs() -> None:
    sig = SignatureSpec(inputs={}, outputs={"y": TensorSpec(DType.FLOAT)})
    assert encode_predict_response({"y": np.array([1 / 3])}, True, sig) == b'{"predictions":[0.333333343]}'
    assert encode_predict_response({"y": np.array([1 / 3])}, True) == b'{"predictions":[0.33333333333333331]}'


def test_zero_batch_and_response_errors() -> None:
    assert encode_predict_response({"a": np.zeros((0, 2), np.int32)}, True) == b'{"predictions":[]}'
    empty = {"a": np.zeros((0, 1, 2), dtype=object), "b": np.zeros((0, 3, 4), np.float32)}
    assert encode_predict_response(empty, True) == b'{"predictions":[]}'
    cases = [
        ({}, True, "Cannot convert empty tensor map to JSON"),
        ({"a": np.array(1, np.int32)}, True, "Tensor name: a has no shape information "),
        ({"a": np.zeros((2, 3)), "b": np.zeros((1, 3))}, True, "Tensor name: b has inconsistent batch size: 1 expecting: 2"),
        ({"a": np.zeros((0, 2)), "b": np.zeros((1, 2))}, True, "Tensor name: b has inconsistent batch size: 1 expecting: 0"),
        ({"a": np.array([1j], np.complex64)}, True, "Failed to write JSON value for tensor type: complex64"),
        ({"a": np.array([1.0], np.float16)}, False, "Failed to write JSON value for tensor type: half"),
        ({"a": np.array([1], np.uint16)}, False, "Failed to write JSON value for tensor type: uint16"),
    ]
    for outputs, row, message in cases:
        with pytest.raises(InvalidArgumentError) as info:
            encode_predict_response(outputs, row)
        assert info.value.message == message


# -- classify / regress ---------------------------------------------------------------------------


def parse_examples(body: bytes) -> tuple[list[dict], dict | None]:
    from google.protobuf import json_format
    from tensorflow.core.example import example_pb2

    def read(data: bytes) -> dict:
        return json_format.MessageToDict(example_pb2.Example.FromString(data))["features"]["feature"]

    examples, context = examples_from_json(parse_json_body(body))
    return [read(e) for e in examples], None if context is None else read(context)


def test_examples_without_context() -> None:
    examples, context = parse_examples(b"""{"examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
        {"names": ["baz"], "ratings": 6.0}]}""")
    assert context is None
    b64 = base64.b64encode
    assert examples == [
        {"names": {"bytesList": {"value": [b64(b"foo").decode(), b64(b"bar").decode()]}},
         "ratings": {"floatList": {"value": [8.0, 9.0]}}, "age": {"int64List": {"value": ["20"]}}},
        {"names": {"bytesList": {"value": [b64(b"baz").decode()]}}, "ratings": {"floatList": {"value": [6.0]}}},
    ]


def test_examples_with_context_and_special_values() -> None:
    examples, context = parse_examples(b"""{"signature_name": "custom", "context": {"query": "pizza", "location": ["sfo"]},
        "examples": [{"ratings": [8.0, NaN, Infinity], "mix": [1, true, false], "names": ["baz", {"b64": "aGVsbG8="}],
                      "empty": []}]}""")
    assert context == {"query": {"bytesList": {"value": ["cGl6emE="]}}, "location": {"bytesList": {"value": ["c2Zv"]}}}
    (example,) = examples
    assert example["ratings"] == {"floatList": {"value": [8.0, "NaN", "Infinity"]}}
    assert example["mix"] == {"int64List": {"value": ["1", "1", "0"]}}
    assert example["names"] == {"bytesList": {"value": ["YmF6", "aGVsbG8="]}}
    assert example["empty"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"context": [{"names": ["foo"]}]}', "Example must be JSON object but got JSON Array"),
        (b'{"signature_name": "x"}',
         'JSON Value: {\n    "signature_name": "x"\n} When method is classify, key \'examples\' is expected and was not found'),
        (b'{"examples": {"names": ["foo"]}}',
         'JSON Value: {\n    "examples": {\n        "names": [\n            "foo"\n        ]\n    }\n} Expecting '
         "'examples' value to be an list/array"),
        (b'{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
        (b'{"examples": [[{"names": ["foo"]}]]}', "Example must be JSON object but got JSON Array"),
        (b'{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
        (b'{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
        (b'{"examples": [{"names": ["a", 1]}]}', "Unexpected element type in feature: names expecting type: bytes"),
        (b'{"examples": [{"names": [10, {"test": 10}]}]}', "Feature: names has element with unexpected JSON type: Object"),
        (b'{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
        (b'{"examples": [{"names": [20, 18446744073709551603]}]}',
         "Feature: names has uint64 element. Only int64 is supported."),
        (b'{"examples": [{"names": 1.7976931348623157e308}]}',
         "Cannot convert JSON value: 1.7976931348623157e+308 to float without loss of precision."),
        (b'{"examples": [{"names": {"b64": "A"}}]}', "Unable to base64 decode"),
    ],
)
def test_example_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        examples_from_json(parse_json_body(body))
    assert info.value.message == message


def test_classify_and_regress_responses() -> None:
    classes = np.array([[b"car", b"bike", b"bus"], [b"car", b"bike", b"bus"]], dtype=object)
    scores = np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], np.float32)
    assert encode_classify_response(classes, scores) == (
        b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],[["car",0.7],["bike",0.1],["bus",0.2]]]}'
    )
    assert encode_classify_response(None, np.array([[3.0]])) == b'{"results":[[["",3.0]]]}'
    assert encode_classify_response(np.array([["a"]]), None) == b'{"results":[[["a",0.0]]]}'
    assert encode_regress_response(np.array([0.2, 0.9, 1.0])) == b'{"results":[0.2,0.9,1.0]}'
    assert encode_regress_response(np.array([[3.5], [4.0]])) == b'{"results":[3.5,4.0]}'
    specials = encode_regress_response([0.2, np.inf, 1.0, -np.inf, np.nan])
    assert specials == b'{"results":[0.2,Infinity,1.0,-Infinity,NaN]}'
    for call, message in [
        (lambda: encode_classify_response(None, np.zeros((0, 2))), "Cannot convert empty ClassificationResults to JSON"),
        (lambda: encode_regress_response(np.zeros(0)), "Cannot convert empty RegressionResults to JSON"),
        (lambda: encode_classify_response(np.array([["a", "b"]]), np.zeros((1, 3))), "scores must have shape"),
        (lambda: encode_regress_response(np.zeros((2, 2))), "regression values must have shape"),
        (lambda: encode_classify_response(None, None), "no classes and no scores"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            call()


def test_error_bodies() -> None:
    assert json.loads(encode_error('Bad key: "key"')) == {"error": 'Bad key: "key"'}
    assert encode_error("Servable not found for request: Latest(half)") == (
        b'{"error":"Servable not found for request: Latest(half)"}'
    )
    assert json.loads(encode_error("bytes \udcff here")) == {"error": "bytes \ufffd here"}


# -- documented examples (reference §5.7) ------------------------------------------------------------


def test_documented_half_plus_two_round_trips() -> None:
    def half_plus(inputs: dict[str, np.ndarray], add: float) -> dict[str, np.ndarray]:
        return {"y": (inputs["x"] * 0.5 + add).astype(np.float32)}

    inputs, row = predict(b'{"instances": [1.0, 2.0, 5.0]}')
    assert json.loads(encode_predict_response(half_plus(inputs, 2), row)) == {"predictions": [2.5, 3.0, 4.5]}
    assert json.loads(encode_predict_response(half_plus(inputs, 3), row)) == {"predictions": [3.5, 4.0, 5.5]}
    inputs, row = predict(b'{"instances": [2.0, 3.0, 4.0]}')
    assert encode_predict_response(half_plus(inputs, 2), row) == b'{"predictions":[3.0,3.5,4.0]}'
    inputs, row = predict(b'{"inputs": [2.0, 3.0, 4.0]}')
    assert encode_predict_response(half_plus(inputs, 2), row) == b'{"outputs":[3.0,3.5,4.0]}'
    inputs, row = predict(b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}')
    assert encode_predict_response(half_plus(inputs, 2), row) == b'{"predictions":[[2.5,3.0],[3.5,4.0]]}'

    doc = parse_json_body(b'{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}')
    assert request_signature_name(doc) == REGRESS_METHOD
    examples, context = examples_from_json(doc)
    assert len(examples) == 2 and context is None
    assert encode_regress_response(np.array([3.5, 4.0])) == b'{"results":[3.5,4.0]}'
    assert encode_classify_response(None, np.array([[3.0]], np.float32)) == b'{"results":[[["",3.0]]]}'
    assert encode_regress_response(np.array([3.0])) == b'{"results":[3.0]}'


def test_huge_integer_literals_are_a_400_not_a_crash():
    from pyserving.servable.errors import InvalidArgumentError
    from pyserving.server.rest_json import parse_json_body

    for body in (
        b'{"instances": [NaN, ' + b"9" * 5000 + b"]}",
        b'{"instances": [' + b"9" * 5000 + b"]}",
        b'{"instances": [NaN, ' + b"9" * 350 + b"]}",
    ):
        with pytest.raises(InvalidArgumentError, match="Number too big to be stored in double"):
            parse_json_body(body)
