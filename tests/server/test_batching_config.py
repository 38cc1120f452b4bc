"""Tests of the batching configuration: TF Serving's BatchingParameters text files
(pyserving.loaders.batching_params), the flags -> BatchingConfig step
(pyserving.server.batching_config) and the generated proto module."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pyserving.loaders.batching import BatchingConfig
from pyserving.loaders.batching_params import (
    BatchingParameters,
    parse_batching_parameters,
    read_batching_parameters,
    schedulable_cpus,
)
from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.batching_config import batching_config_from_flags, default_batching_parameters
from pyserving.server.flags import parse_model_server_args
from pyserving.server.main import settings_from_flags

ROOT = Path(__file__).resolve().parents[2]

#: TF Serving's documented example (doc:serving_config).
TF_SERVING_EXAMPLE = """
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""


def test_tf_serving_example_file_parses() -> None:
    params = parse_batching_parameters(TF_SERVING_EXAMPLE)
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches,
            params.num_batch_threads) == (128, 0, 1_000_000, 8)
    assert params.allowed_batch_sizes == () and params.pad_variable_length_inputs is False


def test_every_field_parses() -> None:
    params = parse_batching_parameters(
        """
        # comments and any field order are fine
        thread_pool_name { value: "my_pool" }
        allowed_batch_sizes: 8
        allowed_batch_sizes: [16, 64]
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 16 }
        max_batch_size { value: 64 }
        batch_timeout_micros { value: 2500 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        """
    )
    assert params == BatchingParameters(
        max_batch_size=64, batch_timeout_micros=2500, max_enqueued_batches=3, num_batch_threads=2,
        thread_pool_name="my_pool", allowed_batch_sizes=(8, 16, 64), pad_variable_length_inputs=True,
        enable_large_batch_splitting=True, max_execution_batch_size=16,
    )
    options = params.queue_options()
    assert options.execution_limit == 16 and options.padded_size(9) == 16


def test_omitted_fields_take_tf_serving_defaults() -> None:
    params = parse_batching_parameters("")
    assert params == BatchingParameters()
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches) == (1000, 0, 10)
    assert params.num_batch_threads == schedulable_cpus() and params.thread_pool_name == "batch_threads"
    assert params.enable_large_batch_splitting is False and params.max_execution_batch_size is None
    assert params.queue_options().execution_limit == 1000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 128 } allowed_batch_sizes: [32, 64]",
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; expected 128"),
        ("allowed_batch_sizes: [32, 64]",  # max_batch_size omitted: TF Serving's default 1000
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; expected 1000"),
        ("max_batch_size { value: 64 } allowed_batch_sizes: [32, 16, 64]",
         "allowed_batch_sizes entries must be monotonically increasing, got [32, 16, 64]"),
        ("max_batch_size { value: 0 }", "max_batch_size must be an int >= 1, got 0"),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches must be an int >= 1, got 0"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be an int >= 0, got -1"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be an int >= 1, got 0"),
        ("thread_pool_name { value: '' }", "thread_pool_name must be a non-empty string, got ''"),
        ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } max_execution_batch_size { value: 9 }",
         "max_execution_batch_size must be <= max_batch_size (8), got 9"),
    ],
)
def test_invalid_parameters_name_the_file_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_batching_parameters(text, "/etc/batching.txt")
    assert info.value.message == f"Invalid batching parameters in /etc/batching.txt: {message}"


def test_syntax_errors_and_unknown_fields() -> None:
    with pytest.raises(InvalidArgumentError, match=r"Cannot parse batching parameters in f.txt: .*max_batch"):
        parse_batching_parameters("max_batch_size: 12", "f.txt")  # a wrapper needs { value: N }
    with pytest.raises(InvalidArgumentError, match=r"Cannot parse batching parameters in f.txt: .*no_such_field"):
        parse_batching_parameters("no_such_field { value: 1 }", "f.txt")


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(TF_SERVING_EXAMPLE)
    assert read_batching_parameters(path).max_batch_size == 128
    with pytest.raises(NotFoundError, match=f"Cannot read batching parameters file {tmp_path / 'missing.txt'}"):
        read_batching_parameters(tmp_path / "missing.txt")


# --- flags -> config ---------------------------------------------------------------------------------


def test_no_batching_without_the_flag(caplog: pytest.LogCaptureFixture) -> None:
    assert batching_config_from_flags(False) is None
    caplog.set_level(logging.WARNING, logger="pyserving.server.batching_config")
    assert batching_config_from_flags(False, per_model=True) is None
    assert "has no effect without --enable_batching" in caplog.text


def test_enable_batching_alone_uses_documented_defaults() -> None:
    config = batching_config_from_flags(True)
    assert isinstance(config, BatchingConfig) and not config.per_model
    assert config.parameters == default_batching_parameters()
    p = config.parameters
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches) == (1000, 0, 64)
    assert p.enable_large_batch_splitting and p.max_execution_batch_size == 32
    assert p.num_batch_threads == schedulable_cpus() and p.thread_pool_name == "model_server_batch_threads"
    assert config.scheduler.num_batch_threads == p.num_batch_threads and config.scheduler.name == p.thread_pool_name
    assert config.scheduler.thread_count == 0  # threads start with the first batched model


def test_parameters_file_and_per_model(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(TF_SERVING_EXAMPLE + 'thread_pool_name { value: "pool" }')
    config = batching_config_from_flags(True, str(path), per_model=True)
    assert config is not None and config.per_model
    assert config.parameters.max_batch_size == 128
    assert (config.scheduler.num_batch_threads, config.scheduler.name) == (8, "pool")
    version = tmp_path / "1"
    version.mkdir()
    assert config.parameters_for(version) is None
    (version / "batching_params.pbtxt").write_text("max_batch_size { value: 4 } num_batch_threads { value: 99 }")
    assert config.parameters_for(version).max_batch_size == 4


def test_bad_parameters_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"^--batching_parameters_file: Cannot read batching parameters file"):
        batching_config_from_flags(True, str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 128 } allowed_batch_sizes: 64")
    with pytest.raises(InvalidArgumentError) as info:
        batching_config_from_flags(True, str(bad))
    assert info.value.message == (
        f"--batching_parameters_file: Invalid batching parameters in {bad}: Last entry in allowed_batch_sizes must "
        "match max_batch_size; last entry was 64; expected 128"
    )


def test_settings_from_flags_hand_the_config_to_the_tensorflow_platform(tmp_path: Path) -> None:
    plain = settings_from_flags(parse_model_server_args(["--model_base_path=/m"]))
    assert "batching" not in plain.core.platform_options["tensorflow"]
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 16 }")
    options = parse_model_server_args(["--model_base_path=/m", "--enable_batching",
                                       f"--batching_parameters_file={path}", "--enable_per_model_batching_params"])
    config = settings_from_flags(options).core.platform_options["tensorflow"]["batching"]
    assert isinstance(config, BatchingConfig) and config.per_model and config.parameters.max_batch_size == 16


# --- the generated proto module -------------------------------------------------------------------------


def test_generated_module_matches_its_proto() -> None:
    proto = ROOT / "pyserving" / "protos" / "batching.proto"
    generated = (ROOT / "pyserving" / "protos" / "batching_pb2.py").read_text()
    assert f"Source SHA-256: {hashlib.sha256(proto.read_bytes()).hexdigest()}" in generated, (
        "batching.proto changed: run python tools/gen_protos.py"
    )
    assert "ValidateProtobufRuntimeVersion" not in generated  # imports with protobuf >= 4.21


def test_message_fields_equal_tf_servings() -> None:
    from pyserving.protos import batching_pb2

    fields = {f.name: (f.number, f.message_type.full_name if f.message_type else f.type)
              for f in batching_pb2.BatchingParameters.DESCRIPTOR.fields}
    int64, boolean, string = "google.protobuf.Int64Value", "google.protobuf.BoolValue", "google.protobuf.StringValue"
    assert fields == {
        "max_batch_size": (1, int64), "batch_timeout_micros": (2, int64), "max_enqueued_batches": (3, int64),
        "num_batch_threads": (4, int64), "thread_pool_name": (5, string), "allowed_batch_sizes": (6, 3),
        "pad_variable_length_inputs": (7, 8), "enable_large_batch_splitting": (8, boolean),
        "max_execution_batch_size": (9, int64),
    }


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed")
def test_generator_reproduces_the_committed_module() -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"], check=True, timeout=120)
