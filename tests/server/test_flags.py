"""Tests for pyserving.server.flags: TF Serving's tensorflow_model_server flags."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys

import pytest

from pyserving.servable.errors import Code, InvalidArgumentError
from pyserving.server import flags
from pyserving.server.flags import (
    FLAGS,
    FlagError,
    FlagStatus,
    ModelServerOptions,
    docker_argv,
    parse_grpc_channel_arguments,
    parse_model_server_args,
    usage,
    version_text,
)

BASE = ["--model_base_path=/models/m"]
CPUS_X4 = object()  # TF Serving's "4 x schedulable CPUs" default
CPUS = object()

#: Every flag of TF Serving's model_servers/main.cc with its default (server.h / main.cc).
TF_SERVING_FLAGS = {
    "port": 8500,
    "grpc_socket_path": "",
    "rest_api_port": 0,
    "rest_api_num_threads": CPUS_X4,
    "rest_api_timeout_in_ms": 30000,
    "rest_api_enable_cors_support": False,
    "enable_batching": False,
    "allow_version_labels_for_unavailable_models": False,
    "batching_parameters_file": "",
    "enable_per_model_batching_parameters": False,
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "model_name": "default",
    "model_base_path": "",
    "num_load_threads": 0,
    "num_unload_threads": 0,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "file_system_poll_wait_seconds": 1,
    "flush_filesystem_caches": True,
    "tensorflow_session_parallelism": 0,
    "tensorflow_session_config_file": "",
    "tensorflow_intra_op_parallelism": 0,
    "tensorflow_inter_op_parallelism": 0,
    "use_alts_credentials": False,
    "ssl_config_file": "",
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": 0.0,
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "",
    "grpc_max_threads": CPUS_X4,
    "enable_model_warmup": True,
    "num_request_iterations_for_warmup": 0,
    "version": False,
    "monitoring_config_file": "",
    "remove_unused_fields_from_bundle_metagraph": True,
    "prefer_tflite_model": False,
    "num_tflite_pools": CPUS,
    "num_tflite_interpreters_per_pool": 1,
    "enable_signature_method_name_check": False,
    "xla_cpu_compilation_enabled": False,
    "xla_gpu_compilation_enabled": False,
    "enable_profiler": True,
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": False,
    "enable_grpc_healthcheck_service": False,
    "enable_serialization_as_tensor_content": False,
}

#: pyserving's own flags (TF Serving has none of these), with their defaults.
EXTENSION_FLAGS = {
    "shutdown_grace_seconds": 5.0,
    "total_model_memory_limit_bytes": 0,
    "enable_per_model_batching_params": False,  # alias of --enable_per_model_batching_parameters
    "routing_config_file": "",
    "routing_config_file_poll_wait_seconds": 0,
    "enable_admin_api": False,
    "admin_token_file": "",
    "admin_persist_config": False,
    "log_format": "text",
    "enable_access_log": False,
    "enable_tracing": False,
}

#: Implemented flags: (raw value, parsed field value).
IMPLEMENTED_SAMPLES = {
    "port": ("9000", 9000),
    "grpc_socket_path": ("/tmp/grpc.sock", "/tmp/grpc.sock"),
    "grpc_max_threads": ("7", 7),
    "grpc_channel_arguments": ("grpc.max_connection_age_ms=2000,a=b", (("grpc.max_connection_age_ms", 2000), ("a", "b"))),
    "rest_api_port": ("9001", 9001),
    "rest_api_num_threads": ("3", 3),
    "rest_api_timeout_in_ms": ("1500", 1500),
    "model_config_file": ("/etc/models.config", "/etc/models.config"),
    "model_config_file_poll_wait_seconds": ("60", 60),
    "model_name": ("mnist", "mnist"),
    "model_base_path": ("/models/mnist", "/models/mnist"),
    "file_system_poll_wait_seconds": ("-1", -1),
    "num_load_threads": ("2", 2),
    "num_unload_threads": ("3", 3),
    "max_num_load_retries": ("0", 0),
    "load_retry_interval_micros": ("-5", -5),
    "saved_model_tags": ("serve,gpu", ("serve", "gpu")),
    "tensorflow_session_parallelism": ("4", 4),
    "tensorflow_intra_op_parallelism": ("2", 2),
    "tensorflow_inter_op_parallelism": ("6", 6),
    "shutdown_grace_seconds": ("0.5", 0.5),
    "total_model_memory_limit_bytes": ("9000000000", 9_000_000_000),
    "routing_config_file": ("/r.config", "/r.config"),
    "num_request_iterations_for_warmup": ("3", 3),
    "ssl_config_file": ("/ssl.pbtxt", "/ssl.pbtxt"),
    "monitoring_config_file": ("/m.pbtxt", "/m.pbtxt"),
    "routing_config_file_poll_wait_seconds": ("3", 3),
    "admin_token_file": ("/token", "/token"),
    "batching_parameters_file": ("/b.pbtxt", "/b.pbtxt"),
    "log_format": ("json", "json"),
}
BOOL_IMPLEMENTED = [
    "rest_api_enable_cors_support",
    "enable_grpc_healthcheck_service",
    "allow_version_labels_for_unavailable_models",
    "enable_model_warmup",
    "enable_batching",
    "enable_per_model_batching_parameters",
    "enable_per_model_batching_params",
    "enable_admin_api",
    "admin_persist_config",
    "enable_access_log",
    "enable_tracing",
]
LATER_SAMPLES = {
    "tensorflow_session_config_file": "/s.pbtxt",
    "per_process_gpu_memory_fraction": "0.5",
    "enable_signature_method_name_check": "true",
    "enable_serialization_as_tensor_content": "true",
}


def spec(name: str) -> flags.FlagSpec:
    return next(s for s in FLAGS if s.name == name)


def error_of(argv: list[str]) -> str:
    with pytest.raises(FlagError) as info:
        parse_model_server_args(argv)
    return str(info.value)


# --- the table ------------------------------------------------------------------------


def test_table_lists_every_tf_serving_flag_with_its_default() -> None:
    names = {s.name for s in FLAGS}
    assert names == set(TF_SERVING_FLAGS) | set(EXTENSION_FLAGS) | {"help"}
    assert len(names) == len(FLAGS)
    cpus = flags._CPUS
    for name, tf_default in TF_SERVING_FLAGS.items():
        expected = 4 * cpus if tf_default is CPUS_X4 else cpus if tf_default is CPUS else tf_default
        assert spec(name).tf_default == expected, name
        assert type(spec(name).tf_default) is spec(name).type, name
        assert not spec(name).extension, name


def test_extension_flags_are_marked_implemented_and_validated() -> None:
    assert {s.name for s in FLAGS if s.extension} == set(EXTENSION_FLAGS)
    for name, default in EXTENSION_FLAGS.items():
        assert spec(name).status is FlagStatus.IMPLEMENTED and spec(name).default == default, name
        assert f"--{name}  (" in usage() and "implemented, pyserving extension)" in usage()
    assert spec("total_model_memory_limit_bytes").int_bits == 64
    assert error_of(BASE + ["--shutdown_grace_seconds=-0.5"]) == "--shutdown_grace_seconds must be >= 0, got -0.5"
    assert error_of(BASE + ["--total_model_memory_limit_bytes=-1"]) == (
        "--total_model_memory_limit_bytes must be >= 0 (0 = no limit), got -1")
    assert "expected a finite number" in error_of(BASE + ["--shutdown_grace_seconds=nan"])
    assert parse_model_server_args(BASE + ["--shutdown_grace_seconds=0"]).shutdown_grace_seconds == 0.0


def test_only_rest_api_port_default_differs_from_tf_serving() -> None:
    differing = {s.name: (s.default, s.tf_default) for s in FLAGS if s.default != s.tf_default}
    assert differing == {"rest_api_port": (8501, 0)}


def test_statuses() -> None:
    implemented = {s.name for s in FLAGS if s.status is FlagStatus.IMPLEMENTED}
    assert implemented == set(IMPLEMENTED_SAMPLES) | set(BOOL_IMPLEMENTED) | {"version", "help"}
    assert {s.name for s in FLAGS if s.status is FlagStatus.LATER} == set(LATER_SAMPLES)
    assert all(s.feature for s in FLAGS if s.status is FlagStatus.LATER)
    for name in ("platform_config_file", "skip_initialize_tpu", "prefer_tflite_model", "use_alts_credentials",
                 "xla_cpu_compilation_enabled", "mixed_precision", "enable_profiler",
                 "thread_pool_factory_config_file"):
        assert spec(name).status is FlagStatus.NOT_APPLICABLE


def test_options_fields_match_table_and_defaults() -> None:
    field_names = {f.name for f in dataclasses.fields(ModelServerOptions)}
    assert field_names == {s.option for s in FLAGS} | {"explicit_flags", "warnings"}
    defaults = ModelServerOptions()
    for s in FLAGS:
        value = getattr(defaults, s.option)
        if s.name == "saved_model_tags":
            assert value == ("serve",)
        elif s.name == "grpc_channel_arguments":
            assert value == ()
        else:
            assert value == s.default and type(value) is s.type, s.name


def test_defaults() -> None:
    opts = parse_model_server_args(BASE)
    assert dataclasses.replace(opts, model_base_path="", explicit_flags=frozenset()) == ModelServerOptions()
    assert opts.port == 8500 and opts.rest_api_port == 8501 and opts.model_name == "default"
    assert opts.enable_model_warmup is True and opts.saved_model_tags == ("serve",)
    assert opts.explicit_flags == {"model_base_path"} and opts.warnings == ()


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_model_server_args(BASE).port = 1  # type: ignore[misc]


# --- syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMPLEMENTED_SAMPLES))
def test_implemented_flag_both_forms(name: str) -> None:
    raw, expected = IMPLEMENTED_SAMPLES[name]
    extra = [] if name in ("model_base_path", "model_config_file") else BASE
    if name == "batching_parameters_file":
        extra = extra + ["--enable_batching"]  # TF Serving's check: the file needs --enable_batching
    if name == "admin_token_file":
        extra = extra + ["--enable_admin_api"]
    for argv in ([f"--{name}={raw}"], [f"--{name}", raw]):
        opts = parse_model_server_args(extra + argv)
        assert getattr(opts, spec(name).option) == expected
        assert name in opts.explicit_flags


@pytest.mark.parametrize("name", BOOL_IMPLEMENTED)
def test_bool_forms(name: str) -> None:
    forms = {"": True, "=true": True, "=TRUE": True, "=True": True, "=1": True,
             "=false": False, "=FALSE": False, "=0": False}
    # --admin_persist_config needs the admin API and a config file to write back to
    base = BASE + ["--enable_admin_api", "--model_config_file=/m.config"] if name == "admin_persist_config" else BASE
    for suffix, expected in forms.items():
        assert getattr(parse_model_server_args(base + [f"--{name}{suffix}"]), spec(name).option) is expected, suffix


def test_bad_bool_values() -> None:
    message = error_of(BASE + ["--rest_api_enable_cors_support=yes"])
    assert message == ("invalid value for flag --rest_api_enable_cors_support: 'yes' "
                       "(expected true, false, 1 or 0)")
    # A boolean never takes the next argument as its value.
    assert "unexpected argument 'true'" in error_of(BASE + ["--rest_api_enable_cors_support", "true"])


def test_bad_int_values_name_flag_and_value() -> None:
    assert error_of(BASE + ["--port=abc"]) == "invalid value for flag --port: 'abc' (expected a 32-bit integer)"
    assert error_of(BASE + ["--port", "1.5"]) == "invalid value for flag --port: '1.5' (expected a 32-bit integer)"
    assert "'1_000'" in error_of(BASE + ["--port=1_000"])
    assert error_of(BASE + ["--port=70000"]) == "--port must be in 0..65535, got 70000"
    assert error_of(BASE + ["--port=-1"]) == "--port must be in 0..65535, got -1"
    assert error_of(BASE + ["--rest_api_port=65536"]) == "--rest_api_port must be in 0..65535, got 65536"
    assert "expected a 32-bit integer" in error_of(BASE + ["--port=2147483648"])
    assert "expected a 64-bit integer" in error_of(BASE + ["--load_retry_interval_micros=9223372036854775808"])
    opts = parse_model_server_args(BASE + ["--load_retry_interval_micros=9223372036854775807"])
    assert opts.load_retry_interval_micros == 2**63 - 1


def test_bad_float_value() -> None:
    for raw in ("abc", "nan", "inf", "1_0"):
        message = error_of(BASE + [f"--per_process_gpu_memory_fraction={raw}"])
        assert message == f"invalid value for flag --per_process_gpu_memory_fraction: {raw!r} (expected a finite number)"


def test_unknown_flag_is_an_error() -> None:
    message = error_of(BASE + ["--prot=8500"])
    assert "unknown flag '--prot=8500'" in message and "did you mean --port?" in message
    assert "unknown flag '--no_such_flag'" in error_of(BASE + ["--no_such_flag"])


def test_stray_arguments_are_errors() -> None:
    assert "unexpected argument 'extra'" in error_of(BASE + ["extra"])
    assert "unexpected argument '-port=8500'" in error_of(BASE + ["-port=8500"])
    assert "unexpected argument '--'" in error_of(BASE + ["--"])


def test_missing_value() -> None:
    assert error_of(BASE + ["--port"]) == "flag --port needs a value (--port=VALUE or --port VALUE)"
    assert "flag --model_name needs a value" in error_of(BASE + ["--model_name", "--port=1"])


def test_negative_and_empty_values() -> None:
    opts = parse_model_server_args(BASE + ["--file_system_poll_wait_seconds", "-1", "--grpc_socket_path="])
    assert opts.file_system_poll_wait_seconds == -1 and opts.grpc_socket_path == ""


def test_last_occurrence_wins() -> None:
    opts = parse_model_server_args(BASE + ["--port=1", "--port", "2", "--model_name=a", "--model_name=b"])
    assert (opts.port, opts.model_name) == (2, "b")


def test_docker_argv_then_user_flags() -> None:
    argv = docker_argv({}, ["--rest_api_port=9000"])
    assert argv[:4] == ["--port=8500", "--rest_api_port=8501", "--model_name=model",
                        "--model_base_path=/models/model"]
    opts = parse_model_server_args(argv)
    assert (opts.port, opts.rest_api_port, opts.model_name, opts.model_base_path) == (8500, 9000, "model",
                                                                                      "/models/model")
    env = {"MODEL_NAME": "half", "MODEL_BASE_PATH": "/srv"}
    assert parse_model_server_args(docker_argv(env)).model_base_path == "/srv/half"


def test_saved_model_tags() -> None:
    assert parse_model_server_args(BASE + ["--saved_model_tags=serve, tpu"]).saved_model_tags == ("serve", "tpu")
    assert error_of(BASE + ["--saved_model_tags=serve,"]) == (
        "invalid value for flag --saved_model_tags: 'serve,' (expected comma-separated non-empty tags)")
    assert error_of(BASE + ["--saved_model_tags="]) == (
        "invalid value for flag --saved_model_tags: '' (expected comma-separated non-empty tags)")


def test_flag_error_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_model_server_args(["--port=x"])
    assert info.value.code is Code.INVALID_ARGUMENT and isinstance(info.value, FlagError)


# --- validation -------------------------------------------------------------------------


def test_grpc_port_or_socket_required() -> None:
    assert error_of(BASE + ["--port=0"]) == (
        "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
    opts = parse_model_server_args(BASE + ["--port=0", "--grpc_socket_path=/tmp/s.sock"])
    assert opts.port == 0 and opts.grpc_socket_path == "/tmp/s.sock"


def test_model_source_required() -> None:
    message = "Both server_options.model_base_path and server_options.model_config_file are empty!"
    assert error_of([]) == message
    assert error_of(["--model_name=x"]) == message
    assert parse_model_server_args(["--model_config_file=/c"]).model_config_file == "/c"


def test_all_three_parallelism_flags_rejected() -> None:
    message = error_of(BASE + ["--tensorflow_session_parallelism=1", "--tensorflow_intra_op_parallelism=2",
                               "--tensorflow_inter_op_parallelism=3"])
    assert message == (
        "Either configure server_options.tensorflow_session_parallelism or "
        "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
        "separately. You cannot configure all.")
    opts = parse_model_server_args(BASE + ["--tensorflow_session_parallelism=1",
                                           "--tensorflow_intra_op_parallelism=2"])
    assert (opts.tensorflow_session_parallelism, opts.tensorflow_intra_op_parallelism) == (1, 2)


def test_batching_parameters_file_without_enable_batching() -> None:
    assert error_of(BASE + ["--batching_parameters_file=/b.pbtxt"]) == (
        "server_options.batching_parameters_file is set without setting server_options.enable_batching to true.")
    opts = parse_model_server_args(BASE + ["--enable_batching", "--batching_parameters_file=/b.pbtxt"])
    assert opts.enable_batching is True and opts.batching_parameters_file == "/b.pbtxt"


def test_per_model_batching_alias_sets_the_same_field_last_one_wins() -> None:
    assert spec("enable_per_model_batching_params").option == "enable_per_model_batching_parameters"
    opts = parse_model_server_args(BASE + ["--enable_batching", "--enable_per_model_batching_params"])
    assert opts.enable_per_model_batching_parameters is True
    assert "enable_per_model_batching_parameters" in opts.explicit_flags
    opts = parse_model_server_args(BASE + ["--enable_per_model_batching_params=true",
                                           "--enable_per_model_batching_parameters=false"])
    assert opts.enable_per_model_batching_parameters is False
    opts = parse_model_server_args(BASE + ["--enable_per_model_batching_parameters=false",
                                           "--enable_per_model_batching_params"])
    assert opts.enable_per_model_batching_parameters is True


def test_rest_port_equal_to_grpc_port() -> None:
    assert error_of(BASE + ["--port=9000", "--rest_api_port=9000"]) == (
        "--rest_api_port cannot be the same as --port (both 9000); use a different port for HTTP/REST "
        "or --rest_api_port=0 to turn REST off")
    assert parse_model_server_args(BASE + ["--rest_api_port=0"]).rest_api_port == 0
    assert parse_model_server_args(BASE + ["--port=0", "--rest_api_port=0", "--grpc_socket_path=s"]).port == 0


@pytest.mark.parametrize(
    ("name", "value", "lowest"),
    [("rest_api_num_threads", 0, 1), ("grpc_max_threads", 0, 1), ("num_load_threads", -1, 0),
     ("num_unload_threads", -1, 0), ("max_num_load_retries", -1, 0)],
)
def test_thread_and_retry_counts(name: str, value: int, lowest: int) -> None:
    assert error_of(BASE + [f"--{name}={value}"]) == f"--{name} must be >= {lowest}, got {value}"


# --- LATER and NOT_APPLICABLE -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LATER_SAMPLES))
def test_later_flag_rejected_when_not_default(name: str) -> None:
    raw = LATER_SAMPLES[name]
    argv = BASE + [f"--{name}={raw}"]
    if name == "batching_parameters_file":
        argv.append("--enable_batching")  # else TF Serving's own check fires first
    message = error_of(argv)
    assert message.startswith("not supported yet: ")
    assert f"--{name}={raw} ({spec(name).feature})" in message


@pytest.mark.parametrize("name", sorted(LATER_SAMPLES))
def test_later_flag_accepted_at_its_default(name: str) -> None:
    default = spec(name).default
    raw = str(default).lower() if isinstance(default, bool) else str(default)
    opts = parse_model_server_args(BASE + [f"--{name}={raw}"])
    assert getattr(opts, name) == default and name in opts.explicit_flags


def test_enable_model_warmup_is_exposed_both_ways() -> None:
    assert parse_model_server_args(BASE + ["--enable_model_warmup=true"]).enable_model_warmup is True
    assert parse_model_server_args(BASE + ["--enable_model_warmup=false"]).enable_model_warmup is False


def _flag_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pyserving.server.flags" and r.levelno == logging.WARNING]


def test_not_applicable_flags_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyserving.server.flags")
    opts = parse_model_server_args(BASE + ["--enable_profiler=false", "--skip_initialize_tpu",
                                           "--num_tflite_pools=2", "--platform_config_file=/p",
                                           "--enable_profiler=true"])
    records = _flag_warnings(caplog)
    assert len(records) == 1
    line = ("Ignoring flags that do not apply to pyserving: --enable_profiler, --skip_initialize_tpu, "
            "--num_tflite_pools, --platform_config_file")
    assert records[0].getMessage() == line and opts.warnings == (line,)
    assert opts.num_tflite_pools == 2 and opts.platform_config_file == "/p"


def test_no_warning_without_not_applicable_flags(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyserving.server.flags")
    assert parse_model_server_args(BASE + ["--port=9000"]).warnings == ()
    assert _flag_warnings(caplog) == []


# --- help, version, usage ------------------------------------------------------------------


def test_help_and_version_skip_validation() -> None:
    assert parse_model_server_args(["--help"]).show_help is True
    assert parse_model_server_args(["--version"]).show_version is True
    assert parse_model_server_args(["--version", "--enable_batching", "--port=0"]).show_version is True
    with pytest.raises(FlagError):  # syntax is still checked
        parse_model_server_args(["--version", "--port=abc"])


def test_usage_lists_every_flag_with_default_and_status() -> None:
    text = usage()
    for s in FLAGS:
        assert f"--{s.name}  (" in text, s.name
    assert "--port  (int32, default: 8500; implemented)" in text
    assert "--rest_api_port  (int32, default: 8501; implemented)" in text
    assert "[TF Serving default: 0]" in text
    assert "--enable_batching  (bool, default: false; implemented)" in text
    assert "--tensorflow_session_config_file  (str, default: ''; later: session config)" in text
    assert "--model_name  (str, default: 'default'; implemented)" in text
    assert "--skip_initialize_tpu  (bool, default: false; not applicable)" in text
    assert "--load_retry_interval_micros  (int64, default: 60000000; implemented)" in text
    assert f"4 x schedulable CPUs ({4 * flags._CPUS})" in text


def test_version_text() -> None:
    text = version_text()
    assert re.fullmatch(r"TensorFlow ModelServer: \S+-pyserving\nTensorFlow Library: \S+", text), text


def test_imports_stay_light() -> None:
    code = (
        "import sys\n"
        "from pyserving.server import flags, model_config\n"
        "flags.version_text()\n"
        "flags.parse_model_server_args(['--model_base_path=/m'])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grpc', 'tensorflow_serving')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- grpc channel arguments ----------------------------------------------------------------


def test_parse_grpc_channel_arguments() -> None:
    assert parse_grpc_channel_arguments("") == []
    assert parse_grpc_channel_arguments("grpc.max_connection_age_ms=2000,grpc.primary_user_agent=me") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "me")]
    assert parse_grpc_channel_arguments(" a = -3 , b=2147483648,c=x=y,") == [("a", -3), ("b", "2147483648"),
                                                                           ("c", "x=y")]
    assert parse_grpc_channel_arguments("a=") == [("a", "")]


@pytest.mark.parametrize("text", ["novalue", "=5", "a=1,b"])
def test_bad_grpc_channel_arguments(text: str) -> None:
    with pytest.raises(FlagError, match=re.escape(f"of {text!r} (expected key=value)")):
        parse_grpc_channel_arguments(text)
    assert "--grpc_channel_arguments" in error_of(BASE + [f"--grpc_channel_arguments={text}"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--admin_token_file=/tmp/t"], "--admin_token_file is set without --enable_admin_api"),
        (["--admin_persist_config"], "--admin_persist_config is set without --enable_admin_api"),
        (["--enable_admin_api", "--admin_persist_config"], "--admin_persist_config needs --model_config_file"),
        (["--enable_admin_api", "--rest_api_port=0"], "--enable_admin_api needs the REST port"),
    ],
)
def test_admin_flags_need_each_other(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=re.escape(message)):
        parse_model_server_args(["--model_base_path=/m", *argv])


def test_routing_and_admin_flags_parse() -> None:
    options = parse_model_server_args([
        "--model_config_file=/m.config", "--routing_config_file=/r.config", "--routing_config_file_poll_wait_seconds=2",
        "--enable_admin_api", "--admin_token_file=/t", "--admin_persist_config=true",
    ])
    assert options.routing_config_file == "/r.config"
    assert options.routing_config_file_poll_wait_seconds == 2
    assert options.enable_admin_api and options.admin_persist_config
    assert options.admin_token_file == "/t"


def test_log_format_values() -> None:
    assert parse_model_server_args(BASE).log_format == "text"
    assert parse_model_server_args(BASE + ["--log_format", "json"]).log_format == "json"
    assert error_of(BASE + ["--log_format=xml"]) == (
        "invalid value for flag --log_format: 'xml' (expected one of text, json)")
    assert "--log_format  (str, default: 'text'; implemented, pyserving extension)" in usage()
    assert "--enable_access_log  (bool, default: false; implemented, pyserving extension)" in usage()
