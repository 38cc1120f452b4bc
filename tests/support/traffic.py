"""Client traffic against a running model server, for end-to-end tests and benchmarks.

:class:`TrafficClients` runs N client threads that send predict requests naming no
version (``Latest``) the whole time: even-numbered clients over gRPC (the official
``tensorflow-serving-api`` stub), odd-numbered ones over REST (a keep-alive
``http.client`` connection). Every answer is turned into the version that served it by
``version_of(y)``: the test models answer their own version number (``half_plus_two``
written with ``a=0, b=version``, or a python model ``y = version * x`` fed ``x = 1``), so
REST, which does not say the version, is checked as well as gRPC (whose
``model_spec.version`` must agree with the answer). Every failure is recorded with its
message; nothing is retried. (:mod:`tests.support.version_probe` asks for one *specific*
version instead.)

Bounded: every thread stops by itself on :meth:`TrafficClients.stop`, after
``max_duration_s`` or after ``max_requests``; ``stop`` joins them with a timeout and
raises ``AssertionError`` naming a thread that did not end. Threads record under one lock
per object; readers get copies.

Times are ``time.monotonic()`` readings (one clock for every process on Linux).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "GRPC",
    "REST",
    "Failure",
    "Sample",
    "TrafficReport",
    "TrafficClients",
    "Caller",
    "RestError",
    "describe_error",
    "is_not_found",
    "rest_status",
]

GRPC = "grpc"
REST = "rest"

#: Deadline of one request, seconds. A swap must never make a request wait this long.
REQUEST_TIMEOUT_S = 30.0


def default_version_of(y: float) -> int:
    """The version a test model's answer stands for (they answer their version number)."""
    return int(round(y))


@dataclass(frozen=True, slots=True)
class Failure:
    client: int
    transport: str
    at_s: float
    message: str

    def __str__(self) -> str:
        return f"client {self.client} ({self.transport}) at t={self.at_s:.3f}: {self.message}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One answered request: when it started and ended, and which version answered."""

    client: int
    transport: str
    start_s: float
    end_s: float
    version: int


@dataclass(frozen=True)
class TrafficReport:
    """Everything the clients saw; ``samples`` are in completion order per client."""

    samples: tuple[Sample, ...]
    failures: tuple[Failure, ...]
    regressions: tuple[str, ...]  # a client saw an older version after a newer one
    duration_s: float

    @property
    def requests(self) -> int:
        return len(self.samples) + len(self.failures)

    def versions(self) -> dict[int, int]:
        """version -> answers it gave."""
        counts: dict[int, int] = {}
        for sample in self.samples:
            counts[sample.version] = counts.get(sample.version, 0) + 1
        return counts

    def by_transport(self) -> dict[str, int]:
        counts = {GRPC: 0, REST: 0}
        for sample in self.samples:
            counts[sample.transport] += 1
        return counts

    def first_seen(self, version: int) -> float | None:
        """When the first answer from ``version`` arrived."""
        return min((s.end_s for s in self.samples if s.version == version), default=None)

    def stale_after(self, version: int, after_s: float) -> list[Sample]:
        """Answers from a version older than ``version`` to requests sent after ``after_s``."""
        return [s for s in self.samples if s.start_s > after_s and s.version < version]

    def describe_failures(self, limit: int = 20) -> str:
        lines = [str(f) for f in self.failures[:limit]] + list(self.regressions[:limit])
        more = len(self.failures) + len(self.regressions) - len(lines)
        return "\n".join(lines + ([f"... and {more} more"] if more > 0 else []))


class Caller:
    """One client's connection and its predict request (``version`` None = Latest)."""

    def __init__(self, transport: str, model: str, grpc_port: int, rest_port: int, x: float,
                 version: int | None = None, host: str = "127.0.0.1") -> None:
        self.transport = transport
        self._host, self._rest_port = host, rest_port
        self._path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + ":predict"
        self._body = json.dumps({"instances": [x]}).encode()
        self._conn: http.client.HTTPConnection | None = None
        self._channel: Any = None
        if transport == GRPC:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(f"{host}:{grpc_port}")
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
            self._request = predict_pb2.PredictRequest()
            self._request.model_spec.name = model
            if version is not None:
                self._request.model_spec.version.value = version
            tensor = self._request.inputs["x"]
            tensor.dtype = 1  # DT_FLOAT
            tensor.tensor_shape.dim.add().size = 1
            tensor.float_val.append(x)

    def __call__(self) -> tuple[float, int | None]:
        """(answer y, version the response names or None); raises on any failure."""
        if self.transport == GRPC:
            response = self._stub.Predict(self._request, timeout=REQUEST_TIMEOUT_S)
            out = response.outputs["y"]
            values = list(out.float_val) or _unpack_floats(out.tensor_content)
            return values[0], response.model_spec.version.value
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._rest_port, timeout=REQUEST_TIMEOUT_S)
        self._conn.request("POST", self._path, self._body, {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RestError(response.status, payload.decode("utf-8", "replace"))
        return json.loads(payload)["predictions"][0], None

    def reset(self) -> None:
        """Drop the REST connection after a failure (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self.reset()
        if self._channel is not None:
            self._channel.close()


class RestError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _unpack_floats(content: bytes) -> list[float]:
    import struct

    return list(struct.unpack(f"<{len(content) // 4}f", content))


def describe_error(exc: BaseException) -> str:
    """A failure's message: the gRPC code and details, the HTTP status and body, or the exception."""
    code = getattr(exc, "code", None)
    if callable(code):
        try:
            return f"gRPC {code().name}: {exc.details()}"  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - not a completed RPC error
            pass
    return f"{type(exc).__name__}: {exc}"


def is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, RestError):
        return exc.status == 404
    code = getattr(exc, "code", None)
    return callable(code) and getattr(code(), "name", "") == "NOT_FOUND"


class TrafficClients:
    """``clients`` threads sending Latest(model) predicts until stopped (see module docs).

    ``pause_s`` is a think time between one client's requests (0 = back to back).
    """

    def __init__(self, model: str, grpc_port: int, rest_port: int, *, clients: int = 8, x: float = 1.0,
                 version_of: Callable[[float], int] = default_version_of, pause_s: float = 0.0,
                 max_duration_s: float = 120.0, max_requests: int = 1_000_000) -> None:
        if clients < 1:
            raise ValueError(f"clients must be >= 1, got {clients}")
        self.model = model
        self._ports = (grpc_port, rest_port)
        self._clients, self._x, self._version_of = clients, x, version_of
        self._pause_s, self._max_duration_s, self._max_requests = pause_s, max_duration_s, max_requests
        self._stop = threading.Event()
        self._lock = threading.Condition()  # guards the three lists below; notified on a new version
        self._samples: list[Sample] = []
        self._failures: list[Failure] = []
        self._regressions: list[str] = []
        self._newest = -1
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0

    def start(self) -> TrafficClients:
        callers = [Caller(GRPC if i % 2 == 0 else REST, self.model, *self._ports, self._x)
                   for i in range(self._clients)]
        self._started_at = time.monotonic()
        for index, caller in enumerate(callers):
            thread = threading.Thread(target=self._run, args=(index, caller), daemon=True,
                                      name=f"traffic-{self.model}-{index}-{caller.transport}")
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, index: int, caller: Caller) -> None:
        deadline = self._started_at + self._max_duration_s
        last_version = -1
        try:
            for _ in range(self._max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                start = time.monotonic()
                try:
                    y, named = caller()
                    version = self._version_of(y)
                    if named is not None and named != version:
                        raise AssertionError(f"the answer {y} comes from version {version}, "
                                             f"but the response names version {named}")
                except Exception as exc:  # noqa: BLE001 - every failure is recorded, none raised
                    caller.reset()
                    with self._lock:
                        self._failures.append(Failure(index, caller.transport, time.monotonic(), describe_error(exc)))
                else:
                    end = time.monotonic()
                    with self._lock:
                        self._samples.append(Sample(index, caller.transport, start, end, version))
                        if version < last_version:
                            self._regressions.append(f"client {index} ({caller.transport}) was answered by version "
                                                     f"{version} at t={end:.3f} after version {last_version}")
                        if version > self._newest:
                            self._newest = version
                        self._lock.notify_all()
                    last_version = max(last_version, version)
                if self._pause_s > 0:
                    self._stop.wait(self._pause_s)
        finally:
            caller.close()

    def wait_for_version(self, version: int, timeout_s: float) -> float | None:
        """When a client was first answered by ``version`` or newer; None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._newest < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            return min(s.end_s for s in self._samples if s.version >= version)

    def answered(self) -> int:
        with self._lock:
            return len(self._samples)

    def report(self) -> TrafficReport:
        with self._lock:
            return TrafficReport(tuple(self._samples), tuple(self._failures), tuple(self._regressions),
                                 time.monotonic() - self._started_at)

    def stop(self, timeout_s: float = 60.0) -> TrafficReport:
        """Stop every client, wait for them (bounded) and return what they saw."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise AssertionError(f"traffic threads still running {timeout_s} s after stop: {alive}")
        return self.report()

    def __enter__(self) -> TrafficClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rest_status(rest_port: int, model: str, host: str = "127.0.0.1") -> dict[int, tuple[str, str]]:
    """version -> (state, error message) from ``GET /v1/models/{model}``; {} when unknown."""
    conn = http.client.HTTPConnection(host, rest_port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", f"/v1/models/{model}")
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status == 404:
        return {}
    if response.status != 200:
        raise RestError(response.status, payload.decode("utf-8", "replace"))
    return {int(s["version"]): (s["state"], s["status"].get("error_message", ""))
            for s in json.loads(payload)["model_version_status"]}
