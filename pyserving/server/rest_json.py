"""TF Serving's REST JSON bodies <-> numpy arrays and serialized ``tf.Example`` records.

The public API of the REST JSON rules; :mod:`rest_server` is its one caller. Follows
``tensorflow_serving/util/json_tensor.cc``: the same row ("instances") and columnar
("inputs") rules, the same JSON -> dtype strictness (``_json_values``) and the same
messages (``_json_messages``). Check order for predict is the caller's:
:func:`parse_json_body` (400) -> :func:`request_signature_name` (400) -> servable and
signature lookup -> :func:`predict_inputs` (400) -> inference.

Parsing uses orjson; only when orjson refuses a body (NaN/Infinity/Inf tokens, invalid
UTF-8, numbers orjson will not take) does the stdlib parser run, tolerant the way
rapidjson's ``kParseNanAndInfFlag`` is, and its errors are reworded as rapidjson's
(``_json_parse``). Output is compact JSON (TF pretty prints; any JSON reader sees the
same document) with TF's float text (``_json_floats``): ``%g`` when that reads back
exactly, else 9 (float) / 17 (double) significant digits, ``.0`` appended to whole
numbers, and bare ``NaN`` / ``Infinity`` / ``-Infinity``.

Deliberate differences: int8/int16/uint8 values outside their range are refused (TF
wraps them); non-UTF-8 bytes in string outputs become U+FFFD (TF emits invalid JSON);
value dumps inside messages are cut at 256 characters. Everything here is a pure
function, thread-safe; errors are :class:`InvalidArgumentError` except JSON for dtypes
with no JSON form, which is :class:`UnimplementedError` (HTTP 501) as in TF.
"""

from __future__ import annotations

import base64
from typing import Any, Mapping

import numpy as np
import orjson

from pyserving.servable.errors import InvalidArgumentError, ServingError
from pyserving.servable.signature import DType, SignatureSpec
from pyserving.server._json_examples import fill_example
from pyserving.server._json_floats import float_texts, float_tokens
from pyserving.server._json_messages import dump, shape_text, status_text
from pyserving.server._json_parse import tolerant_loads
from pyserving.server._json_values import dense_shape, is_b64, quick_array, to_array, utf8
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

# -- parsing ------------------------------------------------------------------------------


def parse_json_body(body: bytes | str) -> dict[str, Any]:
    """The request's top-level JSON object; 400 with rapidjson's wording otherwise."""
    if not body:
        raise InvalidArgumentError("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = tolerant_loads(body)
    if type(doc) is not dict:
        raise InvalidArgumentError(f"JSON Value: {dump(doc)} Is not object")
    return doc


def request_signature_name(doc: Mapping[str, Any]) -> str | None:
    """The optional ``signature_name`` (None when absent); 400 unless it is a string."""
    if "signature_name" not in doc:
        return None
    name = doc["signature_name"]
    if type(name) is not str:
        raise InvalidArgumentError(
            f"JSON Value: {dump(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


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
                f"JSON Value: {dump(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if type(instances) is not list:
            raise InvalidArgumentError(f"JSON Value: {dump(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise InvalidArgumentError(f"JSON Value: {dump(doc)} No values in 'instances' array")
        return _from_instances(instances, signature), True
    if "inputs" in doc:
        return _from_columns(doc["inputs"], signature), False
    raise InvalidArgumentError("Missing 'inputs' or 'instances' key")


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not is_b64(value)


def _from_columns(value: Any, signature: SignatureSpec) -> dict[str, np.ndarray]:
    specs = signature.inputs
    if not _is_named_object(value):
        if len(specs) > 1:
            raise InvalidArgumentError(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map"
            )
        name, spec = next(iter(specs.items()))
        return {name: to_array(value, spec.dtype)}
    out = {}
    for name in sorted(specs):
        if name not in value:
            raise InvalidArgumentError(f"Missing named input: {name} in 'inputs' object.")
        out[name] = to_array(value[name], specs[name].dtype)
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
        array = quick_array(instances, specs[name].dtype, [len(instances), *dense_shape(first)])
        return {name: array} if array is not None else _instances_exact(instances, specs)
    names = specs.keys()
    if all(type(item) is dict and item.keys() == names and not is_b64(item) for item in instances):
        out = {}
        for name, spec in specs.items():
            column = [item[name] for item in instances]
            array = quick_array(column, spec.dtype, [len(column), *dense_shape(column[0])])
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
        array = to_array(item, specs[name].dtype)
        seen = rows.setdefault(name, [])
        if seen and seen[0].size != array.size:
            raise InvalidArgumentError(f"Expecting tensor size: {seen[0].size} but got: {array.size}")
        if seen and seen[0].shape != array.shape:
            raise InvalidArgumentError(
                f"Expecting shape {shape_text(seen[0].shape)} but got: {shape_text(array.shape)}"
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
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: {status_text(exc)}"
                    ) from None
            if item.keys() != specs.keys():
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. JSON object: {dump(item)} keys must be "
                    f"equal to: {','.join(sorted(specs))}"
                )
        else:
            if _is_named_object(item):
                raise InvalidArgumentError(f"Expecting value/list but got object at item {index} of input list")
            try:
                add(min(specs), item)
            except ServingError as exc:
                raise InvalidArgumentError(
                    f"Failed to process element: {index} of 'instances' list. Error: {status_text(exc)}"
                ) from None
    return {name: np.stack(arrays) for name, arrays in rows.items()}


# -- responses ------------------------------------------------------------------------------


def _json_ready(name: str, array: np.ndarray) -> Any:
    """Strings and bytes as JSON-ready nested lists (``_bytes`` outputs as b64 objects)."""
    values = array.ravel().tolist()
    if name.endswith("_bytes"):
        values = [{"b64": base64.b64encode(v if isinstance(v, bytes) else utf8(v)).decode("ascii")} for v in values]
    else:
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(array.shape).tolist()


def _tensor_texts(name: str, array: np.ndarray, items: bool) -> list[str]:
    """The JSON text of ``array`` (``items``: one text per ``array[i]``)."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize in (4, 8):
        return float_texts(array.astype(array.dtype.newbyteorder("="), copy=False), 1 if items else 0)
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
                f"{what} must have shape [batch_size, num_classes] like the other output; got {shape_text(array.shape)}"
            )
    if shape[0] == 0:
        raise InvalidArgumentError("Cannot convert empty ClassificationResults to JSON")
    count = shape[0] * shape[1]
    label_texts = ['""'] * count if labels is None else [orjson.dumps(v).decode() for v in _json_ready("", labels.ravel())]
    score_texts = ["0.0"] * count if values is None else float_tokens(values.ravel())
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
            f"regression values must have shape [batch_size] or [batch_size, 1]; got {shape_text(array.shape)}"
        )
    if array.size == 0:
        raise InvalidArgumentError("Cannot convert empty RegressionResults to JSON")
    return ('{"results":[' + ",".join(float_tokens(array)) + "]}").encode()


def encode_error(message: str) -> bytes:
    """``{"error": message}``."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:  # lone surrogates from a non-UTF-8 body
        return orjson.dumps({"error": utf8(message).decode("utf-8", "replace")})


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
        context = fill_example(doc["context"], example_pb2.Example()).SerializeToString()
    if "examples" not in doc:
        raise InvalidArgumentError(
            f"JSON Value: {dump(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    items = doc["examples"]
    if type(items) is not list:
        raise InvalidArgumentError(f"JSON Value: {dump(doc)} Expecting 'examples' value to be an list/array")
    if not items:
        raise InvalidArgumentError(f"JSON Value: {dump(doc)} 'examples' value is an empty array")
    return [fill_example(item, example_pb2.Example()).SerializeToString() for item in items], context
