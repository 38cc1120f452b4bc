"""Command-line flags of ``pyserving-model-server``: TF Serving's ``tensorflow_model_server`` flags.

:data:`FLAGS` lists every flag of TF Serving's ``main.cc`` with its type, TF Serving's
default and its status here (:class:`FlagStatus`), followed by pyserving's own extension
flags (``FlagSpec.extension``; TF Serving has no such flag, so a TF Serving command line
never sets them):

* ``IMPLEMENTED``: parsed, validated and honoured.
* ``LATER``: accepted only at its default value; any other value makes parsing fail with
  ``not supported yet: --flag=value (feature)`` until that feature lands. Never ignored.
* ``NOT_APPLICABLE`` (TPU, TFLite, XLA, ALTS, profiler, platform config, ...): accepted and
  ignored; all such flags given on one command line produce exactly one warning line.

:func:`parse_model_server_args` turns ``argv`` (without the program name) into a frozen
:class:`ModelServerOptions` or raises :class:`FlagError` (INVALID_ARGUMENT) naming the flag
and the value; the caller prints the message (and :func:`usage`) and exits non-zero. It has
no side effects besides the one warning log line; it is safe to call from any thread.

Syntax: ``--name=value`` (TF Serving's only form) and ``--name value``. Booleans: ``--name``
(true) or ``--name=true|false|1|0`` (case-insensitive); a boolean never consumes the next
argument. A repeated flag keeps its last value, so the Docker convention of fixed leading
flags followed by the user's own (:func:`docker_argv`) works as in TF Serving. With
``--help`` or ``--version`` only syntax is checked, so ``--version`` works on its own.

Deliberate differences from TF Serving:

* ``--rest_api_port`` defaults to 8501 (TF Serving: 0, i.e. REST off); 0 still turns REST off.
* An unknown flag or a stray argument is an error (TF Serving prints "unknown argument" and
  starts anyway); ``--rest_api_port`` equal to ``--port`` is an error (TF Serving logs and
  skips REST); ports must be in 0..65535; thread counts must be >= 1 and load/unload thread
  counts and ``--max_num_load_retries`` >= 0; ``--saved_model_tags`` may not contain an
  empty tag; ``--grpc_channel_arguments`` entries must be ``key=value`` (TF Serving crashes).
* ``--model_base_path`` may be relative; :func:`pyserving.server.model_config.config_from_flags`
  makes it absolute (TF Serving rejects it). Paths in a model config file must stay absolute.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.metadata
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server.log_format import LOG_FORMATS

__all__ = [
    "FlagStatus",
    "FlagSpec",
    "FlagError",
    "FLAGS",
    "ModelServerOptions",
    "parse_model_server_args",
    "parse_grpc_channel_arguments",
    "usage",
    "version_text",
    "docker_argv",
]

_log = logging.getLogger(__name__)

FlagValue = Union[bool, int, float, str]
ChannelArgument = tuple[str, Union[int, str]]


class FlagStatus(enum.Enum):
    IMPLEMENTED = "implemented"
    LATER = "later"
    NOT_APPLICABLE = "not applicable"


class FlagError(InvalidArgumentError):
    """A command line that cannot be accepted; the message names the flag and the value."""


def _schedulable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_CPUS = _schedulable_cpus()


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One flag. ``default`` is pyserving's default, ``tf_default`` TF Serving's (they differ
    only for ``--rest_api_port``). ``feature`` names the work a LATER flag waits for."""

    name: str
    type: type
    default: FlagValue
    tf_default: FlagValue
    status: FlagStatus
    help: str
    feature: str = ""
    int_bits: int = 32
    default_text: str = ""
    field: str = ""
    #: a pyserving flag that TF Serving does not have
    extension: bool = False
    #: another name of the flag named here (same field; the last one given wins)
    alias_of: str = ""

    @property
    def option(self) -> str:
        """The :class:`ModelServerOptions` field holding the value."""
        return self.field or self.alias_of or self.name


_I, _L, _NA = FlagStatus.IMPLEMENTED, FlagStatus.LATER, FlagStatus.NOT_APPLICABLE


def _f(name: str, type_: type, default: FlagValue, status: FlagStatus, help_: str, **kw: object) -> FlagSpec:
    tf_default = kw.pop("tf_default", default)
    return FlagSpec(name, type_, default, tf_default, status, help_, **kw)  # type: ignore[arg-type]


_CPU_X4 = f"4 x schedulable CPUs ({4 * _CPUS})"

#: Every flag of TF Serving's ``tensorflow_model_server`` (plus ``--help``), in usage order.
FLAGS: tuple[FlagSpec, ...] = (
    # gRPC and REST endpoints
    _f("port", int, 8500, _I, "gRPC TCP port; 0 disables TCP gRPC (then --grpc_socket_path is required)."),
    _f("grpc_socket_path", str, "", _I, "If set, also serve gRPC on this UNIX socket path (relative or absolute)."),
    _f("grpc_max_threads", int, 4 * _CPUS, _I, "Most threads the gRPC server uses for calls.", default_text=_CPU_X4),
    _f("grpc_channel_arguments", str, "", _I,
       "Comma-separated key=value gRPC server arguments, e.g. grpc.max_connection_age_ms=2000; "
       "32-bit integer values are passed as ints."),
    _f("enable_grpc_healthcheck_service", bool, False, _I, "Serve the standard grpc.health.v1 Health service."),
    _f("rest_api_port", int, 8501, _I,
       "HTTP/REST port; 0 disables REST; must differ from --port.", tf_default=0),
    _f("rest_api_num_threads", int, 4 * _CPUS, _I, "HTTP/REST worker threads.", default_text=_CPU_X4),
    _f("rest_api_timeout_in_ms", int, 30000, _I,
       "Timeout of each HTTP/REST call in milliseconds; <= 0 means no timeout."),
    _f("rest_api_enable_cors_support", bool, False, _I, "Add CORS headers to HTTP/REST responses."),
    # models
    _f("model_config_file", str, "", _I,
       "Text-format ModelServerConfig listing the models to serve; when set, --model_name and "
       "--model_base_path are ignored."),
    _f("model_config_file_poll_wait_seconds", int, 0, _I,
       "Seconds between re-reads of --model_config_file; 0 (or negative) reads it once."),
    _f("model_name", str, "default", _I, "Name of the single model served from --model_base_path."),
    _f("model_base_path", str, "", _I,
       "Directory of the single model's numbered version directories (required unless "
       "--model_config_file); a relative path is made absolute."),
    _f("file_system_poll_wait_seconds", int, 1, _I,
       "Seconds between polls of the base paths for versions; 0 polls once, negative never (testing only)."),
    _f("allow_version_labels_for_unavailable_models", bool, False, _I,
       "Allow a new label to name a version that is not available yet."),
    _f("num_load_threads", int, 0, _I, "Threads loading servables; 0 loads one at a time in the manager's loop."),
    _f("num_unload_threads", int, 0, _I, "Threads unloading servables; 0 unloads in the manager's loop."),
    _f("max_num_load_retries", int, 5, _I, "Retries after a failed load before giving up; 0 tries once."),
    _f("load_retry_interval_micros", int, 60_000_000, _I,
       "Microseconds between load retries; negative means no wait.", int_bits=64),
    _f("saved_model_tags", str, "serve", _I, "Comma-separated tags of the MetaGraph to load from a SavedModel."),
    _f("enable_model_warmup", bool, True, _I,
       "Replay <version>/assets.extra/tf_serving_warmup_requests (TFRecord of PredictionLog) while a "
       "version loads, before it becomes available; a failing warmup fails the load."),
    _f("num_request_iterations_for_warmup", int, 0, _I,
       "Times each warmup request is replayed; used only if > 0 (else once)."),
    # TensorFlow runtime
    _f("tensorflow_session_parallelism", int, 0, _I,
       "Threads for TensorFlow intra- and inter-op pools; 0 lets TensorFlow decide.", int_bits=64),
    _f("tensorflow_intra_op_parallelism", int, 0, _I,
       "Threads for one op's parallel work; 0 lets TensorFlow decide.", int_bits=64),
    _f("tensorflow_inter_op_parallelism", int, 0, _I,
       "Ops run concurrently; 0 lets TensorFlow decide; -1 runs them on the calling thread (pyserving's "
       "choice when neither this flag nor --tensorflow_session_parallelism is given). Setting all three "
       "parallelism flags is an error.",
       int_bits=64),
    # batching
    _f("enable_batching", bool, False, _I,
       "Batch concurrent requests to the same TensorFlow model, version and signature into one model call "
       "(without --batching_parameters_file: up to 32 rows per call, no waiting, one thread per CPU)."),
    _f("batching_parameters_file", str, "", _I,
       "Text-format BatchingParameters (TF Serving's); fields left out take TF Serving's defaults. "
       "Needs --enable_batching."),
    _f("enable_per_model_batching_parameters", bool, False, _I,
       "Read each model's batching parameters from batching_params.pbtxt in its version directory; "
       "versions without one are not batched. Needs --enable_batching."),
    _f("ssl_config_file", str, "", _I,
       "Text-format SSLConfig (server_key, server_cert, custom_ca: PEM text, not file names; client_verify): "
       "TLS on the gRPC port and socket as in TF Serving and, beyond it, HTTPS on the REST port with the same "
       "certificate; client_verify requires client certificates signed by custom_ca on both (mutual TLS)."),
    _f("monitoring_config_file", str, "", _I,
       "Text-format MonitoringConfig: prometheus_config { enable: true path: '/monitoring/prometheus/metrics' } "
       "serves Prometheus metrics (TF Serving's names plus pyserving_*) on the REST port."),
    # LATER
    _f("tensorflow_session_config_file", str, "", _L,
       "Text-format TensorFlow ConfigProto for sessions.", feature="session config"),
    _f("per_process_gpu_memory_fraction", float, 0.0, _L,
       "Fraction of GPU memory to claim (0: TensorFlow decides).", feature="gpu memory limits"),
    _f("enable_signature_method_name_check", bool, False, _L,
       "Check SignatureDef method names for Classify/Regress.", feature="signature method-name check"),
    _f("enable_serialization_as_tensor_content", bool, False, _L,
       "Encode Predict outputs as tensor_content.", feature="tensor_content serialization"),
    # NOT_APPLICABLE
    _f("flush_filesystem_caches", bool, True, _NA, "Flush TensorFlow file-system caches after loads."),
    _f("platform_config_file", str, "", _NA, "Text-format PlatformConfigMap replacing the TensorFlow platform."),
    _f("use_alts_credentials", bool, False, _NA, "Use Google ALTS credentials."),
    _f("remove_unused_fields_from_bundle_metagraph", bool, True, _NA, "Drop unused MetaGraphDef fields."),
    _f("prefer_tflite_model", bool, False, _NA, "Experimental: prefer model.tflite over saved_model.pb."),
    _f("num_tflite_pools", int, _CPUS, _NA, "Experimental: TFLite interpreter pools.",
       default_text=f"schedulable CPUs ({_CPUS})"),
    _f("num_tflite_interpreters_per_pool", int, 1, _NA, "Experimental: TFLite interpreters per pool."),
    _f("xla_cpu_compilation_enabled", bool, False, _NA, "Experimental: enable XLA:CPU JIT."),
    _f("xla_gpu_compilation_enabled", bool, False, _NA, "Experimental: enable XLA:CPU and XLA:GPU JIT."),
    _f("enable_profiler", bool, True, _NA, "Serve the TensorFlow profiler service."),
    _f("thread_pool_factory_config_file", str, "", _NA, "Text-format ThreadPoolConfig."),
    _f("mixed_precision", str, "", _NA, "Mixed-precision mode, e.g. bfloat16."),
    _f("skip_initialize_tpu", bool, False, _NA, "Skip initializing the TPU system."),
    # pyserving extensions (TF Serving has no such flags)
    _f("shutdown_grace_seconds", float, 5.0, _I,
       "On SIGTERM/SIGINT: seconds requests in flight get to finish once the server stopped accepting "
       "new ones (then they are cancelled and the models unloaded); >= 0.",
       extension=True),
    _f("enable_per_model_batching_params", bool, False, _I,
       "Alias of --enable_per_model_batching_parameters (the name of TF Serving's config field).",
       extension=True, alias_of="enable_per_model_batching_parameters"),
    _f("total_model_memory_limit_bytes", int, 0, _I,
       "Total estimated RAM of the loaded versions (TF Serving's ServerCore option of this name); a "
       "version that does not fit ends with RESOURCE_EXHAUSTED, the served versions keep serving; 0: no limit.",
       int_bits=64, extension=True),
    _f("routing_config_file", str, "", _I,
       "Text-format RoutingConfig (pyserving/protos/routing.proto): routes that clients call like models, "
       "spread over models by weight, sticky segment key and header rules, with optional shadow traffic.",
       extension=True),
    _f("routing_config_file_poll_wait_seconds", int, 0, _I,
       "Seconds between re-reads of --routing_config_file; 0 (or negative) reads it at startup and on SIGHUP only.",
       extension=True),
    _f("enable_admin_api", bool, False, _I,
       "Serve the management API under /v1/admin/ on the REST port: models, labels and routes changed live.",
       extension=True),
    _f("admin_token_file", str, "", _I,
       "File holding the bearer token the admin API requires (Authorization: Bearer <token>); needs "
       "--enable_admin_api.", extension=True),
    _f("admin_persist_config", bool, False, _I,
       "Write admin API changes back (atomically) to --model_config_file and --routing_config_file, so they "
       "survive a restart; needs --enable_admin_api and --model_config_file.", extension=True),
    _f("log_format", str, "text", _I,
       "How log lines on stderr look: 'text' (readable lines) or 'json' (one JSON object per line: timestamp, "
       "level, logger, event, message, and model and version where a line is about one).", extension=True),
    _f("enable_access_log", bool, False, _I,
       "Log one line per finished gRPC or REST model request (logger pyserving.access: entrypoint, API, model, "
       "version, status, latency in ms), written off the request thread; follows --log_format.",
       extension=True),
    _f("enable_tracing", bool, False, _I,
       "Trace every model request with OpenTelemetry (needs pip install 'pyserving[otel]'): a span per request "
       "with decode, queue, model run and encode children, parent from a W3C traceparent header or metadata; "
       "exporter from the standard OTEL_* variables (OTLP by default).", extension=True),
    # actions
    _f("version", bool, False, _I, "Print the versions and exit.", field="show_version"),
    _f("help", bool, False, _I, "Print this text and exit.", field="show_help"),
)

_BY_NAME: dict[str, FlagSpec] = {spec.name: spec for spec in FLAGS}


@dataclass(frozen=True, slots=True)
class ModelServerOptions:
    """The parsed command line. Field names are the flag names (units in the names:
    ``_ms`` milliseconds, ``_micros`` microseconds, ``_seconds`` seconds); see :data:`FLAGS`
    for each flag's meaning. LATER and NOT_APPLICABLE values are kept for completeness."""

    port: int = 8500
    grpc_socket_path: str = ""
    grpc_max_threads: int = 4 * _CPUS
    #: ``--grpc_channel_arguments`` parsed by :func:`parse_grpc_channel_arguments`.
    grpc_channel_arguments: tuple[ChannelArgument, ...] = ()
    enable_grpc_healthcheck_service: bool = False
    rest_api_port: int = 8501  # 0: REST off (TF Serving's default is 0)
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""  # as given; config_from_flags() makes it absolute
    file_system_poll_wait_seconds: int = 1
    allow_version_labels_for_unavailable_models: bool = False
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    #: ``--saved_model_tags`` split on commas, each tag stripped of surrounding blanks.
    saved_model_tags: tuple[str, ...] = ("serve",)
    enable_model_warmup: bool = True
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    monitoring_config_file: str = ""
    num_request_iterations_for_warmup: int = 0
    ssl_config_file: str = ""
    tensorflow_session_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    flush_filesystem_caches: bool = True
    platform_config_file: str = ""
    use_alts_credentials: bool = False
    remove_unused_fields_from_bundle_metagraph: bool = True
    prefer_tflite_model: bool = False
    num_tflite_pools: int = _CPUS
    num_tflite_interpreters_per_pool: int = 1
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    enable_profiler: bool = True
    thread_pool_factory_config_file: str = ""
    mixed_precision: str = ""
    skip_initialize_tpu: bool = False
    shutdown_grace_seconds: float = 5.0  # pyserving extension
    total_model_memory_limit_bytes: int = 0  # pyserving extension; 0: no limit
    routing_config_file: str = ""  # pyserving extension
    routing_config_file_poll_wait_seconds: int = 0  # pyserving extension
    enable_admin_api: bool = False  # pyserving extension
    admin_token_file: str = ""  # pyserving extension
    admin_persist_config: bool = False  # pyserving extension
    log_format: str = "text"  # pyserving extension: "text" | "json"
    enable_access_log: bool = False  # pyserving extension
    enable_tracing: bool = False  # pyserving extension
    show_version: bool = False  # --version: print version_text() and exit 0
    show_help: bool = False  # --help: print usage() and exit 0
    #: Names of the flags given on the command line (without ``--``).
    explicit_flags: frozenset[str] = field(default_factory=frozenset)
    #: Warning lines already logged while parsing (at most one: ignored flags).
    warnings: tuple[str, ...] = ()


_INT_RE = re.compile(r"\s*[+-]?\d+\s*")


def _convert(spec: FlagSpec, raw: str) -> FlagValue:
    def bad(expected: str) -> FlagError:
        return FlagError(f"invalid value for flag --{spec.name}: {raw!r} (expected {expected})")

    if spec.type is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise bad("true, false, 1 or 0")
    if spec.type is int:
        kind = f"a {spec.int_bits}-bit integer"
        if not _INT_RE.fullmatch(raw):
            raise bad(kind)
        value = int(raw)
        limit = 1 << (spec.int_bits - 1)
        if not -limit <= value < limit:
            raise bad(kind)
        return value
    if spec.type is float:
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or "_" in raw:
            raise bad("a finite number")
        return number
    return raw


def _unknown(arg: str, name: str) -> FlagError:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"; did you mean --{close[0]}?" if close else ""
    return FlagError(f"unknown flag {arg!r}{hint} (pyserving-model-server --help lists the flags)")


def parse_grpc_channel_arguments(text: str) -> list[ChannelArgument]:
    """``"k=v,k2=v2"`` -> ``[("k", v), ...]``; values that are 32-bit integers become ints.

    Empty entries (a trailing comma) are skipped; keys and values are stripped. An entry
    without ``=`` or with an empty key raises :class:`FlagError`. Only the first ``=`` splits
    (TF Serving drops everything after a second ``=``).
    """
    result: list[ChannelArgument] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, eq, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise FlagError(
                f"invalid value for flag --grpc_channel_arguments: entry {entry!r} of {text!r} "
                "(expected key=value)"
            )
        if _INT_RE.fullmatch(value) and -(1 << 31) <= int(value) < (1 << 31):
            result.append((key, int(value)))
        else:
            result.append((key, value))
    return result


def _split_tags(raw: str) -> tuple[str, ...]:
    tags = tuple(tag.strip() for tag in raw.split(","))
    if not all(tags):
        raise FlagError(
            f"invalid value for flag --saved_model_tags: {raw!r} (expected comma-separated non-empty tags)"
        )
    return tags


def _tokenize(argv: Sequence[str]) -> tuple[dict[str, FlagValue], list[str]]:
    """Flag name -> converted value (last occurrence wins), and names in order of appearance."""
    values: dict[str, FlagValue] = {}
    order: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            raise FlagError(f"unexpected argument {arg!r} (flags are written --name=value or --name value)")
        name, eq, raw = arg[2:].partition("=")
        spec = _BY_NAME.get(name)
        if spec is None:
            raise _unknown(arg, name)
        if spec.alias_of:  # one value per field: the flag it stands for, last occurrence wins
            name, spec = spec.alias_of, _BY_NAME[spec.alias_of]
        if spec.type is bool:
            value = _convert(spec, raw) if eq else True
        else:
            if not eq:
                if i >= len(argv) or argv[i].startswith("--"):
                    raise FlagError(f"flag --{name} needs a value (--{name}=VALUE or --{name} VALUE)")
                raw = argv[i]
                i += 1
            value = _convert(spec, raw)
        values[name] = value
        if name not in order:
            order.append(name)
    return values, order


def _validate(opts: ModelServerOptions) -> None:
    """TF Serving's startup checks (its messages), then pyserving's stricter ranges."""
    for name in ("port", "rest_api_port"):
        port = getattr(opts, name)
        if not 0 <= port <= 65535:
            raise FlagError(f"--{name} must be in 0..65535, got {port}")
    if opts.port == 0 and not opts.grpc_socket_path:
        raise FlagError(
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."
        )
    if not opts.model_base_path and not opts.model_config_file:
        raise FlagError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    if opts.batching_parameters_file and not opts.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if (
        opts.tensorflow_intra_op_parallelism > 0
        and opts.tensorflow_inter_op_parallelism > 0
        and opts.tensorflow_session_parallelism > 0
    ):
        raise FlagError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
        )
    if opts.rest_api_port != 0 and opts.rest_api_port == opts.port:
        raise FlagError(
            f"--rest_api_port cannot be the same as --port (both {opts.port}); "
            "use a different port for HTTP/REST or --rest_api_port=0 to turn REST off"
        )
    for name, lowest in (
        ("rest_api_num_threads", 1),
        ("grpc_max_threads", 1),
        ("num_load_threads", 0),
        ("num_unload_threads", 0),
        ("max_num_load_retries", 0),
    ):
        value = getattr(opts, name)
        if value < lowest:
            raise FlagError(f"--{name} must be >= {lowest}, got {value}")
    if opts.shutdown_grace_seconds < 0:
        raise FlagError(f"--shutdown_grace_seconds must be >= 0, got {_show(opts.shutdown_grace_seconds)}")
    if (opts.admin_token_file or opts.admin_persist_config) and not opts.enable_admin_api:
        which = "--admin_token_file" if opts.admin_token_file else "--admin_persist_config"
        raise FlagError(f"{which} is set without --enable_admin_api")
    if opts.admin_persist_config and not opts.model_config_file:
        raise FlagError(
            "--admin_persist_config needs --model_config_file: admin changes are written back to that file"
        )
    if opts.monitoring_config_file and not opts.rest_api_port:
        raise FlagError("--monitoring_config_file needs the REST port (--rest_api_port > 0): metrics are served there")
    if opts.enable_admin_api and not opts.rest_api_port:
        raise FlagError("--enable_admin_api needs the REST port (--rest_api_port > 0): the admin API is REST")
    if opts.log_format not in LOG_FORMATS:
        raise FlagError(
            f"invalid value for flag --log_format: {opts.log_format!r} (expected one of {', '.join(LOG_FORMATS)})"
        )
    if opts.total_model_memory_limit_bytes < 0:
        raise FlagError(
            f"--total_model_memory_limit_bytes must be >= 0 (0 = no limit), got {opts.total_model_memory_limit_bytes}"
        )


def parse_model_server_args(argv: Sequence[str]) -> ModelServerOptions:
    """Parse ``argv`` (program name excluded) into :class:`ModelServerOptions`.

    Raises :class:`FlagError` for an unknown flag, a stray argument, a bad value, a failed
    startup check or a LATER flag set to a non-default value (after the other checks, so
    TF Serving's own messages come first). Logs one warning naming every NOT_APPLICABLE flag
    given. With ``--help``/``--version`` only the syntax is checked.
    """
    values, order = _tokenize(list(argv))
    kwargs: dict[str, object] = {_BY_NAME[name].option: value for name, value in values.items()}
    if "saved_model_tags" in kwargs:
        kwargs["saved_model_tags"] = _split_tags(str(kwargs["saved_model_tags"]))
    if "grpc_channel_arguments" in kwargs:
        kwargs["grpc_channel_arguments"] = tuple(parse_grpc_channel_arguments(str(kwargs["grpc_channel_arguments"])))
    opts = ModelServerOptions(**kwargs, explicit_flags=frozenset(order))  # type: ignore[arg-type]
    if opts.show_help or opts.show_version:
        return opts
    _validate(opts)
    later = [
        f"--{name}={_show(values[name])} ({_BY_NAME[name].feature})"
        for name in order
        if _BY_NAME[name].status is _L and values[name] != _BY_NAME[name].default
    ]
    if later:
        raise FlagError(
            "not supported yet: " + ", ".join(later) + "; remove these flags or leave them at their defaults"
        )
    ignored = [f"--{name}" for name in order if _BY_NAME[name].status is _NA]
    if not ignored:
        return opts
    line = "Ignoring flags that do not apply to pyserving: " + ", ".join(ignored)
    _log.warning("%s", line)
    return dataclasses.replace(opts, warnings=(line,))


def _show(value: FlagValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def usage(program: str = "pyserving-model-server") -> str:
    """Every flag with its default and status, for ``--help``."""
    lines = [
        f"usage: {program} --model_base_path=PATH | --model_config_file=FILE [--flag=value ...]",
        "",
        "TensorFlow Serving's tensorflow_model_server flags, then pyserving's own ('pyserving extension').",
        "Status: 'implemented'; 'later: <feature>' (only the default is accepted until the feature",
        "lands); 'not applicable' (accepted, ignored with a warning). Values: --name=value or",
        "--name value; booleans --name or --name=true|false.",
        "",
    ]
    for spec in FLAGS:
        kind = "bool" if spec.type is bool else f"int{spec.int_bits}" if spec.type is int else spec.type.__name__
        if spec.default_text:
            default = spec.default_text
        else:
            default = repr(spec.default) if spec.type is str else _show(spec.default)
        status = f"later: {spec.feature}" if spec.status is _L else spec.status.value
        if spec.extension:
            status += ", pyserving extension"
        lines.append(f"  --{spec.name}  ({kind}, default: {default}; {status})")
        note = spec.help
        if spec.tf_default != spec.default and not spec.default_text:
            note += f" [TF Serving default: {_show(spec.tf_default)}]"
        lines.append(f"      {note}")
    return "\n".join(lines) + "\n"


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_text() -> str:
    """What ``--version`` prints. Reads package metadata only; never imports TensorFlow."""
    ours = _distribution_version("pyserving")
    if ours is None:
        import pyserving

        ours = getattr(pyserving, "__version__", "unknown")
    tf = _distribution_version(
        "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly"
    )
    return f"TensorFlow ModelServer: {ours}-pyserving\nTensorFlow Library: {tf or 'not installed'}"


def docker_argv(environ: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """TF Serving's Docker entrypoint: ``--port=8500 --rest_api_port=8501
    --model_name=$MODEL_NAME --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME`` then ``extra``
    (the container's arguments, which win because the last occurrence of a flag wins).
    ``MODEL_NAME`` defaults to ``model`` and ``MODEL_BASE_PATH`` to ``/models``."""
    name = environ.get("MODEL_NAME", "model")
    base = environ.get("MODEL_BASE_PATH", "/models")
    return [
        "--port=8500",
        "--rest_api_port=8501",
        f"--model_name={name}",
        f"--model_base_path={base}/{name}",
        *extra,
    ]
