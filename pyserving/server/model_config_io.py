"""A model's configuration in and out: :class:`ModelEntry` <-> TF Serving's ``ModelConfig``.

The admin API reads and writes one model at a time in the protobuf JSON form of
``tensorflow.serving.ModelConfig``; ``--admin_persist_config`` writes the whole model
list back as a text-format ``ModelServerConfig`` (what ``--model_config_file`` holds).

* :func:`model_config_from_entry` -> the ``ModelConfig`` message of one entry;
* :func:`model_config_to_json` -> its JSON form, protobuf's JSON mapping with the proto
  field names kept::

      {"name": "rec_a", "base_path": "/models/rec_a", "model_platform": "tensorflow",
       "model_version_policy": {"latest": {"num_versions": 1}},
       "version_labels": {"stable": 1}}

  (``model_version_policy`` is ``{"all": {}}`` or ``{"specific": {"versions": [1, 2]}}``
  for the other policies; ``version_labels`` is always present; the int64 fields are JSON
  numbers, as in the route JSON, where protobuf's mapping writes strings — both parse; a
  model with request logging adds ``"logging_config": {"log_collector_config":
  {"filename_prefix": "/logs/rec_a"}, "sampling_config": {"sampling_rate": 0.1}}``, with
  ``sampling_rate`` always written and ``type`` only when set);
* :func:`model_entry_from_json` -> the validated entry of a JSON document: both
  ``base_path`` and ``basePath`` spellings, numbers or strings for int64 fields; it goes
  through :func:`~pyserving.server.model_config.models_from_config`, so TF Serving's checks
  and messages apply (absolute base path, supported platform, no platform change);
* :func:`config_text` / :func:`write_model_server_config` -> the text-format
  ``ModelServerConfig`` of a model list; the write is atomic (temporary file in the same
  folder, fsync, ``os.replace``), so a reader sees the old file or the new one, never part.

Errors: :class:`InvalidArgumentError` for JSON that does not parse, is not an object, has
unknown fields or invalid values, or a name that contradicts the URL's; a file that cannot
be written raises the matching ServingError (``as_serving_error``). All functions are pure
(apart from the file write) and safe from any thread. TF Serving's protos are imported
lazily; they do not import TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server.config_files import atomic_write_text
from pyserving.server.model_config import ModelEntry, models_from_config
from pyserving.sources.version_policy import AllVersions, LatestVersions, SpecificVersions

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelConfig

__all__ = [
    "model_config_from_entry",
    "model_config_to_json",
    "model_entry_from_json",
    "config_text",
    "write_model_server_config",
]


def model_config_from_entry(entry: ModelEntry) -> ModelConfig:
    """The ``ModelConfig`` message that :func:`models_from_config` turns back into ``entry``."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelConfig(
        name=entry.name, base_path=entry.base_path, model_platform=entry.platform
    )
    policy = entry.version_policy
    if isinstance(policy, LatestVersions):
        config.model_version_policy.latest.num_versions = policy.num_versions
    elif isinstance(policy, AllVersions):
        config.model_version_policy.all.SetInParent()
    elif isinstance(policy, SpecificVersions):
        config.model_version_policy.specific.SetInParent()
        config.model_version_policy.specific.versions.extend(policy.versions)
    else:
        raise InvalidArgumentError(
            f"version_policy of model {entry.name} has no ModelConfig form: {type(policy).__name__}"
        )
    for label, version in sorted(entry.version_labels.items()):
        config.version_labels[label] = version
    if entry.logging is not None:
        collector = config.logging_config.log_collector_config
        collector.filename_prefix = entry.logging.filename_prefix
        collector.type = entry.logging.collector_type
        config.logging_config.sampling_config.sampling_rate = entry.logging.sampling_rate
    return config


def model_config_to_json(entry: ModelEntry) -> dict[str, Any]:
    """The protobuf JSON form of ``entry``'s ``ModelConfig`` (see the module docstring)."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(model_config_from_entry(entry), preserving_proto_field_name=True)
    policy = doc.get("model_version_policy", {})
    if "latest" in policy:
        policy["latest"] = {"num_versions": int(policy["latest"].get("num_versions", 1))}
    if "specific" in policy:
        policy["specific"] = {"versions": [int(v) for v in policy["specific"].get("versions", ())]}
    doc["version_labels"] = {label: int(v) for label, v in doc.get("version_labels", {}).items()}
    if entry.logging is not None:
        logging_doc = doc.setdefault("logging_config", {})
        logging_doc.setdefault("log_collector_config", {})
        logging_doc.setdefault("sampling_config", {})["sampling_rate"] = entry.logging.sampling_rate
    return doc


def model_entry_from_json(
    doc: bytes | str | Mapping[str, Any], name: str | None, previous: Sequence[ModelEntry] = ()
) -> ModelEntry:
    """Parse and validate one model's ``ModelConfig`` JSON.

    ``name`` (from the URL) fills a missing ``name`` and must equal a given one. ``previous``
    is the model list now served (for TF Serving's "Illegal to change a model's platform").
    Raises :class:`InvalidArgumentError` naming the problem; nothing else is touched.
    """
    from google.protobuf import json_format
    from tensorflow_serving.config import model_server_config_pb2

    mapping = _json_object(doc, "model config")
    config = model_server_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(mapping, config)
    except json_format.ParseError as exc:
        raise InvalidArgumentError(f"Invalid model config: {exc}") from exc
    if name is not None:
        if not config.name:
            config.name = name
        elif config.name != name:
            raise InvalidArgumentError(
                f"The model config names model {config.name!r} but the path names model {name!r}; "
                "they must be the same"
            )
    config_list = model_server_config_pb2.ModelConfigList()
    config_list.config.append(config)
    [entry] = models_from_config(config_list, previous)
    return entry


def _json_object(doc: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(doc, Mapping):
        return doc
    try:
        parsed = json.loads(doc)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidArgumentError(f"The {what} is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidArgumentError(f"The {what} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def config_text(models: Sequence[ModelEntry]) -> str:
    """The text-format ``ModelServerConfig`` whose ``model_config_list`` lists ``models`` in order."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()  # an empty list is still a list, not "no config"
    for entry in models:
        config.model_config_list.config.append(model_config_from_entry(entry))
    return text_format.MessageToString(config)


def write_model_server_config(path: str | os.PathLike[str], models: Sequence[ModelEntry]) -> None:
    """Replace the file at ``path`` with :func:`config_text` of ``models``, atomically."""
    atomic_write_text(path, config_text(models), what="ModelServerConfig file")
