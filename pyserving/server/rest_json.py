"""TF Serving's REST JSON bodies <-> numpy arrays and serialized ``tf.Example`` records.

Follows ``tensorflow_serving/util/json_tensor.cc``: the same row ("instances") and
columnar ("inputs") rules, the same JSON -> dtype strictness (``1.0`` is not an int,
``true`` is not a number, ints beyond 2**24-1 are refused for float, base64 objects are
exactly ``{"b64": "..."}``) and the same messages. Check order for predict is the
caller's: :func:`parse_json_body` (400) -> :func:`request_signature_name` (400) ->
servable and signature lookup -> :func:`predict_inputs` (400) -> inference.

Parsing uses orjson; only when orjson refuses a body (NaN/Infinity/Inf tokens, invalid
UTF-8, numbers orjson will not take) does the stdlib parser run, tolerant the way
rapidjson's ``kParseNanAndInfFlag`` is, and its errors are reworded as rapidjson's
(``JSON Parse error: Invalid value. at offset: 0``; offsets are the stdlib parser's, a
few bytes from rapidjson's for some errors). Output is compact JSON (TF pretty
prints; any JSON reader sees the same document) with TF's float text: ``%g`` when that
reads back exactly, else 9 (float) / 17 (double) significant digits, ``.0`` appended to
whole numbers, and bare ``NaN`` / ``Infinity`` / ``-Infinity``.

Deliberate differences: int8/int16/uint8 values outside their range are refused (TF
wraps them); non-UTF-8 bytes in string outputs become U+FFFD (TF emits invalid JSON);
value dumps inside messages are cut at 256 characters. Everything here is a pure
function, thread-safe; errors are :class:`InvalidArgumentError` except JSON for dtypes
with no JSON form, which is :class:`UnimplementedError` (HTTP 501) as in TF.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from typing import Any, Mapping, Sequence

import numpy as np
import orjson

from pyserving.servable.errors import InvalidArgumentError, ServingError, UnimplementedError
from pyserving.servable.signature import DType, SignatureSpec
from pyserving.server.tensor_codec import numpy_dtype

__all__ = [
    "parse_json_body",
    "request_signature_name",
    "predict_inputs",
    "encode_predict_response",
    "examples_from_json",
    "encode_classify_response",
    "encode_regress_response",
    "encode_error",
]

_FLT_MAX = float(np.finfo(np.float32).max)
_EXACT_INT = {DType.FLOAT: (1 << 24) - 1, DType.DOUBLE: (1 << 53) - 1}
_INT_RANGE = {
    DType.INT8: (-(1 << 7), (1 << 7) - 1), DType.UINT8: (0, (1 << 8) - 1),
    DType.INT16: (-(1 << 15), (1 << 15) - 1), DType.INT32: (-(1 << 31), (1 << 31) - 1),
    DType.INT64: (-(1 << 63), (1 << 63) - 1), DType.UINT32: (0, (1 << 32) - 1),
    DType.UINT64: (0, (1 << 64) - 1),
}
_FAST_TYPES = {DType.FLOAT: {float, int}, DType.DOUBLE: {float, int}, DType.BOOL: {bool}, DType.STRING: {str}}
_FAST_TYPES.update({d: {int} for d in _INT_RANGE})
_JSON_TYPE = {type(None): "Null", dict: "Object", list: "Array", str: "String", int: "Number", float: "Number"}
_DUMP_LIMIT = 256
_SMALL = 16  # tensors up to this many values skip the vectorized paths (fixed cost ~10 us)
_FLOAT32 = struct.Struct("f")

# -- parsing ------------------------------------------------------------------------------

_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_NONSTANDARD = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|Inf|NaN)', re.DOTALL)


def parse_json_body(body: bytes | str) -> dict[str, Any]:
    """The request's top-level JSON object; 400 with rapidjson's wording otherwise."""
    if not body:
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _tolerant_loads(body)
    if type(doc) is not dict:
        raise InvalidArgumentError(f"JSON Value: {_dump(doc)} Is not object")
    return doc


def _tolerant_loads(body: bytes | str) -> Any:
    text = body if isinstance(body, str) else bytes(body).decode("utf-8", "surrogateescape")
    shifts: list[tuple[int, int]] = []  # (position in rewritten text, growth so far)

    def token(match: re.Match[str]) -> str:
        word = match.group()
        if word[0] == '"':
            return word
        new = "NaN" if word.endswith("NaN") else ("-Infinity" if word[0] == "-" else "Infinity")
        grown = (shifts[-1][1] if shifts else 0) + len(new) - len(word)
        shifts.append((match.end() + grown, grown))
        return new

    rewritten = _NONSTANDARD.sub(token, text) if ("Inf" in text or "-NaN" in text) else text
    try:
        return json.loads(rewritten, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        pos = exc.pos - max((g for end, g in shifts if end <= exc.pos), default=0)
        if exc.msg.startswith("Unterminated string"):
            pos = len(text)  # rapidjson reports where the input ran out
        offset = len(text[:pos].encode("utf-8", "surrogateescape"))
        raise InvalidArgumentError(f"JSON Parse error: {_rapidjson_message(exc.msg, text, pos)} at offset: {offset}") from None
    except _NumberTooBig as exc:
        raise InvalidArgumentError(
            f"JSON Parse error: Number too big to be stored in double. at offset: {text.find(str(exc))}"
        ) from None
    except RecursionError:
        raise InvalidArgumentError("JSON Parse error: the document is nested too deeply") from None


class _NumberTooBig(ValueError):
    pass


def _parse_int(text: str) -> int | float:
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else float(value)  # rapidjson: double


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NumberTooBig(text)
    return value


def _rapidjson_message(message: str, text: str, pos: int) -> str:
    if message == "Expecting value" and not text.strip():
        return "The document is empty."
    if message == "Expecting ',' delimiter":
        depth: list[str] = []
        for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text[:pos]):
            char = match.group()
            if char in "[{":
                depth.append(char)
            elif char in "]}" and depth:
                depth.pop()
        inside_array = bool(depth) and depth[-1] == "["
        return "Missing a comma or ']' after an array element." if inside_array else (
            "Missing a comma or '}' after an object member."
        )
    return _RAPIDJSON_MESSAGES.get(message, "Invalid value.")


def request_signature_name(doc: Mapping[str, Any]) -> str | None:
    """The optional ``signature_name`` (None when absent); 400 unless it is a string."""
    if "signature_name" not in doc:
        return None
    name = doc["signature_name"]
    if type(name) is not str:
        raise InvalidArgumentError(
            f"JSON Value: {_dump(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


# -- value dumps and error texts (TF's wording) ------------------------------------------------


class _DumpFull(Exception):
    pass


def _dump(value: Any) -> str:
    """rapidjson's pretty print of a value (for messages), cut at 256 characters."""
    parts: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > _DUMP_LIMIT:
            raise _DumpFull

    def walk(node: Any, indent: int) -> None:
        if type(node) is float:
            single = abs(node) <= _FLT_MAX and _FLOAT32.unpack(_FLOAT32.pack(node))[0] == node
            return emit(_decimal(node, single))
        if not isinstance(node, (list, dict)) or not node:
            return emit(json.dumps(node, ensure_ascii=False))
        emit("[\n" if type(node) is list else "{\n")
        pad = " " * (indent + 4)
        for i, item in enumerate(node.items() if type(node) is dict else node):
            emit(",\n" + pad if i else pad)
            if type(node) is dict:
                emit(json.dumps(item[0], ensure_ascii=False) + ": ")
                item = item[1]
            walk(item, indent + 4)
        emit("\n" + " " * indent + ("]" if type(node) is list else "}"))

    try:
        walk(value, 0)
    except _DumpFull:
        return "".join(parts)[:_DUMP_LIMIT] + "..."
    return "".join(parts)


def _decimal(value: float, single: bool) -> str:
    """TF's WriteDecimal for one float (``single``: the value is a float32)."""
    if not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    text = "%g" % value
    if not _reads_back(text, value, single):
        text = ("%.9g" if single else "%.17g") % value
    return text if "." in text or "e" in text else text + ".0"


def _reads_back(text: str, value: float, single: bool) -> bool:
    back = float(text)
    if single:
        if abs(back) > _FLT_MAX:
            return False
        back = _FLOAT32.unpack(_FLOAT32.pack(back))[0]
    return back == value


def _json_type(value: Any) -> str:
    if type(value) is bool:
        return "True" if value else "False"
    return _JSON_TYPE.get(type(value), "Object")


def _type_error(value: Any, dtype: DType) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"JSON Value: {_dump(value)} Type: {_json_type(value)} is not of expected type: {dtype.name.lower()}"
    )


def _lossy_error(value: Any, target: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"Cannot convert JSON value: {_dump(value)} to {target} without loss of precision.")


def _status_text(error: ServingError) -> str:
    return f"{error.code.name}: {error.message}"


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# -- JSON value -> numpy ------------------------------------------------------------------------


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _b64decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise InvalidArgumentError(f"JSON Value: {_dump(value)} not formatted correctly for base64 data")
    text = "".join(value["b64"].split())  # absl's decoder skips whitespace and needs no padding
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("Unable to base64 decode") from None


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # raw bytes of a non-UTF-8 body come back
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _dense_shape(value: Any) -> list[int]:
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
            return _b64decode(value)
        raise _type_error(value, dtype)
    if dtype in _EXACT_INT:
        if kind is float:
            if dtype is DType.FLOAT and math.isfinite(value) and abs(value) > _FLT_MAX:
                raise _lossy_error(value, "float")
            return value
        if kind is int:
            if abs(value) > _EXACT_INT[dtype]:
                raise _lossy_error(value, dtype.name.lower())
            return value
        raise _type_error(value, dtype)
    if dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        if kind is int and low <= value <= high:
            return value
        raise _type_error(value, dtype)
    if dtype is DType.BOOL:
        if kind is bool:
            return value
        raise _type_error(value, dtype)
    if dtype is DType.STRING:
        if kind is str:
            return _utf8(value)
        raise _type_error(value, dtype)
    raise UnimplementedError(f"Conversion of JSON Value: {_dump(value)} to type: {dtype.name.lower()}")


def _to_array(value: Any, dtype: DType) -> np.ndarray:
    """One JSON value as a tensor of ``dtype``: a fast vectorized path, else TF's exact walk."""
    shape = _dense_shape(value)
    array = _quick_array(value, dtype, shape)
    return array if array is not None else _exact_array(value, dtype, shape)


def _quick_array(value: Any, dtype: DType, shape: list[int]) -> np.ndarray | None:
    """The tensor, or None when some rule is broken (the exact walk then says which)."""
    if math.prod(shape) <= _SMALL:
        try:
            return _exact_array(value, dtype, shape)
        except ServingError:
            return None
    return _fast_array(value, dtype, shape)


def _exact_array(value: Any, dtype: DType, shape: list[int]) -> np.ndarray:
    rank, flat = len(shape), []

    def fill(node: Any, level: int) -> None:
        if type(node) is not list:
            if level != rank:
                raise InvalidArgumentError(
                    f"JSON Value: {_dump(node)} found at incorrect level: {level + 1} in the JSON DOM. "
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
            return np.frompyfunc(_utf8, 1, 1)(np.array(source, dtype=object)).reshape(shape)
        if dtype is DType.BOOL:
            return np.array(source, dtype=np.bool_)
        if dtype in _EXACT_INT:
            wide = np.array(source, dtype=np.float64)
            magnitude = np.abs(wide)
            finite = np.isfinite(wide)
            if dtype is DType.FLOAT and np.any(finite & (magnitude > _FLT_MAX)):
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
# -- predict request ------------------------------------------------------------------------


def predict_inputs(doc: Mapping[str, Any], signature: SignatureSpec) -> tuple[dict[str, np.ndarray], bool]:
    """The input arrays of a predict body and whether it used the row ("instances") format.

    Arrays get the signature's dtypes (strings: object arrays of bytes); shapes are the
    JSON's. Whether the inputs then fit the signature's names and shapes is the data
    plane's check, so a b64 first instance with several inputs yields only one array, as
    in TF.
    """
    if not signature.inputs:
        raise InvalidArgumentError(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise InvalidArgumentError(
                f"JSON Value: {_dump(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if type(instances) is not list:
            raise InvalidArgumentError(f"JSON Value: {_dump(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise InvalidArgumentError(f"JSON Value: {_dump(doc)} No values in 'instances' array")
        return _from_instances(instances, signature), True
    if "inputs" in doc:
        return _from_columns(doc["inputs"], signature), False
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not _is_b64(value)


def _from_columns(value: Any, signature: SignatureSpec) -> dict[str, np.ndarray]:
    specs = signature.inputs
    if not _is_named_object(value):
        if len(specs) > 1:
            raise InvalidArgumentError(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map"
            )
        name, spec = next(iter(specs.items()))
        return {name: _to_array(value, spec.dtype)}
    out = {}
    for name in sorted(specs):
        if name not in value:
            raise InvalidArgumentError(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _to_array(value[name], specs[name].dtype)
    return out


def _from_instances(instances: list[Any], signature: SignatureSpec) -> dict[str, np.ndarray]:
    specs = signature.inputs
    first = instances[0]
    if type(first) is not dict and len(specs) > 1:
        raise InvalidArgumentError(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map"
        )
    if not _is_named_object(first):
        name = min(specs)
        array = _quick_array(instances, specs[name].dtype, [len(instances), *_dense_shape(first)])
        return {name: array} if array is not None else _instances_exact(instances, specs)
    names = specs.keys()
    if all(type(item) is dict and item.keys() == names and not _is_b64(item) for item in instances):
        out = {}
        for name, spec in specs.items():
            column = [item[name] for item in instances]
            array = _quick_array(column, spec.dtype, [len(column), *_dense_shape(column[0])])
            if array is None:
                return _instances_exact(instances, specs)
            out[name] = array
        return out
    return _instances_exact(instances, specs)


def _instances_exact(instances: list[Any], specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """TF's FillTensorMapFromInstancesList, item by item, with its messages."""
    objects = _is_named_object(instances[0])
    rows: dict[str, list[np.ndarray]] = {}

    def add(name: str, item: Any) -> None:
        if name not in specs:
            raise InvalidArgumentError(f"JSON object: does not have named input: {name}")
        array = _to_array(item, specs[name].dtype)
        seen = rows.setdefault(name, [])
        if seen and seen[0].size != array.size:
            raise InvalidArgumentError(f"Expecting tensor size: {seen[0].size} but got: {array.size}")
        if seen and seen[0].shape != array.shape:
            raise InvalidArgumentError(
                f"Expecting shape {_shape_text(seen[0].shape)} but got: {_shape_text(array.shape)}"
            )
        seen.append(array)

    for index, item in enumerate(instances):
        if objects:
            if not _is_named_object(item):
                raise InvalidArgumentError(f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                try:
                    add(key, value)
                except ServingError as exc:
                    raise InvalidArgumentError(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: {_status_text(exc)}"
                    ) from None
            if item.keys() != specs.keys():
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {_dump(item)} keys must be "
                    f"equal to: {','.join(sorted(specs))}"
                )
        else:
            if _is_named_object(item):
                raise InvalidArgumentError(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(min(specs), item)
            except ServingError as exc:
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. Error: {_status_text(exc)}"
                ) from None
    return {name: np.stack(arrays) for name, arrays in rows.items()}


# -- responses ------------------------------------------------------------------------------

_SPECS = {
    np.dtype(np.float32): np.array(["%g", "%g.0", "%.9g", "%.9g.0", "%.0sNaN", "%.0sInfinity", "%.0s-Infinity"]),
    np.dtype(np.float64): np.array(["%g", "%g.0", "%.17g", "%.17g.0", "%.0sNaN", "%.0sInfinity", "%.0s-Infinity"]),
}


def _float_specs(flat: np.ndarray) -> np.ndarray:
    """Per element, the printf spec giving TF's WriteDecimal text (see the module doc)."""
    digits_limit = 1e9 if flat.dtype == np.float32 else 1e17
    with np.errstate(all="ignore"):
        magnitude = np.abs(flat).astype(np.float64)
        exponent = np.floor(np.log10(magnitude))
        shift = 5.0 - exponent  # scale to six integer digits, in exact powers of ten
        power = 10.0 ** np.abs(shift)
        up = shift >= 0
        rounded = np.round(np.where(up, magnitude * power, magnitude / power))
        back = np.where(up, rounded / power, rounded * power).astype(flat.dtype)
        six = (back == np.abs(flat)) | (magnitude == 0)
        whole = flat == np.trunc(flat)
        code = np.where(six, 0, 2) + (whole & (magnitude < np.where(six, 1e6, digits_limit)))
        finite = np.isfinite(flat)
        unsure = finite & (magnitude != 0) & (np.abs(shift) > 22)  # inexact powers: check exactly
    for index in np.flatnonzero(unsure):
        value = float(flat[index])
        same = _reads_back("%g" % value, value, flat.dtype == np.float32)
        code[index] = (0 if same else 2) + (value.is_integer() and abs(value) < (1e6 if same else digits_limit))
    if not finite.all():
        code[np.isnan(flat)] = 4
        code[flat == np.inf] = 5
        code[flat == -np.inf] = 6
    return _SPECS[flat.dtype][code]


def _nest(node: Any) -> str:
    if type(node) is str:
        return node
    if node and type(node[0]) is str:
        return "[" + ",".join(node) + "]"
    return "[" + ",".join(map(_nest, node)) + "]"


def _float_texts(array: np.ndarray, depth: int) -> list[str]:
    """JSON texts of the sub-arrays ``array[i, j, ...]`` indexed ``depth`` levels deep."""
    flat = array.ravel()
    small = flat.size <= _SMALL
    if small:  # the numbers' texts themselves
        atoms = np.empty(flat.size, dtype=object)
        atoms[:] = [_decimal(v, flat.dtype == np.float32) for v in flat.tolist()]
    else:  # printf specs, filled in by one % below
        atoms = _float_specs(flat)
    nodes = atoms.reshape((-1, *array.shape[depth:]) if depth else array.shape).tolist()
    pieces = [_nest(node) for node in nodes] if depth else [_nest(nodes)]
    if small or not pieces:
        return pieces
    return ("\x00".join(pieces) % tuple(flat.tolist())).split("\x00")


def _float_tokens(flat: np.ndarray) -> list[str]:
    return _float_texts(flat, 1) if flat.size else []


def _json_ready(name: str, array: np.ndarray) -> Any:
    """Strings and bytes as JSON-ready nested lists (``_bytes`` outputs as b64 objects)."""
    values = array.ravel().tolist()
    if name.endswith("_bytes"):
        values = [{"b64": base64.b64encode(v if isinstance(v, bytes) else _utf8(v)).decode("ascii")} for v in values]
    else:
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(array.shape).tolist()


def _tensor_texts(name: str, array: np.ndarray, items: bool) -> list[str]:
    """The JSON text of ``array`` (``items``: one text per ``array[i]``)."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize in (4, 8):
        return _float_texts(array.astype(array.dtype.newbyteorder("="), copy=False), 1 if items else 0)
    if kind in "OSU":
        ready = _json_ready(name, array)
        return [orjson.dumps(v).decode() for v in ready] if items else [orjson.dumps(ready).decode()]
    if kind in "biu" and array.dtype.itemsize <= 8 and array.dtype != np.uint16:
        if items or array.ndim == 0:
            ready = array.tolist()
            return [orjson.dumps(v).decode() for v in ready] if items else [orjson.dumps(ready).decode()]
        native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        return [orjson.dumps(native, option=orjson.OPT_SERIALIZE_NUMPY).decode()]
    try:
        type_name = DType.from_numpy(array.dtype).name.lower()
    except ValueError:
        type_name = str(array.dtype)
    raise InvalidArgumentError(f"Failed to write JSON value for tensor type: {type_name}")


def encode_predict_response(
    outputs: Mapping[str, Any], row_format: bool, signature: SignatureSpec | None = None
) -> bytes:
    """``{"predictions": ...}`` (row format) or ``{"outputs": ...}`` (columnar) for ``outputs``.

    One output: its value alone; several: named (per row in the row format, where every
    output needs rank >= 1 and the same batch size). A float array is printed at the float
    width the signature declares for it (a float64 result of a DT_FLOAT output prints as
    float32, as TF's tensor would). Names are emitted in sorted order.
    """
    if not outputs:
        raise InvalidArgumentError("Cannot convert empty tensor map to JSON")
    arrays = {}
    for name in sorted(outputs):
        array = np.asarray(outputs[name])
        spec = signature.outputs.get(name) if signature is not None else None
        if spec is not None and spec.dtype in (DType.FLOAT, DType.DOUBLE) and array.dtype.kind == "f":
            array = array.astype(numpy_dtype(spec.dtype), copy=False)
        arrays[name] = array
    if not row_format:
        if len(arrays) == 1:
            ((name, array),) = arrays.items()
            return ('{"outputs":' + _tensor_texts(name, array, False)[0] + "}").encode()
        body = ",".join(orjson.dumps(n).decode() + ":" + _tensor_texts(n, a, False)[0] for n, a in arrays.items())
        return ('{"outputs":{' + body + "}}").encode()
    batch = -1
    for name, array in arrays.items():
        if array.ndim == 0:
            raise InvalidArgumentError(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgumentError(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        return ('{"predictions":' + _tensor_texts(name, array, False)[0] + "}").encode()
    columns = [(orjson.dumps(n).decode() + ":", _tensor_texts(n, a, True)) for n, a in arrays.items()]
    rows = ["{" + ",".join(key + texts[i] for key, texts in columns) + "}" for i in range(batch)]
    return ('{"predictions":[' + ",".join(rows) + "]}").encode()


def encode_classify_response(classes: Any | None, scores: Any | None) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` from ``[batch, k]`` classes and/or scores.

    A missing classes tensor gives empty labels, a missing scores tensor scores of 0.0
    (the defaults of TF's ``Class`` proto); scores print as float32.
    """
    if classes is None and scores is None:
        raise InvalidArgumentError("Cannot convert empty ClassificationResults to JSON: no classes and no scores")
    labels = None if classes is None else np.asarray(classes)
    values = None if scores is None else np.asarray(scores, dtype=np.float32)
    shape = (labels if labels is not None else values).shape
    for what, array in (("classes", labels), ("scores", values)):
        if array is not None and (array.ndim != 2 or array.shape != shape):
            raise InvalidArgumentError(
                f"{what} must have shape [batch_size, num_classes] like the other output; got {_shape_text(array.shape)}"
            )
    if shape[0] == 0:
        raise InvalidArgumentError("Cannot convert empty ClassificationResults to JSON")
    count = shape[0] * shape[1]
    label_texts = ['""'] * count if labels is None else [orjson.dumps(v).decode() for v in _json_ready("", labels.ravel())]
    score_texts = ["0.0"] * count if values is None else _float_tokens(values.ravel())
    pairs = ["[" + label + "," + score + "]" for label, score in zip(label_texts, score_texts)]
    width = shape[1]
    rows = ["[" + ",".join(pairs[i : i + width]) + "]" for i in range(0, count, width)] if width else ["[]"] * shape[0]
    return ('{"results":[' + ",".join(rows) + "]}").encode()


def encode_regress_response(values: Any) -> bytes:
    """``{"results": [v1, v2, ...]}`` from ``[batch]`` or ``[batch, 1]`` values (as float32)."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidArgumentError(
            f"regression values must have shape [batch_size] or [batch_size, 1]; got {_shape_text(array.shape)}"
        )
    if array.size == 0:
        raise InvalidArgumentError("Cannot convert empty RegressionResults to JSON")
    return ('{"results":[' + ",".join(_float_tokens(array)) + "]}").encode()


def encode_error(message: str) -> bytes:
    """``{"error": message}``."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # lone surrogates from a non-UTF-8 body
        return orjson.dumps({"error": _utf8(message).decode("utf-8", "replace")})


# -- classify / regress request --------------------------------------------------------------


def examples_from_json(doc: Mapping[str, Any]) -> tuple[list[bytes], bytes | None]:
    """Serialized ``tf.Example`` records of ``examples`` and of the optional ``context``.

    With a context, TF Serving feeds each example as ``context + example`` serialized
    back to back (features of the example win on a name clash); that merge is the
    caller's.
    """
    from tensorflow.core.example import example_pb2

    context = None
    if "context" in doc:
        context = _example(doc["context"], example_pb2.Example()).SerializeToString()
    if "examples" not in doc:
        raise InvalidArgumentError(
            f"JSON Value: {_dump(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    items = doc["examples"]
    if type(items) is not list:
        raise InvalidArgumentError(f"JSON Value: {_dump(doc)} Expecting 'examples' value to be an list/array")
    if not items:
        raise InvalidArgumentError(f"JSON Value: {_dump(doc)} 'examples' value is an empty array")
    return [_example(item, example_pb2.Example()).SerializeToString() for item in items], context


def _example(value: Any, example: Any) -> Any:
    if type(value) is not dict:
        raise InvalidArgumentError(f"Example must be JSON object but got JSON {_json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        kind, values = None, []
        for item in content if type(content) is list else (content,):
            item_kind = _feature_kind(name, item)
            if kind is not None and item_kind != kind:
                raise InvalidArgumentError(f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = item_kind
            values.append(_feature_value(name, item))
        feature = features[name]
        if kind is not None:
            getattr(feature, kind + "_list").value.extend(values)
    return example


def _feature_kind(name: str, item: Any) -> str:
    kind = type(item)
    if kind is bool or kind is int:
        return "int64"
    if kind is float:
        return "float"
    if kind is str or _is_b64(item):
        return "bytes"
    raise InvalidArgumentError(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")


def _feature_value(name: str, item: Any) -> Any:
    kind = type(item)
    if kind is int and item > (1 << 63) - 1:
        raise InvalidArgumentError(f"Feature: {name} has uint64 element. Only int64 is supported.")
    if kind is float and math.isfinite(item) and abs(item) > _FLT_MAX:
        raise _lossy_error(item, "float")
    if kind is str:
        return _utf8(item)
    if kind is dict:
        return _b64decode(item)
    return int(item) if kind is bool else item
