"""The gRPC front end: TF Serving's PredictionService and ModelService, plus grpc.health.v1.

This module binds and runs the server; the servicers (request parsing, the one error
mapping, deadlines) are in :mod:`grpc_servicers` and are importable from here too.

Wire compatibility: the services are registered with the generated
``add_*Servicer_to_server`` functions shipped in ``tensorflow-serving-api`` (never
re-generated), so the official stubs talk to this server unchanged. Importing this
module loads neither TensorFlow nor its protos; :func:`start_grpc_server` imports them.

Health: ``grpc.health.v1.Health`` answers for "", ``tensorflow.serving.PredictionService``
and ``tensorflow.serving.ModelService``: SERVING while the server is ready (given a
:class:`~pyserving.server.readiness.Readiness`: every configured model has an AVAILABLE
version and the server is not shutting down), NOT_SERVING otherwise; without one, always
SERVING. ``Watch`` streams get every change. TF Serving registers the service only with
``--enable_grpc_healthcheck_service``; we always register it (a deliberate, harmless
extension: a client that never calls it sees no difference). On :meth:`GrpcServerHandle.stop`
every service turns NOT_SERVING first, then open ``Watch`` streams are finished (they
would otherwise hold the shutdown for the whole grace period).

Threading: RPCs run on a ``ThreadPoolExecutor`` of ``max_threads`` workers (TF Serving's
``--grpc_max_threads``); the servicers keep no per-request state and are safe to call
from all of them at once. Requests beyond ``max_threads`` wait in gRPC's queue.
:func:`start_grpc_server` returns once the server is started; the handle may be stopped
from any thread except an RPC worker.

TLS: with ``GrpcServerOptions.tls`` (``--ssl_config_file``) the TCP port and the UNIX socket
serve TLS only, as in TF Serving; with ``client_verify`` a client certificate signed by
``custom_ca`` is required (see :mod:`pyserving.server.tls`). Without it both are plaintext.

Ownership and failure: the handle owns the server and its executor. A port or socket
that cannot be bound raises UNAVAILABLE after stopping what was started, so nothing
keeps running.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import grpc

from pyserving.servable.errors import InvalidArgumentError, UnavailableError
from pyserving.server.data_plane import DataPlane
from pyserving.server.grpc_servicers import ModelServiceServicer, PredictionServiceServicer, ReloadConfig
from pyserving.server.readiness import Readiness, ReadinessStatus
from pyserving.server.tls import TlsSettings, grpc_server_credentials
from pyserving.server.request_events import RequestObserver

__all__ = [
    "GrpcServerOptions",
    "GrpcServerHandle",
    "PredictionServiceServicer",
    "ModelServiceServicer",
    "start_grpc_server",
    "HEALTH_SERVICES",
]

_log = logging.getLogger(__name__)

#: Services the health service reports SERVING ("" is the whole server).
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _default_max_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return 4 * max(cpus, 1)


_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class GrpcServerOptions:
    """Where and how the gRPC server listens (TF Serving's gRPC flags).

    ``port``: TCP port (``--port``, default 8500); 0 picks a free port; None serves no
    TCP port (then ``socket_path`` is required). ``socket_path``: also serve on the UNIX
    socket ``unix:<path>`` (``--grpc_socket_path``). ``max_threads``: RPC worker threads
    (``--grpc_max_threads``, default 4 x schedulable CPUs). ``channel_arguments``: extra
    gRPC server arguments (``--grpc_channel_arguments``), applied last so they override
    ours. ``max_message_bytes``: receive and send limit in bytes (TF Serving: INT32_MAX).
    ``tensor_content_outputs``: ``--enable_serialization_as_tensor_content``.
    ``tls``: serve TLS (mutual TLS with ``client_verify``) on the port and the socket
    (``--ssl_config_file``); None: plaintext.
    SO_REUSEPORT is off unless ``channel_arguments`` turns it on, so a port already
    served by another process is an error instead of silently shared.
    """

    host: str = "0.0.0.0"
    port: int | None = 8500
    socket_path: str = ""
    max_threads: int = field(default_factory=_default_max_threads)
    channel_arguments: Sequence[tuple[str, int | str]] = field(default_factory=list)
    max_message_bytes: int = _INT32_MAX
    tensor_content_outputs: bool = False
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"gRPC port must be in [0, 65535] or None, got {self.port}")
        if self.port is None and not self.socket_path:
            raise InvalidArgumentError(
                "At least one of the gRPC port or socket_path must be set, got port=None and socket_path=''"
            )
        if self.max_threads < 1:
            raise InvalidArgumentError(f"grpc max_threads must be >= 1, got {self.max_threads}")
        if not 1 <= self.max_message_bytes <= _INT32_MAX:
            raise InvalidArgumentError(
                f"max_message_bytes must be in [1, {_INT32_MAX}], got {self.max_message_bytes}"
            )

    def server_arguments(self) -> list[tuple[str, int | str]]:
        merged: dict[str, int | str] = {
            "grpc.max_receive_message_length": self.max_message_bytes,
            "grpc.max_send_message_length": self.max_message_bytes,
            "grpc.so_reuseport": 0,
        }
        merged.update(dict(self.channel_arguments))
        return list(merged.items())


class GrpcServerHandle:
    """A running gRPC server. ``port`` is the bound TCP port (None when TCP is off)."""

    def __init__(
        self,
        server: grpc.Server,
        executor: futures.ThreadPoolExecutor,
        health_servicer: Any,
        port: int | None,
        addresses: Sequence[str],
        readiness_subscription: Any = None,
    ) -> None:
        self._server = server
        self._executor = executor
        self._health = health_servicer
        self._readiness_subscription = readiness_subscription
        self.port = port
        self.addresses = tuple(addresses)

    def stop(self, grace_s: float | None = 5.0) -> None:
        """Health turns NOT_SERVING and health ``Watch`` streams end; new RPCs are refused;
        RPCs in flight get ``grace_s`` seconds (None = wait for them all) before they are
        cancelled. Returns once every worker thread has finished (a handler inside a model
        call finishes that call). Safe to call more than once."""
        if self._readiness_subscription is not None:
            self._readiness_subscription.cancel()
        self._health.enter_graceful_shutdown()
        self._health.finish_watches()
        self._server.stop(grace_s).wait()
        self._executor.shutdown(wait=True)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops; True if it has stopped, False on timeout."""
        return not self._server.wait_for_termination(timeout_s)

    def __enter__(self) -> GrpcServerHandle:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop(0)


def start_grpc_server(
    data_plane: DataPlane,
    reload_config: ReloadConfig,
    options: GrpcServerOptions | None = None,
    readiness: Readiness | None = None,
    observers: Sequence[RequestObserver] = (),
) -> GrpcServerHandle:
    """Bind, register the services and start serving; raise UNAVAILABLE if a bind fails.

    ``readiness``: health follows it (SERVING only while ready); None = always SERVING.
    ``observers`` receive every finished model request (metrics, request logging).
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    options = options or GrpcServerOptions()
    prediction = PredictionServiceServicer(
        data_plane, tensor_content_outputs=options.tensor_content_outputs, observers=observers
    )
    model = ModelServiceServicer(data_plane, reload_config, observers)
    executor = futures.ThreadPoolExecutor(max_workers=options.max_threads, thread_name_prefix="grpc-rpc")
    server = grpc.server(executor, options=options.server_arguments())
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(model, server)
    health_servicer = _health_servicer()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    def follow(status: ReadinessStatus) -> None:
        for service in HEALTH_SERVICES:
            health_servicer.set(service, serving if status.ready else not_serving)

    subscription = None
    if readiness is None:
        follow(ReadinessStatus(True))
    else:
        subscription = readiness.add_listener(follow)  # calls follow() with the status now
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    addresses: list[str] = []
    port: int | None = None
    credentials = grpc_server_credentials(options.tls) if options.tls is not None else None
    try:
        if options.port is not None:
            host = f"[{options.host}]" if ":" in options.host and not options.host.startswith("[") else options.host
            address = f"{host}:{options.port}"
            port = _bind(server, address, credentials)
            addresses.append(f"{host}:{port}")
        if options.socket_path:
            address = f"unix:{options.socket_path}"
            _bind(server, address, credentials)
            addresses.append(address)
        server.start()
    except BaseException:
        if subscription is not None:
            subscription.cancel()
        server.stop(0)
        executor.shutdown(wait=False)
        raise
    security = ""
    if options.tls is not None:
        security = " (TLS, client certificates required)" if options.tls.client_verify else " (TLS)"
    _log.info("Running gRPC ModelServer at %s%s ...", ", ".join(addresses), security)
    return GrpcServerHandle(server, executor, health_servicer, port, addresses, subscription)


class _OnceFinished:
    """Wraps one ``Watch`` stream's send callback: after the first ``None`` (which finishes
    the stream) every later call is dropped. ``_lock`` serializes the calls, so a status is
    never followed by a message or a second status."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()  # guards _finished; held while gRPC queues the message
        self._finished = False

    def __call__(self, response: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = response is None
            self._send(response)


def _health_servicer() -> Any:
    """grpcio's reference HealthServicer, plus :meth:`finish_watches` (see the module doc)."""
    from grpc_health.v1 import health

    class HealthServicer(health.HealthServicer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._watches_lock = threading.Lock()  # guards _watches
            self._watches: set[_OnceFinished] = set()

        def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:
            if send_response_callback is None:  # a server without non-blocking streams
                return super().Watch(request, context)
            once = _OnceFinished(send_response_callback)
            with self._watches_lock:
                self._watches.add(once)
            context.add_callback(lambda: self._forget(once))
            return super().Watch(request, context, once)

        def _forget(self, once: _OnceFinished) -> None:
            with self._watches_lock:
                self._watches.discard(once)

        def finish_watches(self) -> None:
            """End every open ``Watch`` stream with OK (after the status it was last sent)."""
            with self._watches_lock:
                watches, self._watches = self._watches, set()
            for once in watches:
                once(None)

    return HealthServicer()


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise UnavailableError(f"Could not bind gRPC port at {address}: {exc}") from exc
    if bound == 0:  # older grpcio reports failure this way
        raise UnavailableError(f"Could not bind gRPC port at {address}")
    return bound
