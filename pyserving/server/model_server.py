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

Configuration: every change of models or routes goes through :attr:`control`
(a :class:`ControlPlane`): the model-config poll (``config_poll_s``), the routing-config
poll (``routing_poll_s``), :meth:`reload_config_files` (SIGHUP in the binary), the
``HandleReloadConfigRequest`` RPC and the admin API (``enable_admin_api``). Routes
(``routing_config_file``) are read once the models settled; :attr:`router` spreads their
requests over the models and keeps per-arm statistics.

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
from typing import Any, Callable, Sequence

from pyserving.manager.router import Router
from pyserving.server.control_plane import ConfigFileError, ControlPlane
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.data_plane import DataPlane
from pyserving.server.model_config import ModelEntry, models_from_config
from pyserving.server.monitoring_config import MonitoringSettings
from pyserving.server.request_logger import RequestLoggers
from pyserving.server.tls import TlsSettings

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
    #: text-format RoutingConfig read after the models settled; re-read every
    #: ``routing_poll_s`` seconds when > 0, and by :meth:`ModelServer.reload_config_files`
    routing_config_file: str = ""
    routing_poll_s: float = 0.0
    #: serve the admin API on the REST port; ``admin_token``: the bearer token it requires
    #: (None: none); ``admin_persist``: write its changes back to the config files
    enable_admin_api: bool = False
    admin_token: str | None = field(default=None, repr=False)
    admin_persist: bool = False
    #: TLS for the gRPC port and socket and the REST port (``--ssl_config_file``); None: plaintext
    tls: TlsSettings | None = None
    #: Prometheus metrics on the REST port (``--monitoring_config_file``); None: off
    monitoring: MonitoringSettings | None = None
    #: one log line per finished request, logger ``pyserving.access`` (``--enable_access_log``)
    access_log: bool = False
    #: OpenTelemetry tracing of every model request (``--enable_tracing``; exporter from the
    #: ``OTEL_*`` environment, see :mod:`pyserving.server.tracing`)
    enable_tracing: bool = False
    core: ServerCoreOptions = field(default_factory=ServerCoreOptions)


class ModelServer:
    def __init__(self, settings: ModelServerSettings, models: Sequence[ModelEntry]) -> None:
        self.settings = settings
        self._initial_models = list(models)
        self.core = ServerCore(settings.core)
        core = self.core
        self.router = Router(core, model_names=lambda: [m.name for m in core.models()])
        #: Request logging (``logging_config`` of each model); reconfigured with every model list.
        self.request_loggers = RequestLoggers()
        core.add_models_listener(self.request_loggers.configure)
        #: Prometheus metrics when ``settings.monitoring`` enables them, else None.
        self.metrics: Any = None
        on_runtime = None
        if settings.monitoring is not None and settings.monitoring.enabled:
            from pyserving.server.metrics import ServerMetrics

            self.metrics = ServerMetrics()
            self.metrics.attach(core, self.router)
            on_runtime = self.metrics.record_runtime
        #: Every finished model request is reported to these (metrics first).
        self.observers: tuple[Any, ...] = (
            (self.metrics, self.request_loggers) if self.metrics is not None else (self.request_loggers,)
        )
        #: One log line per finished request (``settings.access_log``), else None.
        self.access_log: Any = None
        if settings.access_log:
            from pyserving.server.access_log import AccessLog

            self.access_log = AccessLog()
            self.observers = (*self.observers, self.access_log)
        #: OpenTelemetry request tracing when ``settings.enable_tracing`` (and not OTEL_SDK_DISABLED), else None.
        self.tracing: Any = None
        if settings.enable_tracing:
            from pyserving.server.tracing import tracing_from_environment

            self.tracing = tracing_from_environment()
        self.data_plane = DataPlane(self.core, self.router, on_runtime, self.tracing)
        self.control = ControlPlane(
            self.core,
            self.router,
            model_config_file=settings.model_config_file,
            routing_config_file=settings.routing_config_file,
            persist=settings.admin_persist,
        )
        self._grpc: Any = None
        self._rest: Any = None
        self._stopped = threading.Event()
        self._stopping = threading.Event()  # set when stop() begins; ends the config poll
        self._stop_lock = threading.Lock()  # makes stop() run once
        self._stop_started = False
        self._pollers: list[threading.Thread] = []

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
        self._observe_loads(True)
        try:
            self.core.start(self._initial_models)
            if s.routing_config_file:
                self.control.reload_routes_from_file(force=True)
                names = ", ".join(r.name for r in self.router.routes()) or "none"
                _log.info("Routes from %s: %s", s.routing_config_file, names)
            admin = None
            if s.enable_admin_api:
                from pyserving.server.admin_api import AdminApi

                admin = AdminApi(self.control, s.admin_token)
            if s.grpc_port or s.grpc_socket_path:
                self._grpc = start_grpc_server(
                    self.data_plane,
                    self.reload_config_proto,
                    readiness=self.core.readiness,
                    observers=self.observers,
                    options=GrpcServerOptions(
                        host=s.grpc_host,
                        port=s.grpc_port or None,
                        socket_path=s.grpc_socket_path,
                        max_threads=s.grpc_max_threads,
                        channel_arguments=list(s.grpc_channel_arguments),
                        tensor_content_outputs=s.tensor_content_outputs,
                        tls=s.tls,
                    ),
                )
            if s.rest_port:
                self._rest = start_rest_server(
                    self.data_plane,
                    readiness=self.core.readiness,
                    admin=admin,
                    observers=self.observers,
                    metrics=(s.monitoring.path, self.metrics.render) if self.metrics is not None else None,
                    options=RestServerOptions(
                        host=s.rest_host,
                        port=s.rest_port,
                        num_threads=s.rest_num_threads,
                        timeout_ms=s.rest_timeout_ms,
                        enable_cors=s.rest_enable_cors,
                        tls=s.tls,
                    ),
                )
        except BaseException:
            self.stop()
            raise
        polls = [
            (s.model_config_file, s.config_poll_s, self._reload_models, "config"),
            (s.routing_config_file, s.routing_poll_s, self._reload_routes, "routing"),
        ]
        for path, every_s, reload, what in polls:
            if path and every_s > 0:
                thread = threading.Thread(
                    target=self._poll, args=(every_s, reload), name=f"pyserving-{what}-poll", daemon=True
                )
                self._pollers.append(thread)
                thread.start()

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
            self.router.close()
            self.request_loggers.close(max(grace, 5.0))  # after the front ends: nothing new arrives
            if self.access_log is not None:
                self.access_log.close()
            self.core.stop()
            if self.tracing is not None:
                self.tracing.shutdown()  # exports the spans still pending
            self._observe_loads(False)
            _log.info("Shutdown complete after %.2f s", time.monotonic() - started)
            self._stopped.set()

    def _observe_loads(self, on: bool) -> None:
        """Point the loaders' process-wide SavedModel load and warmup hooks at this server's
        metrics (the last server started in a process wins), or take them back."""
        if self.metrics is None:
            return
        from pyserving.loaders.saved_model import set_load_observer
        from pyserving.loaders.warmup import set_warmup_observer

        set_load_observer(self.metrics.record_load if on else None)
        set_warmup_observer(self.metrics.record_warmup if on else None)

    # -- configuration -----------------------------------------------------------------------

    def reload_config_proto(self, config: Any) -> None:
        """``HandleReloadConfigRequest``: replace the model list with ``config``'s."""
        models = models_from_config(config, self.core.models(), reload_rpc=True)
        self.control.reload_models(models)

    def reload_config_files(self) -> None:
        """Re-read ``model_config_file`` and ``routing_config_file`` now (SIGHUP), models
        first; errors are logged and leave what is in force unchanged. Blocks while new
        models load; call it from a thread of its own."""
        s = self.settings
        if s.model_config_file and not self._stopping.is_set():
            self._reload_models(force=True)
        if s.routing_config_file and not self._stopping.is_set():
            self._reload_routes(force=True)

    def _poll(self, every_s: float, reload: Callable[[bool], None]) -> None:
        while not self._stopping.wait(every_s):
            reload(False)

    def _reload_models(self, force: bool) -> None:
        # TF Serving's two log lines of PollFilesystemAndReloadConfig: a bad file, or a reload
        # that failed. The control plane reads the file under its lock, so a concurrent admin
        # change is never undone.
        path = self.settings.model_config_file
        try:
            if self.control.reload_models_from_file(force=force):
                _log.info("Reloaded the model config from %s: %s", path, ", ".join(m.name for m in self.core.models()))
        except ConfigFileError as exc:
            _log.error("Failed to read ModelServerConfig file: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a failed reload must not stop the server
            _log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", exc)

    def _reload_routes(self, force: bool) -> None:
        path = self.settings.routing_config_file
        try:
            if self.control.reload_routes_from_file(force=force):
                _log.info("Reloaded the routes from %s: %s", path, ", ".join(r.name for r in self.router.routes()))
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop the server
            _log.error("Failed to reload the routing config file %s; the routes in force stay: %s", path, exc)


def _stop_front_end(name: str, handle: Any, grace_s: float) -> None:
    try:
        handle.stop(grace_s)
    except Exception:  # noqa: BLE001 - the other front end and the unloads must still happen
        _log.exception("Stopping the %s server failed", name)
