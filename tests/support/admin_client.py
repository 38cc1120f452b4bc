"""Helpers for end-to-end tests of the admin API (``--enable_admin_api``) with the real binary.

* :func:`write_offset_model` writes a ``python``-platform model whose answer to ``x = 1``
  is ``offset + version``; with offsets that are multiples of 100, every answer says which
  model and which version produced it (:class:`Answers` decodes it).
* :class:`AdminClient` sends admin requests (``/v1/admin/...``) with the bearer token.
* :class:`NamedTraffic` runs client threads that call *targets* by name — a model, a
  model's label, or a route, optionally with headers — over gRPC (the official
  ``tensorflow-serving-api`` stub) and REST, and records every answer (which model and
  version answered, when the request started and ended) and every failure; nothing is
  retried. An answer whose value, response headers (REST ``x-pyserving-model`` /
  ``x-pyserving-model-version``) or ``model_spec`` (gRPC) disagree is a failure.

Threading: the traffic threads record under one Condition, notified on every answer, so a
test waits for "an answer started after t" without sleeping. Every thread ends on
:meth:`NamedTraffic.stop`, or after ``max_duration_s``. Times are ``time.monotonic()``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import requests

from tests.support.traffic import GRPC, REST, Failure, RestError, describe_error

__all__ = ["AdminClient", "Answer", "Answers", "NamedTraffic", "Target", "rest_predict", "model_states",
           "write_offset_model", "REQUEST_TIMEOUT_S"]

#: Deadline of one request; an admin change that loads a model answers well within it.
REQUEST_TIMEOUT_S = 60.0

#: A python model: y = x * (OFFSET + version).
_OFFSET_MODEL = '''
import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec

OFFSET = {offset}


class OffsetScaler:
    def __init__(self, factor):
        self.factor = factor
        self.signatures = {{
            "serving_default": SignatureSpec(
                {{"x": TensorSpec(DType.FLOAT, (None,))}}, {{"y": TensorSpec(DType.FLOAT, (None,))}}
            )
        }}

    def run(self, signature_name, inputs, output_filter=()):
        return {{"y": (inputs["x"] * self.factor).astype(np.float32)}}


def create_servable(version_dir):
    return OffsetScaler(OFFSET + float(version_dir.name))
'''


def write_offset_model(base: Path, offset: int, versions: Sequence[int]) -> Path:
    """Write ``base/<v>/model.py`` for each version (answer to x=1: offset + v); returns ``base``."""
    for version in versions:
        folder = base / str(version)
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(_OFFSET_MODEL.format(offset=offset))
    return base


class Answers:
    """Decodes an answer ``offset + version`` into (model, version); offsets: multiples of 100."""

    def __init__(self, offsets: Mapping[str, int]) -> None:
        self._models = {offset: name for name, offset in offsets.items()}
        self.offsets = dict(offsets)

    def decode(self, y: float) -> tuple[str, int]:
        value = int(round(y))
        model = self._models.get(value // 100 * 100)
        if model is None or value != y:
            raise AssertionError(f"answer {y} comes from no known model (offsets {self.offsets})")
        return model, value % 100

    def value(self, model: str, version: int) -> float:
        return float(self.offsets[model] + version)


# -- REST shortcuts ---------------------------------------------------------------------------------


def _url(rest_port: int, path: str) -> str:
    return f"http://127.0.0.1:{rest_port}{path}"


def rest_predict(rest_port: int, name: str, x: float = 1.0, headers: Mapping[str, str] | None = None,
                 label: str = "") -> requests.Response:
    """POST ``/v1/models/{name}[/labels/{label}]:predict`` with ``{"instances": [x]}``."""
    path = f"/v1/models/{name}" + (f"/labels/{label}" if label else "") + ":predict"
    return requests.post(_url(rest_port, path), json={"instances": [x]}, headers=dict(headers or {}),
                         timeout=REQUEST_TIMEOUT_S)


def model_states(rest_port: int, name: str) -> dict[str, str]:
    """version -> state from ``GET /v1/models/{name}``; {} for 404."""
    response = requests.get(_url(rest_port, f"/v1/models/{name}"), timeout=REQUEST_TIMEOUT_S)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


class AdminClient:
    """``/v1/admin/{path}`` requests; ``token`` None sends no Authorization header."""

    def __init__(self, rest_port: int, token: str | None = None) -> None:
        self.rest_port = rest_port
        self.token = token

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: Mapping[str, str] | None = None) -> requests.Response:
        """One request; ``body`` is sent as JSON, ``raw`` as given; ``headers`` replace the
        Authorization header when they name one."""
        sent = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        return requests.request(method, _url(self.rest_port, f"/v1/admin/{path}"), data=data, headers=sent,
                                timeout=REQUEST_TIMEOUT_S)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a request that must succeed (AssertionError with the answer otherwise)."""
        response = self.call(method, path, body)
        assert response.status_code == 200, f"{method} /v1/admin/{path}: {response.status_code} {response.text}"
        return response.json()

    def models(self) -> dict[str, Any]:
        return {m["name"]: m for m in self.ok("GET", "models")["models"]}

    def routes(self) -> dict[str, Any]:
        return {r["name"]: r for r in self.ok("GET", "routes")["routes"]}

    def config(self) -> dict[str, Any]:
        """Everything the admin API shows: {"models": {...}, "routes": {...}}."""
        return {"models": self.models(), "routes": self.routes()}


# -- traffic by name --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a client calls: model or route ``name``, optionally by ``label``, with ``headers``."""

    name: str
    label: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return self.name + (f"@{self.label}" if self.label else "") + "".join(f"[{k}={v}]" for k, v in self.headers)


@dataclass(frozen=True, slots=True)
class Answer:
    client: int
    transport: str
    target: str  # Target.key
    start_s: float
    end_s: float
    model: str
    version: int


class _Caller:
    """One client's connection; ``__call__`` returns (model, version) or raises."""

    def __init__(self, transport: str, target: Target, grpc_port: int, rest_port: int, answers: Answers) -> None:
        self.transport, self._target, self._answers = transport, target, answers
        self._rest_port = rest_port
        self._path = (f"/v1/models/{target.name}" + (f"/labels/{target.label}" if target.label else "") + ":predict")
        self._conn: http.client.HTTPConnection | None = None
        self._channel: Any = None
        if transport == GRPC:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._request = predict_pb2.PredictRequest()
            self._request.model_spec.name = target.name
            if target.label:
                self._request.model_spec.version_label = target.label
            tensor = self._request.inputs["x"]
            tensor.dtype = 1  # DT_FLOAT
            tensor.tensor_shape.dim.add().size = 1
            tensor.float_val.append(1.0)

    def __call__(self) -> tuple[str, int]:
        if self.transport == GRPC:
            response = self._stub.Predict(self._request, metadata=self._target.headers or None,
                                          timeout=REQUEST_TIMEOUT_S)
            out = response.outputs["y"]
            model, version = self._answers.decode(_first_float(out))
            named = (response.model_spec.name, response.model_spec.version.value)
        else:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._rest_port, timeout=REQUEST_TIMEOUT_S)
            headers = {"Content-Type": "application/json", **dict(self._target.headers)}
            self._conn.request("POST", self._path, b'{"instances": [1.0]}', headers)
            response = self._conn.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RestError(response.status, payload.decode("utf-8", "replace"))
            model, version = self._answers.decode(json.loads(payload)["predictions"][0])
            named = (response.getheader("x-pyserving-model", ""), int(response.getheader("x-pyserving-model-version",
                                                                                           "-1")))
        if named != (model, version):
            raise AssertionError(f"the answer comes from {model} version {version}, the response names {named}")
        return model, version

    def reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.reset()
        if self._channel is not None:
            self._channel.close()


def _first_float(tensor: Any) -> float:
    if tensor.float_val:
        return float(tensor.float_val[0])
    import struct

    return struct.unpack("<f", tensor.tensor_content[:4])[0]


class NamedTraffic:
    """One gRPC and one REST client thread per target, calling it until stopped.

    ``pause_s`` is each client's think time between requests (keeps a 2-core machine
    responsive; not synchronisation).
    """

    def __init__(self, grpc_port: int, rest_port: int, targets: Sequence[Target], answers: Answers, *,
                 pause_s: float = 0.002, max_duration_s: float = 150.0) -> None:
        self._ports = (grpc_port, rest_port)
        self._targets = list(targets)
        self._answers = answers
        self._pause_s, self._max_duration_s = pause_s, max_duration_s
        self._stop = threading.Event()
        self._lock = threading.Condition()  # guards _samples and _failures; notified on each record
        self._samples: list[Answer] = []
        self._failures: list[Failure] = []
        self._threads: list[threading.Thread] = []
        self.clients: list[tuple[int, str, str]] = []  # (client, transport, target key)

    def start(self) -> NamedTraffic:
        started = time.monotonic()
        index = 0
        for target in self._targets:
            for transport in (GRPC, REST):
                caller = _Caller(transport, target, *self._ports, self._answers)
                self.clients.append((index, transport, target.key))
                thread = threading.Thread(target=self._run, args=(index, target.key, caller, started), daemon=True,
                                          name=f"admin-traffic-{index}-{transport}-{target.key}")
                self._threads.append(thread)
                thread.start()
                index += 1
        return self

    def _run(self, index: int, key: str, caller: _Caller, started: float) -> None:
        try:
            while not self._stop.is_set() and time.monotonic() < started + self._max_duration_s:
                start = time.monotonic()
                try:
                    model, version = caller()
                except Exception as exc:  # noqa: BLE001 - every failure is recorded, none raised
                    caller.reset()
                    with self._lock:
                        self._failures.append(Failure(index, caller.transport, time.monotonic(),
                                                      f"{key}: {describe_error(exc)}"))
                        self._lock.notify_all()
                else:
                    with self._lock:
                        self._samples.append(Answer(index, caller.transport, key, start, time.monotonic(),
                                                    model, version))
                        self._lock.notify_all()
                self._stop.wait(self._pause_s)
        finally:
            caller.close()

    def samples(self, target: Target | None = None) -> list[Answer]:
        with self._lock:
            return [s for s in self._samples if target is None or s.target == target.key]

    def failures(self) -> list[Failure]:
        with self._lock:
            return list(self._failures)

    def wait_until(self, condition: Callable[[list[Answer]], bool], what: str, timeout_s: float = 30.0) -> None:
        """Wait until ``condition(all answers so far)`` holds; AssertionError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not condition(self._samples):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                                         f"{len(self._samples)} answers, failures: {self._failures[:5]}")
                self._lock.wait(remaining)

    def wait_answered_after(self, after_s: float, targets: Sequence[Target], count: int = 1,
                            timeout_s: float = 30.0) -> None:
        """Wait until every client of ``targets`` was answered ``count`` times for requests it
        sent after ``after_s``."""
        keys = {t.key for t in targets}
        wanted = [c for c, _, key in self.clients if key in keys]

        def done(samples: list[Answer]) -> bool:
            answered: dict[int, int] = {}
            for sample in samples:
                if sample.start_s > after_s:
                    answered[sample.client] = answered.get(sample.client, 0) + 1
            return all(answered.get(client, 0) >= count for client in wanted)

        self.wait_until(done, f"{count} answers to every client of {sorted(keys)} after t={after_s:.3f}", timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise AssertionError(f"traffic threads still running {timeout_s} s after stop: {alive}")

    def assert_no_failures(self) -> None:
        failures = self.failures()
        assert not failures, f"{len(failures)} failed requests:\n" + "\n".join(str(f) for f in failures[:20])
        answered = {(s.client, s.transport) for s in self.samples()}
        silent = [c for c in self.clients if (c[0], c[1]) not in answered]
        assert not silent, f"clients never answered: {silent}"

    def __enter__(self) -> NamedTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
