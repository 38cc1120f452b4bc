"""Tests for pyserving.server.model_config_io: ModelEntry <-> ModelConfig JSON and config files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.model_config import (
    ModelEntry,
    RequestLoggingConfig,
    load_model_server_config,
    models_from_config,
)
from pyserving.server.model_config_io import (
    config_text,
    model_config_from_entry,
    model_config_to_json,
    model_entry_from_json,
    write_model_server_config,
)
from pyserving.sources.version_policy import AllVersions, LatestVersions, SpecificVersions

ENTRIES = [
    ModelEntry("plain", "/models/plain"),
    ModelEntry("latest", "/models/latest", "python", LatestVersions(3)),
    ModelEntry("every", "gs://bucket/every", "python", AllVersions(), {"stable": 1}),
    ModelEntry("pinned", "/models/pinned", "tensorflow", SpecificVersions((43, 42)), {"stable": 42, "canary": 43}),
    ModelEntry("none", "/models/none", "tensorflow", SpecificVersions(())),
    ModelEntry("logged", "/models/logged", logging=RequestLoggingConfig("/logs/logged", 0.125, "tfrecord")),
    ModelEntry("unsampled", "/models/unsampled", logging=RequestLoggingConfig("/logs/unsampled")),
]


def test_json_form_keeps_proto_field_names() -> None:
    assert model_config_to_json(ENTRIES[3]) == {
        "name": "pinned",
        "base_path": "/models/pinned",
        "model_platform": "tensorflow",
        "model_version_policy": {"specific": {"versions": [42, 43]}},
        "version_labels": {"canary": 43, "stable": 42},
    }
    assert model_config_to_json(ENTRIES[0])["model_version_policy"] == {"latest": {"num_versions": 1}}
    assert model_config_to_json(ENTRIES[0])["version_labels"] == {}
    assert model_config_to_json(ENTRIES[2])["model_version_policy"] == {"all": {}}
    assert model_config_to_json(ENTRIES[4])["model_version_policy"] == {"specific": {"versions": []}}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_round_trips_through_json_and_proto(entry: ModelEntry) -> None:
    doc = model_config_to_json(entry)
    assert model_entry_from_json(json.dumps(doc), entry.name) == entry
    assert model_entry_from_json(json.dumps(doc).encode(), None) == entry
    assert model_entry_from_json(doc, entry.name, [entry]) == entry
    assert models_from_config_of(entry) == entry


def test_json_form_of_request_logging() -> None:
    assert model_config_to_json(ENTRIES[5])["logging_config"] == {
        "log_collector_config": {"filename_prefix": "/logs/logged", "type": "tfrecord"},
        "sampling_config": {"sampling_rate": 0.125},
    }
    assert model_config_to_json(ENTRIES[6])["logging_config"] == {
        "log_collector_config": {"filename_prefix": "/logs/unsampled"},
        "sampling_config": {"sampling_rate": 0.0},
    }
    assert "logging_config" not in model_config_to_json(ENTRIES[0])
    camel = {"basePath": "/models/logged", "modelPlatform": "tensorflow",
             "loggingConfig": {"logCollectorConfig": {"filenamePrefix": "/logs/logged", "type": "tfrecord"},
                               "samplingConfig": {"samplingRate": 0.125}}}
    assert model_entry_from_json(camel, "logged") == ENTRIES[5]


def models_from_config_of(entry: ModelEntry) -> ModelEntry:
    from tensorflow_serving.config import model_server_config_pb2

    config_list = model_server_config_pb2.ModelConfigList()
    config_list.config.append(model_config_from_entry(entry))
    [parsed] = models_from_config(config_list)
    return parsed


def test_camel_case_and_strings_for_int64_are_accepted() -> None:
    body = {
        "basePath": "/models/m",
        "modelPlatform": "python",
        "modelVersionPolicy": {"latest": {"numVersions": "2"}},
        "versionLabels": {"canary": "7"},
    }
    assert model_entry_from_json(body, "m") == ModelEntry(
        "m", "/models/m", "python", LatestVersions(2), {"canary": 7}
    )


def test_name_from_the_path_fills_a_missing_name_and_must_match_a_given_one() -> None:
    body = {"base_path": "/models/m", "model_platform": "python"}
    assert model_entry_from_json(body, "m").name == "m"
    with pytest.raises(InvalidArgumentError, match="names model 'other' but the path names model 'm'"):
        model_entry_from_json({**body, "name": "other"}, "m")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The model config is not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"base_path": "/m", "model_platform": "python", "colour": "red"}), 'no field named "colour"'),
        (json.dumps({"base_path": "/m", "model_platform": "python", "version_labels": {"a": 1.5}}), "Invalid model config"),
        (json.dumps({"base_path": "models/m", "model_platform": "python"}),
         "Expected model m to have an absolute path or URI; got base_path()=models/m"),
        (json.dumps({"model_platform": "python"}), "Expected model m to have an absolute path or URI; got base_path()="),
        (json.dumps({"base_path": "/m", "model_platform": "onnx"}), "Model m requests unsupported platform onnx"),
        (json.dumps({"base_path": "/m"}), "Illegal setting neither ModelServerConfig::model_type"),
        (json.dumps({"base_path": "/m", "model_platform": "python", "logging_config": {}}),
         "logging_config of model m: log_collector_config.filename_prefix is required"),
        (json.dumps({"base_path": "/m", "model_platform": "python", "logging_config": {
            "log_collector_config": {"filename_prefix": "/l/m"}, "sampling_config": {"sampling_rate": 2}}}),
         "logging_config of model m: sampling_config.sampling_rate must be in [0, 1], got 2.0"),
    ],
)
def test_invalid_bodies_are_invalid_argument_naming_the_problem(body: str | bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        model_entry_from_json(body, "m")
    assert message in info.value.message


def test_platform_change_is_refused_against_previous_models() -> None:
    previous = [ModelEntry("m", "/models/m", "tensorflow")]
    with pytest.raises(InvalidArgumentError, match="Illegal to change a model's platform. For model m platform was "
                                                   "tensorflow and new platform requested is python"):
        model_entry_from_json({"base_path": "/models/m", "model_platform": "python"}, "m", previous)


def test_config_file_round_trip_and_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    write_model_server_config(path, ENTRIES)
    assert models_from_config(load_model_server_config(path)) == ENTRIES
    assert config_text(ENTRIES) == path.read_text()
    os.chmod(path, 0o640)

    write_model_server_config(path, ENTRIES[:1])
    assert models_from_config(load_model_server_config(path)) == ENTRIES[:1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the replaced file's mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]  # no temporary file left

    # An empty list is still a model list (unload everything), not TF Serving's "no action" config.
    write_model_server_config(path, [])
    assert "model_config_list" in path.read_text()
    assert models_from_config(load_model_server_config(path), ENTRIES) == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="Failed to write ModelServerConfig file"):
        write_model_server_config(tmp_path / "missing" / "models.config", ENTRIES)
    assert list(tmp_path.iterdir()) == []
