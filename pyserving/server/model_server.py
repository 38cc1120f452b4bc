""":class:`ModelServer`: the running server — core, gRPC, REST and the config poller.

Used by the ``pyserving-model-server`` binary and by ``pyserving serve``; tests and
embedding programs may use it directly.

Life cycle::

    server = ModelServer(options, models)   # nothing runs yet
    server.start()      # loads the models (blocks until each settled), then opens the ports
    server.wait()       # until stop() or a signal handler calls stop()
    server.stop()       # graceful, see below

Graceful shutdown (:meth:`stop`), in this order:

1. not ready: gRPC health turns NOT_SERVING (open ``Watch`` streams get it, then end) and
   ``GET /v1/health/ready`` answers 503 "shutting down";
2. both front ends stop accepting connections and RPCs, in parallel, and the requests in
   flight get ``shutdown_grace_s`` seconds to finish (then they are cancelled; a model call
   that is running cannot be interrupted and is waited for);
3. every model is unloaded (each once its last request released it), then :meth:`wait`
   returns.

Readiness (``core.readiness``) and the life-cycle log and counters (``core.lifecycle``)
are the core's; see :mod:`pyserving.server.readiness` and
:mod:`pyserving.manager.lifecycle_log`.

Failure: ``start`` raises :class:`ServingError` when a model cannot be loaded at startup or
a port cannot be bound; everything it had started is stopped again first. Ports open only
after the models settled (TF Serving's behaviour), so a client that can connect is served.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.data_plane import DataPlane
from pyserving.server.model_config import ModelEntry, load_model_server_config, models_from_config

__all__ = ["ModelServer", "ModelServerSettings"]

_log = logging.getLogger("pyserving.server")


@dataclass(frozen=True)
class ModelServerSettings:
    """What the servers need beyond the core. Ports: 0 turns REST off; gRPC needs a port
    or a socket path. ``model_config_file`` is re-read every ``config_poll_s`` seconds
    when > 0."""

    grpc_host: str = "0.0.0.0"
    grpc_port: int = 8500
    grpc_socket_path: str = ""
    grpc_max_threads: int = 4 * (os.cpu_count() or 1)
    grpc_channel_arguments: Sequence[tuple[str, Any]] = ()
    rest_host: str = "0.0.0.0"
    rest_port: int = 8501
    rest_num_threads: int = 4 * (os.cpu_count() or 1)
    rest_timeout_ms: int = 30000
    rest_enable_cors: bool = False
    model_config_file: str = ""
    config_poll_s: float = 0.0
    tensor_content_outputs: bool = False
    #: seconds requests in flight get to finish once shutdown began (``--shutdown_grace_seconds``)
    shutdown_grace_s: float = 5.0
    core: ServerCoreOptions = field(default_factory=ServerCoreOptions)


class ModelServer:
    def __init__(self, settings: ModelServerSettings, models: Sequence[ModelEntry]) -> None:
        self.settings = settings
        self._initial_models = list(models)
        self.core = ServerCore(settings.core)
        self.data_plane = DataPlane(self.core)
        self._grpc: Any = None
        self._rest: Any = None
        self._stopped = threading.Event()
        self._stopping = threading.Event()  # set when stop() begins; ends the config poll
        self._stop_lock = threading.Lock()  # makes stop() run once
        self._stop_started = False
        self._poller: threading.Thread | None = None

    # -- ports ---------------------------------------------------------------------------

    @property
    def grpc_port(self) -> int | None:
        return self._grpc.port if self._grpc is not None else None

    @property
    def rest_port(self) -> int | None:
        return self._rest.port if self._rest is not None else None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        from pyserving.server.grpc_server import GrpcServerOptions, start_grpc_server
        from pyserving.server.rest_server import RestServerOptions, start_rest_server

        s = self.settings
        try:
            self.core.start(self._initial_models)
            if s.grpc_port or s.grpc_socket_path:
                self._grpc = start_grpc_server(
                    self.data_plane,
                    self.reload_config_proto,
                    readiness=self.core.readiness,
                    options=GrpcServerOptions(
                        host=s.grpc_host,
                        port=s.grpc_port or None,
                        socket_path=s.grpc_socket_path,
                        max_threads=s.grpc_max_threads,
                        channel_arguments=list(s.grpc_channel_arguments),
                        tensor_content_outputs=s.tensor_content_outputs,
                    ),
                )
            if s.rest_port:
                self._rest = start_rest_server(
                    self.data_plane,
                    readiness=self.core.readiness,
                    options=RestServerOptions(
                        host=s.rest_host,
                        port=s.rest_port,
                        num_threads=s.rest_num_threads,
                        timeout_ms=s.rest_timeout_ms,
                        enable_cors=s.rest_enable_cors,
                    ),
                )
        except BaseException:
            self.stop()
            raise
        if s.model_config_file and s.config_poll_s > 0:
            self._poller = threading.Thread(target=self._poll_config, name="pyserving-config-poll", daemon=True)
            self._poller.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stopped; True if it did within ``timeout_s``."""
        return self._stopped.wait(timeout_s)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Graceful shutdown (see the module docstring); blocks until it is done.

        Idempotent: a second call returns at once (use :meth:`wait` to wait for the first).
        Call it from any thread but the signal handler's own (it blocks) or a request's.
        """
        with self._stop_lock:
            if self._stop_started:
                return
            self._stop_started = True
        self._stopping.set()
        grace = self.settings.shutdown_grace_s
        started = time.monotonic()
        try:
            self.core.readiness.begin_shutdown()
            fronts = [(name, handle) for name, handle in (("REST", self._rest), ("gRPC", self._grpc)) if handle]
            if fronts:
                _log.info(
                    "Shutting down: no longer ready, no new requests; requests in flight get up to %g s", grace
                )
            stoppers = [
                threading.Thread(target=_stop_front_end, args=(name, handle, grace), name=f"pyserving-stop-{name}")
                for name, handle in fronts
            ]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
            if fronts:
                _log.info("Stopped serving requests after %.2f s; unloading the models", time.monotonic() - started)
        finally:
            self.core.stop()
            _log.info("Shutdown complete after %.2f s", time.monotonic() - started)
            self._stopped.set()

    # -- configuration -----------------------------------------------------------------------

    def reload_config_proto(self, config: Any) -> None:
        """``HandleReloadConfigRequest``: replace the model list with ``config``'s."""
        models = models_from_config(config, self.core.models(), reload_rpc=True)
        self.core.reload_config(models)

    def _poll_config(self) -> None:
        path = self.settings.model_config_file
        while not self._stopping.wait(self.settings.config_poll_s):
            try:
                config = load_model_server_config(path)
                models = models_from_config(config, self.core.models())
            except Exception as exc:  # noqa: BLE001 - a bad file must not stop the server
                _log.error("Failed to read ModelServerConfig file: %s", exc)
                continue
            if models == self.core.models():
                continue
            try:
                self.core.reload_config(models)
                _log.info("Reloaded model config from %s: %s", path, ", ".join(m.name for m in models))
            except Exception as exc:  # noqa: BLE001
                _log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc)


def _stop_front_end(name: str, handle: Any, grace_s: float) -> None:
    try:
        handle.stop(grace_s)
    except Exception:  # noqa: BLE001 - the other front end and the unloads must still happen
        _log.exception("Stopping the %s server failed", name)
