"""The two wire formats of :mod:`pyserving.batch.remote` (private; import ``remote`` instead).

A transport sends one request per call and is the one place where transport failures
become :class:`ServingError`: a gRPC status keeps its code and message; a REST answer maps
its HTTP status back to a code (TF Serving's table, plus 502 -> UNAVAILABLE) with the
``"error"`` message of its body; a REST connection that cannot be made or breaks is
UNAVAILABLE, a socket timeout DEADLINE_EXCEEDED. Retrying is the caller's job.

Both transports are safe to call from many threads at once: gRPC shares one channel;
REST keeps a pool of keep-alive ``http.client`` connections, one per call in flight, so
the pool never holds more connections than the most calls ever in flight. ``close()``
closes the channel (running RPCs end CANCELLED) or the idle connections (running REST
calls finish, then their connection is closed).

Every transport has ``metadata(target) -> (served version or None, {signature key: raw})``,
``signature_spec(key, raw) -> SignatureSpec``, ``predict``, ``classify``, ``regress`` and
``close``. TensorFlow's protos are imported on first use.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
import orjson

from pyserving.servable.errors import (
    CancelledError,
    Code,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    ServingError,
    UnavailableError,
    UnimplementedError,
)
from pyserving.servable.signature import DType, SignatureSpec, TensorSpec
from pyserving.server.tensor_codec import numpy_dtype

__all__ = ["Target", "GrpcTransport", "RestTransport", "open_transport"]


@dataclass(frozen=True, slots=True)
class Target:
    """What every request names: the model, at most one of version / label, and the signature.
    (Field names match the data plane's ``ModelSpec``, so ``api_protos`` builds requests from it.)"""

    name: str
    version: int | None
    version_label: str | None
    signature_name: str


def open_transport(scheme: str, address: str, prefix: str, timeout_s: float) -> GrpcTransport | RestTransport:
    """The transport for a parsed URL (``address`` is ``host:port``)."""
    if scheme in ("grpc", "grpcs"):
        return GrpcTransport(address, scheme == "grpcs", timeout_s)
    return RestTransport(address, scheme == "https", prefix, timeout_s)


def _classes_scores(rows: Sequence[Sequence[tuple[str, float]]], count: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``[n, k]`` labels (bytes) and scores (float32) from per-example (label, score) lists."""
    if len(rows) != count:
        raise InternalError(f"{where} answered {len(rows)} classifications for {count} examples")
    width = len(rows[0]) if rows else 0
    classes = np.empty((count, width), dtype=object)
    scores = np.zeros((count, width), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InternalError(f"{where} answered {len(row)} classes for example {i} but {width} for example 0")
        for j, (label, score) in enumerate(row):
            classes[i, j] = label.encode("utf-8", "surrogateescape") if isinstance(label, str) else bytes(label)
            scores[i, j] = score
    return classes, scores


# -- gRPC ------------------------------------------------------------------------------------


class GrpcTransport:
    """TF Serving's PredictionService through the official stub, on one shared channel."""

    def __init__(self, address: str, secure: bool, timeout_s: float) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if secure:
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._rpc_error = grpc.RpcError
        self._where = f"grpc{'s' if secure else ''}://{address}"
        self._timeout_s = timeout_s

    def _invoke(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout_s)
        except self._rpc_error as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            number = code.value[0] if code is not None else Code.UNKNOWN
            message = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
            raise ServingError.from_code(Code(number), message) from exc
        except ValueError as exc:  # grpc: "Cannot invoke RPC on closed channel!"
            raise CancelledError(f"the channel to {self._where} is closed: {exc}") from exc

    def metadata(self, target: Target) -> tuple[int | None, dict[str, Any]]:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = target.name
        if target.version is not None:
            request.model_spec.version.value = target.version
        elif target.version_label is not None:
            request.model_spec.version_label = target.version_label
        request.metadata_field.append("signature_def")
        response = self._invoke(self._stub.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(defs):
            raise InternalError(f"{self._where} answered GetModelMetadata for {target.name!r} without a SignatureDefMap")
        served = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return served, dict(defs.signature_def)

    def signature_spec(self, key: str, raw: Any) -> SignatureSpec:
        from pyserving.loaders.saved_model_signatures import signature_spec

        spec = signature_spec(key, raw)
        if spec is None:
            raise UnimplementedError(f"signature {key!r} has a tensor whose dtype pyserving cannot carry")
        return spec

    def predict(self, target: Target, inputs: Mapping[str, np.ndarray], signature: SignatureSpec) -> dict[str, np.ndarray]:
        from pyserving.server.api_protos import predict_request
        from pyserving.server.tensor_codec import to_numpy

        response = self._invoke(self._stub.Predict, predict_request(target, inputs))
        return {name: to_numpy(tensor) for name, tensor in response.outputs.items()}

    def classify(self, target: Target, examples: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        from pyserving.server.api_protos import classification_request

        response = self._invoke(self._stub.Classify, classification_request(target, examples))
        rows = [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]
        return _classes_scores(rows, len(examples), self._where)

    def regress(self, target: Target, examples: list[bytes]) -> np.ndarray:
        from pyserving.server.api_protos import regression_request

        response = self._invoke(self._stub.Regress, regression_request(target, examples))
        values = np.array([r.value for r in response.result.regressions], dtype=np.float32)
        if len(values) != len(examples):
            raise InternalError(f"{self._where} answered {len(values)} regressions for {len(examples)} examples")
        return values

    def close(self) -> None:
        self._channel.close()


# -- REST -----------------------------------------------------------------------------------

#: HTTP status -> code (the reverse of TF Serving's table; 400 is INVALID_ARGUMENT).
_HTTP_CODES = {
    400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND,
    409: Code.ABORTED, 413: Code.INVALID_ARGUMENT, 429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED,
    501: Code.UNIMPLEMENTED, 502: Code.UNAVAILABLE, 503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED,
}
#: What a keep-alive connection the server closed while idle raises on its next use.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected)
_ORJSON_NUMERIC = frozenset("bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split())


class RestTransport:
    """TF Serving's REST API with columnar ("inputs") predict bodies, over pooled connections."""

    def __init__(self, address: str, secure: bool, prefix: str, timeout_s: float) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._connection_class = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        self._where = f"http{'s' if secure else ''}://{address}{prefix}"
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # guards _idle and _closed
        self._idle: list[http.client.HTTPConnection] = []
        self._closed = False

    def _path(self, target: Target, suffix: str) -> str:
        path = f"{self._prefix}/v1/models/{quote(target.name, safe='')}"
        if target.version is not None:
            path += f"/versions/{target.version}"
        elif target.version_label is not None:
            path += f"/labels/{quote(target.version_label, safe='')}"
        return path + suffix

    def _exchange(self, method: str, path: str, body: bytes | None) -> Any:
        """The parsed JSON of a 200 answer; ServingError otherwise."""
        with self._lock:
            if self._closed:
                raise CancelledError(f"the connections to {self._where} are closed")
            connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        if connection is None:
            connection = self._connection_class(self._host, self._port, timeout=self._timeout_s)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        while True:
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except BaseException as exc:
                connection.close()
                if reused and isinstance(exc, _STALE):  # closed by the server while idle: once more
                    reused = False
                    continue
                if isinstance(exc, TimeoutError):
                    raise DeadlineExceededError(f"{self._where} did not answer {method} {path} within {self._timeout_s} s") from exc
                if isinstance(exc, (OSError, http.client.HTTPException)):
                    raise UnavailableError(f"cannot reach {self._where}: {type(exc).__name__}: {exc}") from exc
                raise
        self._check_in(connection, response.will_close)
        if response.status != 200:
            raise ServingError.from_code(self._code(response.status), self._message(response, data))
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            try:  # TF Serving and pyserving print NaN / Infinity as bare tokens
                return json.loads(data)
            except ValueError:
                raise InternalError(f"{self._where} answered {method} {path} with a body that is not JSON: {data[:200]!r}") from None

    def _check_in(self, connection: http.client.HTTPConnection, will_close: bool) -> None:
        with self._lock:
            if not will_close and not self._closed:
                self._idle.append(connection)
                return
        connection.close()

    @staticmethod
    def _code(status: int) -> Code:
        return _HTTP_CODES.get(status, Code.INTERNAL if status >= 500 else Code.INVALID_ARGUMENT)

    def _message(self, response: http.client.HTTPResponse, data: bytes) -> str:
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
        text = data[:300].decode("utf-8", "replace").strip()
        return f"{self._where} answered HTTP {response.status} {response.reason}" + (f": {text}" if text else "")

    def metadata(self, target: Target) -> tuple[int | None, dict[str, Any]]:
        doc = self._exchange("GET", self._path(target, "/metadata"), None)
        try:
            signatures = doc["metadata"]["signature_def"]["signature_def"]
            version = (doc.get("model_spec") or {}).get("version")
            return (int(version) if version not in (None, "") else None), dict(signatures)
        except (KeyError, TypeError, ValueError) as exc:
            raise InternalError(f"{self._where} answered metadata for {target.name!r} without a signature_def map ({exc!r})") from exc

    def signature_spec(self, key: str, raw: Any) -> SignatureSpec:
        try:
            inputs = {name: _tensor_spec(info) for name, info in (raw.get("inputs") or {}).items()}
            outputs = {name: _tensor_spec(info) for name, info in (raw.get("outputs") or {}).items()}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UnimplementedError(f"signature {key!r} from {self._where} cannot be used: {exc}") from exc
        return SignatureSpec(inputs=inputs, outputs=outputs, method_name=raw.get("method_name", ""))

    def predict(self, target: Target, inputs: Mapping[str, np.ndarray], signature: SignatureSpec) -> dict[str, np.ndarray]:
        answer = self._exchange("POST", self._path(target, ":predict"), _predict_body(target.signature_name, inputs))
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise InternalError(f"{self._where} answered predict without 'outputs'")
        outputs = answer["outputs"]
        names = list(signature.outputs)
        if not (isinstance(outputs, dict) and not _is_b64(outputs)):
            if len(names) != 1:
                raise InternalError(f"{self._where} answered one unnamed output; the signature has {names}")
            outputs = {names[0]: outputs}
        return {name: _from_json(value, signature.outputs.get(name)) for name, value in outputs.items()}

    def classify(self, target: Target, examples: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        results = self._examples_call(target, ":classify", examples)
        return _classes_scores(results, len(examples), self._where)

    def regress(self, target: Target, examples: list[bytes]) -> np.ndarray:
        values = np.asarray(self._examples_call(target, ":regress", examples), dtype=np.float32)
        if values.shape != (len(examples),):
            raise InternalError(f"{self._where} answered regressions of shape {values.shape} for {len(examples)} examples")
        return values

    def _examples_call(self, target: Target, suffix: str, examples: list[bytes]) -> Any:
        from tensorflow.core.example import example_pb2

        items = [_example_json(index, record, example_pb2.Example) for index, record in enumerate(examples)]
        doc = {"signature_name": target.signature_name, "examples": [item for item, _ in items]}
        body = orjson.dumps(doc) if all(finite for _, finite in items) else _dumps_with_nan(doc)
        answer = self._exchange("POST", self._path(target, suffix), body)
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            raise InternalError(f"{self._where} answered {suffix[1:]} without a 'results' list")
        return answer["results"]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _tensor_spec(info: Mapping[str, Any]) -> TensorSpec:
    """A TensorInfo in TF Serving's JSON (``json_format``) -> TensorSpec."""
    dtype = info.get("dtype", "DT_INVALID")
    member = DType.__members__.get(dtype[3:]) if isinstance(dtype, str) and dtype.startswith("DT_") else None
    if member is None:
        raise ValueError(f"tensor {info.get('name', '?')} has dtype {dtype}, which pyserving cannot carry")
    shape_doc = info.get("tensor_shape") or {}
    shape = None
    if not shape_doc.get("unknown_rank", False):
        sizes = (int(d.get("size", -1)) for d in shape_doc.get("dim", []))
        shape = tuple(s if s >= 0 else None for s in sizes)
    return TensorSpec(dtype=member, shape=shape, tensor_name=info.get("name", ""))


def _predict_body(signature_name: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """The columnar predict body: orjson writes finite numeric arrays directly; a float tensor
    holding NaN / Infinity sends the whole body through the stdlib (orjson would write null)."""
    arrays = {name: np.asarray(array) for name, array in inputs.items()}
    finite = all(a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in arrays.values())
    encoded = {name: _json_tensor(name, array, as_lists=not finite) for name, array in arrays.items()}
    doc = {"signature_name": signature_name, "inputs": encoded}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY) if finite else _dumps_with_nan(doc)


def _dumps_with_nan(doc: Mapping[str, Any]) -> bytes:
    """JSON with bare NaN / Infinity / -Infinity tokens, which TF Serving and pyserving read."""
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _json_tensor(name: str, array: np.ndarray, as_lists: bool) -> Any:
    kind = array.dtype.kind
    if kind in "OSU":
        flat = [{"b64": base64.b64encode(v.encode("utf-8") if isinstance(v, str) else bytes(v)).decode("ascii")}
                for v in array.ravel().tolist()]
        nested = np.empty(len(flat), dtype=object)
        nested[:] = flat
        return nested.reshape(array.shape).tolist()
    if kind not in "biuf":
        raise InvalidArgumentError(
            f"input {name!r} has dtype {array.dtype}, which has no JSON form in TF Serving's REST API; use grpc://"
        )
    native = array.dtype.newbyteorder("=")
    if not as_lists and native.name in _ORJSON_NUMERIC:
        return np.ascontiguousarray(array, dtype=native)
    return array.tolist()  # Python floats hold float32 / bfloat16 values exactly


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _strings(value: Any) -> Any:
    if isinstance(value, list):
        return [_strings(item) for item in value]
    if _is_b64(value):
        return base64.b64decode(value["b64"])
    return str(value).encode("utf-8", "surrogateescape")


def _from_json(value: Any, spec: TensorSpec | None) -> np.ndarray:
    if spec is not None and spec.dtype is DType.STRING:
        return np.array(_strings(value), dtype=object)
    return np.asarray(value, dtype=numpy_dtype(spec.dtype) if spec is not None else None)


def _example_json(index: int, record: bytes, example_class: Any) -> tuple[dict[str, Any], bool]:
    """One serialized ``tf.Example`` as the JSON object TF Serving parses back into it, and
    whether its floats are all finite. (A feature whose list is set but empty comes back
    with no list set: JSON cannot tell the kind of an empty list.)"""
    try:
        example = example_class.FromString(record)
    except Exception as exc:  # protobuf's DecodeError
        raise InvalidArgumentError(f"example {index} is not a serialized tf.Example: {exc}") from exc
    out: dict[str, Any] = {}
    finite = True
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = [{"b64": base64.b64encode(v).decode("ascii")} for v in feature.bytes_list.value]
        elif kind == "float_list":
            values = [float(v) for v in feature.float_list.value]
            finite = finite and all(math.isfinite(v) for v in values)
            out[key] = values
        elif kind == "int64_list":
            out[key] = [int(v) for v in feature.int64_list.value]
        else:
            out[key] = []
    return out, finite
