"""Models, config files and small clients for the end-to-end routing tests.

Models (``python`` platform, they load in milliseconds): ``rec_a``, ``rec_b`` and ``rec_c``
answer ``y = factor * x`` where the factor is the version number, and the versions are
1, 2 and 3, so both the value and the ``x-pyserving-model-version`` header tell which
model answered. ``shadow_fail`` (version 1) raises on every call. Each model also
implements ``classify`` / ``regress`` (scores and values: the factor).

Config files are written atomically (temporary file in the same folder + ``os.replace``),
as the programs that write routing files in production are told to: a poll never reads
half a file.

Clients: :class:`Rest` is one keep-alive ``http.client`` connection (the 2,000-call loops
must not pay a TCP handshake per call); :func:`grpc_predict_request` builds a
``PredictRequest`` without importing TensorFlow.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "FACTORS",
    "VERSIONS",
    "write_models",
    "write_model_config",
    "write_atomically",
    "route_text",
    "Rest",
    "RestAnswer",
    "grpc_predict_request",
]

#: model name -> the version folder it is served from (= its factor)
VERSIONS: dict[str, int] = {"rec_a": 1, "rec_b": 2, "rec_c": 3, "shadow_fail": 1}
#: model name -> y / x of its answers
FACTORS: dict[str, float] = {"rec_a": 1.0, "rec_b": 2.0, "rec_c": 3.0}

_SCALER = '''
import numpy as np

from pyserving.servable.signature import (
    CLASSIFY_METHOD, REGRESS_METHOD, DType, SignatureSpec, TensorSpec,
)

_EXAMPLES = {"inputs": TensorSpec(DType.STRING, (None,))}


class Scaler:
    """y = factor * x (float32 vectors); classify / regress answer the factor per example."""

    def __init__(self, factor):
        self.factor = factor
        self.signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, (None,), "x:0")}, {"y": TensorSpec(DType.FLOAT, (None,), "y:0")}
            ),
            "classify_x": SignatureSpec(
                _EXAMPLES,
                {"classes": TensorSpec(DType.STRING, (None, 1)), "scores": TensorSpec(DType.FLOAT, (None, 1))},
                CLASSIFY_METHOD,
            ),
            "regress_x": SignatureSpec(_EXAMPLES, {"outputs": TensorSpec(DType.FLOAT, (None,))}, REGRESS_METHOD),
        }

    def run(self, signature_name, inputs, output_filter=()):
        FAIL
        return {"y": (inputs["x"] * self.factor).astype(np.float32)}

    def classify(self, signature_name, examples):
        FAIL
        return {
            "classes": np.array([[b"factor"]] * len(examples), dtype=object),
            "scores": np.full((len(examples), 1), self.factor, np.float32),
        }

    def regress(self, signature_name, examples):
        FAIL
        return np.full((len(examples),), self.factor, np.float32)


def create_servable(version_dir):
    return Scaler(float(version_dir.name))
'''

_RAISE = 'raise RuntimeError("shadow_fail always fails")'


def write_models(root: Path) -> dict[str, Path]:
    """Write every model of :data:`VERSIONS` under ``root``; returns name -> base path."""
    bases: dict[str, Path] = {}
    for name, version in VERSIONS.items():
        version_dir = root / name / str(version)
        version_dir.mkdir(parents=True)
        code = _SCALER.replace("FAIL", _RAISE if name == "shadow_fail" else "pass")
        (version_dir / "model.py").write_text(code)
        bases[name] = root / name
    return bases


def write_model_config(path: Path, bases: Mapping[str, Path]) -> None:
    """A ModelServerConfig serving every model of ``bases`` (python platform); ``rec_b``
    has the label ``canary`` on its version."""
    entries = []
    for name, base in bases.items():
        labels = f"version_labels {{ key: 'canary' value: {VERSIONS[name]} }} " if name == "rec_b" else ""
        entries.append(f"  config {{ name: '{name}' base_path: '{base}' model_platform: 'python' {labels}}}\n")
    write_atomically(path, "model_config_list {\n" + "".join(entries) + "}\n")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: a reader sees the old file or the new one, never a mix."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def route_text(
    name: str,
    arms: Mapping[str, tuple[str, float]],
    *,
    segment_key: str = "",
    rules: tuple[tuple[str, str, str], ...] = (),
    shadow: str = "",
    arm_extra: Mapping[str, str] | None = None,
) -> str:
    """One ``routes { ... }`` block: ``arms`` maps arm name -> (model, weight); ``rules`` are
    (header, equals, arm); ``arm_extra`` adds text (``version_label: "canary"``) to an arm."""
    lines = [f'routes {{\n  name: "{name}"\n']
    if segment_key:
        lines.append(f'  segment_key: "{segment_key}"\n')
    for arm, (model, weight) in arms.items():
        extra = (arm_extra or {}).get(arm, "")
        lines.append(f'  arms {{ name: "{arm}" model_name: "{model}" weight: {weight:g} {extra}}}\n')
    for header, equals, arm in rules:
        lines.append(f'  rules {{ header: "{header}" equals: "{equals}" arm: "{arm}" }}\n')
    if shadow:
        lines.append(f'  shadow {{ model_name: "{shadow}" percent: 100 }}\n')
    lines.append("}\n")
    return "".join(lines)


@dataclass(frozen=True)
class RestAnswer:
    status: int
    body: Any  # parsed JSON
    model: str | None  # x-pyserving-model
    version: str | None  # x-pyserving-model-version


class Rest:
    """One keep-alive HTTP/1.1 connection to the REST port (not thread-safe; one per thread)."""

    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def request(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> RestAnswer:
        payload = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if payload is not None:
            sent["Content-Type"] = "application/json"
        self._connection.request(method, path, body=payload, headers=sent)
        response = self._connection.getresponse()
        data = response.read()
        return RestAnswer(
            response.status,
            json.loads(data) if data else None,
            response.getheader("x-pyserving-model"),
            response.getheader("x-pyserving-model-version"),
        )

    def predict(self, name: str, x: float = 1.0, headers: Mapping[str, str] | None = None) -> RestAnswer:
        return self.request("POST", f"/v1/models/{name}:predict", {"instances": [{"x": x}]}, headers)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> RestAnswer:
        return self.request("GET", path, None, headers)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "Rest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grpc_predict_request(name: str, x: float = 1.0, version: int | None = None) -> Any:
    """A ``PredictRequest`` for ``name`` with input ``x`` = [x] (float32)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
        float_val=[x],
    )
    request.inputs["x"].CopyFrom(tensor)
    return request
