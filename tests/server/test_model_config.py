"""Tests for pyserving.server.model_config: ModelServerConfig files and TF Serving's validation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from tensorflow_serving.config import model_server_config_pb2 as pb
from google.protobuf import text_format

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.model_config import (
    CUSTOM_CONFIG_MESSAGE,
    RELOAD_RPC_UNSUPPORTED_MESSAGE,
    ModelEntry,
    RequestLoggingConfig,
    config_from_flags,
    load_model_server_config,
    models_from_config,
    uri_is_relative_path,
)
from pyserving.sources.version_policy import AllVersions, LatestVersions, SpecificVersions

SEVERAL_MODELS = """
model_config_list {
  config { name: 'first' base_path: '/models/first/' model_platform: 'tensorflow' }
  config {
    name: 'pinned' base_path: '/models/pinned' model_platform: 'tensorflow'
    model_version_policy { specific { versions: 43 versions: 42 } }
    version_labels { key: 'stable' value: 42 }
    version_labels { key: 'canary' value: 43 }
  }
  config {
    name: "every" base_path: "gs://bucket/every" model_platform: "python"
    model_version_policy { all {} }
  }
  config {
    name: "three" base_path: "/models/three" model_type: TENSORFLOW
    model_version_policy { latest { num_versions: 3 } }
    version_labels { key: 'a' value: 1 }
    version_labels { key: 'b' value: 1 }
  }
}
"""


def parse(text: str) -> pb.ModelServerConfig:
    return text_format.Parse(text, pb.ModelServerConfig())


def one_model(body: str) -> pb.ModelServerConfig:
    return parse("model_config_list { config { %s } }" % body)


def error_of(config: object, previous: list[ModelEntry] | None = None, **kwargs: bool) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        models_from_config(config, previous, **kwargs)
    return str(info.value)


# --- files ---------------------------------------------------------------------------------


def test_load_file_with_several_models(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(SEVERAL_MODELS)
    config = load_model_server_config(path)
    assert isinstance(config, pb.ModelServerConfig)
    entries = models_from_config(config)
    assert entries == [
        ModelEntry("first", "/models/first/", "tensorflow", LatestVersions(1), {}),
        ModelEntry("pinned", "/models/pinned", "tensorflow", SpecificVersions((42, 43)),
                   {"stable": 42, "canary": 43}),
        ModelEntry("every", "gs://bucket/every", "python", AllVersions(), {}),
        ModelEntry("three", "/models/three", "tensorflow", LatestVersions(3), {"a": 1, "b": 1}),
    ]
    assert load_model_server_config(str(path)) == config


def test_parse_error_names_file_and_parser_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.config"
    path.write_text("model_config_list {\n  config { name: 'x' bogus_field: 1 }\n}\n")
    with pytest.raises(InvalidArgumentError) as info:
        load_model_server_config(path)
    message = str(info.value)
    assert message.startswith(f"Invalid protobuf file: '{path}': ")
    assert "2:" in message and "bogus_field" in message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="Failed to read ModelServerConfig file .*missing.config"):
        load_model_server_config(tmp_path / "missing.config")
    binary = tmp_path / "binary.config"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidArgumentError, match="Invalid protobuf file: "):
        load_model_server_config(binary)


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.config"
    path.write_text("")
    config = load_model_server_config(path)
    assert config.WhichOneof("config") is None


# --- flags config ---------------------------------------------------------------------------


def test_config_from_flags() -> None:
    config = config_from_flags("mnist", "/models/mnist")
    assert config == parse("model_config_list { config { name: 'mnist' base_path: '/models/mnist' "
                           "model_platform: 'tensorflow' } }")
    assert models_from_config(config) == [ModelEntry("mnist", "/models/mnist")]


def test_config_from_flags_makes_relative_paths_absolute() -> None:
    config = config_from_flags("m", "models/m")
    assert config.model_config_list.config[0].base_path == os.path.join(os.getcwd(), "models", "m")
    assert config_from_flags("m", "./m").model_config_list.config[0].base_path == os.path.join(os.getcwd(), "m")
    assert config_from_flags("m", "s3://b/m").model_config_list.config[0].base_path == "s3://b/m"


def test_uri_is_relative_path() -> None:
    for uri in ("", "m", "./m", "../m", "models/m", "C:relative", "://x"):
        assert uri_is_relative_path(uri), uri
    for uri in ("/m", "gs://b/m", "file:///m", "s3://b", "hdfs.v2://h/p"):
        assert not uri_is_relative_path(uri), uri


# --- config kinds -----------------------------------------------------------------------------


def test_custom_model_config() -> None:
    config = parse("custom_model_config { type_url: 'type.googleapis.com/x.Y' value: '' }")
    assert error_of(config) == CUSTOM_CONFIG_MESSAGE == "ModelServer does not yet support custom model config."
    assert error_of(config, reload_rpc=True) == RELOAD_RPC_UNSUPPORTED_MESSAGE == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported")


def test_empty_config_takes_no_action() -> None:
    previous = [ModelEntry("kept", "/models/kept")]
    assert models_from_config(pb.ModelServerConfig()) == []
    assert models_from_config(pb.ModelServerConfig(), previous) == previous
    assert error_of(pb.ModelServerConfig(), reload_rpc=True) == RELOAD_RPC_UNSUPPORTED_MESSAGE


def test_empty_model_list_unloads_everything() -> None:
    previous = [ModelEntry("gone", "/models/gone")]
    assert models_from_config(parse("model_config_list {}"), previous) == []
    assert models_from_config(parse("model_config_list {}"), previous, reload_rpc=True) == []


def test_bare_model_config_list_and_wrong_types() -> None:
    config_list = parse(SEVERAL_MODELS).model_config_list
    assert [e.name for e in models_from_config(config_list)] == ["first", "pinned", "every", "three"]
    assert "expected a tensorflow.serving.ModelServerConfig or ModelConfigList, got str" in error_of("x")
    assert "got ModelConfig" in error_of(config_list.config[0])


# --- validation messages -------------------------------------------------------------------------


def test_duplicate_model_name() -> None:
    config = parse("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' } "
                   "config { name: 'a' base_path: 'relative' model_platform: 'tensorflow' } }")
    # TF Serving checks names before paths.
    assert error_of(config) == "Illegal to list model a multiple times in config list"


def test_empty_model_name() -> None:
    assert error_of(one_model("base_path: '/a' model_platform: 'tensorflow'")) == (
        "Model config entry 0 (base_path()=/a) has an empty name; every model needs a name")


@pytest.mark.parametrize("base_path", ["models/a", "./a", ""])
def test_relative_base_path(base_path: str) -> None:
    config = one_model(f"name: 'a' base_path: '{base_path}' model_platform: 'tensorflow'")
    assert error_of(config) == f"Expected model a to have an absolute path or URI; got base_path()={base_path}"


def test_platform_change_against_previous() -> None:
    previous = [ModelEntry("a", "/a", "python")]
    config = one_model("name: 'a' base_path: '/a' model_platform: 'tensorflow'")
    assert error_of(config, previous) == (
        "Illegal to change a model's platform. For model a platform was python and new platform "
        "requested is tensorflow")
    assert error_of(config, previous, reload_rpc=True).startswith("Illegal to change a model's platform.")
    same = [ModelEntry("a", "/old", "tensorflow", AllVersions())]
    assert models_from_config(config, same) == [ModelEntry("a", "/a")]
    via_model_type = one_model("name: 'a' base_path: '/a' model_type: TENSORFLOW")
    assert models_from_config(via_model_type, same)[0].platform == "tensorflow"


def test_unsupported_platform() -> None:
    config = one_model("name: 'a' base_path: '/a' model_platform: 'pytorch'")
    assert error_of(config) == "Model a requests unsupported platform pytorch"


def test_model_type_and_platform_rules(caplog: pytest.LogCaptureFixture) -> None:
    both = one_model("name: 'a' base_path: '/a' model_type: TENSORFLOW model_platform: 'tensorflow'")
    assert error_of(both) == (
        "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform.")
    neither = one_model("name: 'a' base_path: '/a'")
    assert error_of(neither) == (
        "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform.")
    other = one_model("name: 'a' base_path: '/a' model_type: OTHER")
    assert error_of(other) == "ModelServerConfig::model_type choice 2 not supported."
    caplog.set_level(logging.WARNING, logger="pyserving.server.model_config")
    deprecated = one_model("name: 'a' base_path: '/a' model_type: TENSORFLOW")
    assert models_from_config(deprecated) == [ModelEntry("a", "/a", "tensorflow")]
    assert any("deprecated ModelConfig field model_type" in r.getMessage() for r in caplog.records)


# --- logging_config (request logging) -------------------------------------------------------


def logged_model(logging_config: str) -> pb.ModelServerConfig:
    return one_model(f"name: 'logged' base_path: '/a' model_platform: 'tensorflow' logging_config {{ {logging_config} }}")


def test_logging_config_is_parsed_into_the_entry() -> None:
    config = logged_model("log_collector_config { type: 'tfrecord' filename_prefix: '/logs/req' } "
                          "sampling_config { sampling_rate: 0.25 }")
    [entry] = models_from_config(config)
    assert entry.logging == RequestLoggingConfig("/logs/req", 0.25, "tfrecord")
    assert entry == ModelEntry("logged", "/a", logging=RequestLoggingConfig("/logs/req", 0.25, "tfrecord"))
    assert hash(entry) == hash(ModelEntry("logged", "/a", logging=RequestLoggingConfig("/logs/req", 0.25, "tfrecord")))
    assert entry != ModelEntry("logged", "/a", logging=RequestLoggingConfig("/logs/req", 0.5, "tfrecord"))
    assert entry != ModelEntry("logged", "/a")
    plain = one_model("name: 'plain' base_path: '/a' model_platform: 'tensorflow'")
    assert models_from_config(plain)[0].logging is None


@pytest.mark.parametrize(
    ("logging_config", "message"),
    [
        ("sampling_config { sampling_rate: 0.5 }",
         "logging_config of model logged: log_collector_config.filename_prefix is required"),
        ("log_collector_config { filename_prefix: 'logs/req' } sampling_config { sampling_rate: 0.5 }",
         "logging_config of model logged: log_collector_config.filename_prefix must be an absolute path, "
         "got 'logs/req'"),
        ("log_collector_config { filename_prefix: 'gs://bucket/req' }",
         "logging_config of model logged: log_collector_config.filename_prefix must be an absolute path, "
         "got 'gs://bucket/req'"),
        ("log_collector_config { filename_prefix: '/logs/' }",
         "logging_config of model logged: log_collector_config.filename_prefix must name the start of a file "
         "name, not a folder (e.g. '/logs/requests'), got '/logs/'"),
        ("log_collector_config { filename_prefix: '/logs/req' } sampling_config { sampling_rate: 1.5 }",
         "logging_config of model logged: sampling_config.sampling_rate must be in [0, 1], got 1.5"),
        ("log_collector_config { filename_prefix: '/logs/req' } sampling_config { sampling_rate: -0.1 }",
         "logging_config of model logged: sampling_config.sampling_rate must be in [0, 1], got -0.1"),
        ("log_collector_config { filename_prefix: '/logs/req' } sampling_config { sampling_rate: nan }",
         "logging_config of model logged: sampling_config.sampling_rate must be in [0, 1], got nan"),
        ("log_collector_config { filename_prefix: '/logs/req' } "
         "sampling_config { per_task_sampling_configs { dc: 'x' sampling_rate: 1 } }",
         "logging_config of model logged: sampling_config.per_task_sampling_configs is not supported"),
        ("log_collector_config { filename_prefix: '/logs/req' } sampling_config { attributes: 1 }",
         "logging_config of model logged: sampling_config.attributes is not supported, got 1"),
        ("log_collector_config { filename_prefix: '/logs/req' } "
         "custom_logging_config { type_url: 'type.googleapis.com/x.Y' }",
         "logging_config of model logged: custom_logging_config is not supported"),
    ],
)
def test_invalid_logging_config_is_invalid_argument_naming_model_and_value(logging_config: str, message: str) -> None:
    assert error_of(logged_model(logging_config)).startswith(message)


def test_logging_config_with_rate_zero_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyserving.server.model_config")
    [entry] = models_from_config(logged_model("log_collector_config { filename_prefix: '/logs/req' }"))
    assert entry.logging == RequestLoggingConfig("/logs/req", 0.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Model logged has a logging_config with sampling_rate 0" in warnings[0]


def test_request_logging_config_validates_when_built_directly() -> None:
    assert RequestLoggingConfig("/l/r", 1).sampling_rate == 1.0
    assert isinstance(RequestLoggingConfig("/l/r", 1).sampling_rate, float)
    with pytest.raises(InvalidArgumentError, match=r"sampling_rate must be in \[0, 1\], got True"):
        RequestLoggingConfig("/l/r", True)
    with pytest.raises(InvalidArgumentError, match="filename_prefix is required"):
        RequestLoggingConfig("")
    with pytest.raises(InvalidArgumentError, match="logging of model m must be a RequestLoggingConfig or None"):
        ModelEntry("m", "/m", logging={"filename_prefix": "/l/r"})  # type: ignore[arg-type]


def test_reload_rpc_accepts_a_model_list() -> None:
    config = parse(SEVERAL_MODELS)
    assert models_from_config(config, reload_rpc=True) == models_from_config(config)


# --- version policies and labels --------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", LatestVersions(1)),
        ("model_version_policy {}", LatestVersions(1)),
        ("model_version_policy { latest {} }", LatestVersions(1)),
        ("model_version_policy { latest { num_versions: 2 } }", LatestVersions(2)),
        ("model_version_policy { all {} }", AllVersions()),
        ("model_version_policy { specific { versions: 7 versions: 3 versions: 7 } }", SpecificVersions((3, 7))),
    ],
)
def test_version_policies(policy: str, expected: object) -> None:
    config = one_model(f"name: 'a' base_path: '/a' model_platform: 'tensorflow' {policy}")
    assert models_from_config(config)[0].version_policy == expected


def test_specific_policy_without_versions_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyserving.server.model_config")
    config = one_model("name: 'a' base_path: '/a' model_platform: 'tensorflow' "
                       "model_version_policy { specific {} }")
    assert models_from_config(config)[0].version_policy == SpecificVersions(())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Model a has a 'specific' version policy that lists no versions: no version of it "
                        "will be served (every loaded version is unloaded)."]


def test_negative_specific_version_names_the_model() -> None:
    config = one_model("name: 'a' base_path: '/a' model_platform: 'tensorflow' "
                       "model_version_policy { specific { versions: -1 } }")
    assert error_of(config).startswith("model_version_policy of model a: ")


def test_model_entry_labels_are_read_only_and_entries_hashable() -> None:
    entry = models_from_config(parse(SEVERAL_MODELS))[1]
    assert dict(entry.version_labels) == {"stable": 42, "canary": 43}
    with pytest.raises(TypeError):
        entry.version_labels["new"] = 1  # type: ignore[index]
    assert hash(entry) == hash(ModelEntry("pinned", "/models/pinned", "tensorflow", SpecificVersions((42, 43))))
    source = {"x": 1}
    copied = ModelEntry("m", "/m", version_labels=source)
    source["x"] = 2
    assert copied.version_labels["x"] == 1
    with pytest.raises(InvalidArgumentError, match="version_labels of model m must map str to int"):
        ModelEntry("m", "/m", version_labels={"x": "1"})  # type: ignore[dict-item]
