"""``pyserving-model-server``: TF Serving's ``tensorflow_model_server``, flag for flag.

Exit status: 0 after a clean shutdown (SIGTERM / SIGINT) or ``--help`` / ``--version``;
1 when a flag is unknown or bad, when no model source is given, or when a model cannot
be loaded at startup ("Failed to start server. Error: ..."), as TF Serving does;
128 + the signal's number (143 for SIGTERM, 130 for SIGINT) when a second SIGTERM or
SIGINT arrives while the graceful shutdown is still running (the process exits at once,
without waiting for requests or unloading models).

Shutdown (:func:`run_until_signalled`): the first SIGTERM or SIGINT starts
:meth:`ModelServer.stop` on a separate thread: not ready first (health NOT_SERVING,
``/v1/health/ready`` 503), then no new connections or RPCs, requests in flight get
``--shutdown_grace_seconds`` (default 5) to finish, then every model is unloaded.

SIGHUP re-reads ``--model_config_file`` and ``--routing_config_file`` (on a thread of its
own; a bad file is logged and changes nothing).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from pyserving.server.batching_config import batching_config_from_flags
from pyserving.server.core import ServerCoreOptions
from pyserving.server.flags import FlagError, ModelServerOptions, parse_model_server_args, usage, version_text
from pyserving.server.log_format import HeldRecords, configure_logging
from pyserving.server.model_config import (
    ModelEntry,
    config_from_flags,
    load_model_server_config,
    models_from_config,
)
from pyserving.server.model_server import ModelServer, ModelServerSettings

__all__ = ["main", "settings_from_flags", "models_from_flags", "run_until_signalled", "exit_status_for_second_signal"]

_log = logging.getLogger("pyserving.server")


def _auto_threads(value: int, default: int) -> int:
    # TF Serving's 0 means "inline in the manager thread"; ours means "pick a pool size" so
    # independent models still load in parallel (README: Differences).
    return value if value > 0 else default


def _inter_op_threads(o: ModelServerOptions) -> int:
    """TF Serving's rule (the inter-op flag, else the session flag, 0: TensorFlow decides),
    except that when neither flag is given the ops run on the calling thread (-1): a
    request then pays no thread hand-off inside TensorFlow (README: Differences)."""
    if o.tensorflow_inter_op_parallelism or o.tensorflow_session_parallelism:
        return o.tensorflow_inter_op_parallelism or o.tensorflow_session_parallelism
    explicit = {"tensorflow_inter_op_parallelism", "tensorflow_session_parallelism"} & o.explicit_flags
    return 0 if explicit else -1


def settings_from_flags(o: ModelServerOptions) -> ModelServerSettings:
    """The server's settings for parsed flags. Reads ``--batching_parameters_file`` and
    ``--ssl_config_file`` (raises ServingError naming the file when it cannot be read or is
    invalid)."""
    tensorflow_options: dict[str, object] = {
        "saved_model_tags": list(o.saved_model_tags),
        "intra_op_parallelism": o.tensorflow_intra_op_parallelism or o.tensorflow_session_parallelism,
        "inter_op_parallelism": _inter_op_threads(o),
        "enable_model_warmup": o.enable_model_warmup,
        "num_request_iterations_for_warmup": o.num_request_iterations_for_warmup,
    }
    batching = batching_config_from_flags(
        o.enable_batching, o.batching_parameters_file, o.enable_per_model_batching_parameters
    )
    if batching is not None:
        tensorflow_options["batching"] = batching
    platform_options = {"tensorflow": tensorflow_options}
    cpus = os.cpu_count() or 1
    core = ServerCoreOptions(
        file_system_poll_wait_seconds=float(o.file_system_poll_wait_seconds),
        num_load_threads=_auto_threads(o.num_load_threads, max(2, cpus)),
        num_unload_threads=_auto_threads(o.num_unload_threads, 2),
        max_num_load_retries=o.max_num_load_retries,
        load_retry_interval_s=o.load_retry_interval_micros / 1e6,
        platform_options=platform_options,
        allow_version_labels_for_unavailable_models=o.allow_version_labels_for_unavailable_models,
        total_model_memory_limit_bytes=o.total_model_memory_limit_bytes or None,  # 0: no budget
    )
    admin_token = None
    if o.admin_token_file:
        from pyserving.server.admin_api import load_admin_token

        admin_token = load_admin_token(o.admin_token_file)
    tls = None
    if o.ssl_config_file:
        from pyserving.server.tls import load_ssl_config

        tls = load_ssl_config(o.ssl_config_file)
    monitoring = None
    if o.monitoring_config_file:
        from pyserving.server.monitoring_config import load_monitoring_config

        monitoring = load_monitoring_config(o.monitoring_config_file)
    host = os.environ.get("PYSERVING_HOST", "0.0.0.0")
    return ModelServerSettings(
        grpc_host=host,
        rest_host=host,
        grpc_port=o.port,
        grpc_socket_path=o.grpc_socket_path,
        grpc_max_threads=o.grpc_max_threads,
        grpc_channel_arguments=tuple(o.grpc_channel_arguments),
        rest_port=o.rest_api_port,
        rest_num_threads=o.rest_api_num_threads,
        rest_timeout_ms=o.rest_api_timeout_in_ms,
        rest_enable_cors=o.rest_api_enable_cors_support,
        model_config_file=o.model_config_file,
        config_poll_s=float(o.model_config_file_poll_wait_seconds),
        tensor_content_outputs=o.enable_serialization_as_tensor_content,
        shutdown_grace_s=o.shutdown_grace_seconds,
        routing_config_file=o.routing_config_file,
        routing_poll_s=float(o.routing_config_file_poll_wait_seconds),
        enable_admin_api=o.enable_admin_api,
        admin_token=admin_token,
        admin_persist=o.admin_persist_config,
        enable_tracing=o.enable_tracing,
        access_log=o.enable_access_log,
        tls=tls,
        monitoring=monitoring,
        core=core,
    )


def models_from_flags(o: ModelServerOptions) -> list[ModelEntry]:
    """The models of ``--model_config_file``, or the one of ``--model_name``/``--model_base_path``.

    A config file names each model's platform. For ``--model_base_path`` TF Serving always
    assumes TensorFlow; we do too unless the newest numbered version folder is a Python
    model (``model.py``, no ``saved_model.pb``), which is then served on the python platform.
    """
    if o.model_config_file:
        return models_from_config(load_model_server_config(o.model_config_file))
    models = models_from_config(config_from_flags(o.model_name, o.model_base_path))
    return [replace(m, platform=_detected_platform(m.base_path) or m.platform) for m in models]


def _detected_platform(base_path: str) -> str | None:
    from pyserving.loaders.platform import detect_platform

    try:
        versions = [p for p in Path(base_path).iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError:
        return None  # the source reports the base path's problem
    if not versions:
        return None
    return detect_platform(max(versions, key=lambda p: int(p.name)))


def exit_status_for_second_signal(signum: int) -> int:
    """What the process exits with when a second SIGTERM/SIGINT cuts the shutdown short."""
    return 128 + signum


def run_until_signalled(server: ModelServer) -> None:
    """Run ``server`` until SIGTERM or SIGINT, then shut it down gracefully; return after.

    Call it on the main thread (signal handlers can only be installed there). A second
    SIGTERM or SIGINT during the shutdown ends the process at once with
    :func:`exit_status_for_second_signal` (``os._exit``: no cleanup runs).
    """
    shutting_down = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if shutting_down.is_set():
            status = exit_status_for_second_signal(signum)
            # os.write, not logging: the handler may have interrupted a logging call.
            os.write(2, f"Received {name} again while shutting down: exiting now with status {status}\n".encode())
            os._exit(status)
        shutting_down.set()
        _log.info(
            "Received %s: shutting down gracefully (up to %g s for requests in flight); send it again to exit at once",
            name, server.settings.shutdown_grace_s,
        )
        threading.Thread(target=server.stop, name="pyserving-shutdown", daemon=True).start()

    def on_hangup(_signum: int, _frame: object) -> None:
        if not shutting_down.is_set():
            threading.Thread(target=server.reload_config_files, name="pyserving-sighup", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    try:
        while not server.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def quiet_tensorflow_startup() -> None:
    """Hide TensorFlow's C++ INFO lines (oneDNN, CUDA probing) unless the user chose a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _configure_logging(log_format: str, held: HeldRecords) -> None:
    quiet_tensorflow_startup()
    configure_logging(log_format, os.environ.get("PYSERVING_LOG_LEVEL", "INFO"), held=held)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # The parser logs its one warning line (ignored flags) itself, before --log_format is
    # known: the line is held, then written in the chosen format.
    held = HeldRecords()
    try:
        with held:
            options = parse_model_server_args(args)
    except FlagError as exc:
        _configure_logging("text", held)
        print(f"pyserving-model-server: {exc}", file=sys.stderr)
        print("Run 'pyserving-model-server --help' for the list of flags.", file=sys.stderr)
        return 1
    _configure_logging(options.log_format, held)
    if options.show_help:
        print(usage())
        return 0
    if options.show_version:
        print(version_text())
        return 0
    try:
        models = models_from_flags(options)
        server = ModelServer(settings_from_flags(options), models)
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported like TF Serving, then exit 1
        print(f"Failed to start server. Error: {exc}", file=sys.stderr)
        return 1
    host = server.settings.grpc_host
    if server.grpc_port:
        print(f"Running gRPC ModelServer at {host}:{server.grpc_port} ...", flush=True)
    if options.grpc_socket_path:
        print(f"Running gRPC ModelServer at UNIX socket {options.grpc_socket_path} ...", flush=True)
    if server.rest_port:
        print(f"Exporting HTTP/REST API at:localhost:{server.rest_port} ...", flush=True)
    run_until_signalled(server)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
