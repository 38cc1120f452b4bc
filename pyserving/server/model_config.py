"""The model server config: TF Serving's ``ModelServerConfig`` and the models it names.

Three pure functions, safe to call from any thread, no state:

* :func:`load_model_server_config` reads a text-format ``ModelServerConfig`` file
  (``--model_config_file``; also what a config-file poll re-reads).
* :func:`config_from_flags` builds the one-model config of ``--model_name`` /
  ``--model_base_path`` (platform ``tensorflow``, default version policy), as TF Serving does.
* :func:`models_from_config` validates a config the way TF Serving's ``ServerCore::ReloadConfig``
  does, with its messages, and returns the :class:`ModelEntry` list the server reconciles to.
  Every model absent from the list is to be unloaded (a config replaces the previous one).

Checks, in TF Serving's order, all INVALID_ARGUMENT (:class:`InvalidArgumentError`):

1. config kind: ``custom_model_config`` -> ``ModelServer does not yet support custom model
   config.`` (TF Serving aborts); through the ReloadConfig RPC any kind but a model list ->
   ``ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is
   currently supported``. An empty config (no kind set) outside the RPC is TF Serving's
   "Taking no action for empty config": the previous models are returned unchanged.
2. ``Illegal to list model X multiple times in config list`` (and, pyserving only, an empty
   name is rejected); ``Expected model X to have an absolute path or URI; got base_path()=P``.
3. against ``previous``: ``Illegal to change a model's platform. For model X platform was P and
   new platform requested is Q``.
4. platform of each model: ``Illegal setting both ModelServerConfig::model_type (deprecated) and
   ModelServerConfig::model_platform.``, ``ModelServerConfig::model_type choice N not supported.``,
   ``Illegal setting neither ModelServerConfig::model_type (deprecated) nor
   ModelServerConfig::model_platform.``, ``Model X requests unsupported platform P`` (supported:
   :func:`pyserving.loaders.platform.platform_names`).
5. ``logging_config`` -> ``not supported yet: request logging (logging_config of model X)``.

Not checked here: whether a label names an AVAILABLE version (FAILED_PRECONDITION in TF
Serving) needs the servables' states and belongs to whoever installs the labels.

TensorFlow Serving's protos are imported lazily (they do not import TensorFlow itself);
:func:`models_from_config` needs no import at all.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pyserving.loaders.platform import platform_names
from pyserving.servable.errors import InvalidArgumentError, as_serving_error
from pyserving.sources.version_policy import (
    AllVersions,
    LatestVersions,
    ServableVersionPolicy,
    SpecificVersions,
)

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

__all__ = [
    "TENSORFLOW_PLATFORM",
    "ModelEntry",
    "load_model_server_config",
    "config_from_flags",
    "models_from_config",
    "uri_is_relative_path",
    "CUSTOM_CONFIG_MESSAGE",
    "RELOAD_RPC_UNSUPPORTED_MESSAGE",
]

_log = logging.getLogger(__name__)

TENSORFLOW_PLATFORM = "tensorflow"
CUSTOM_CONFIG_MESSAGE = "ModelServer does not yet support custom model config."
RELOAD_RPC_UNSUPPORTED_MESSAGE = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
    "Only ModelConfigList is currently supported"
)
_MODEL_TYPE_TENSORFLOW = 1  # tensorflow.serving.ModelType.TENSORFLOW
_SCHEME_RE = re.compile(r"[a-zA-Z][0-9a-zA-Z.]*://")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model the server should serve: what a ``ModelConfig`` means once validated.

    ``base_path`` is absolute (or a URI); ``platform`` is a registered platform name;
    ``version_labels`` maps label -> version and is read-only.
    """

    name: str
    base_path: str
    platform: str = TENSORFLOW_PLATFORM
    version_policy: ServableVersionPolicy = LatestVersions()
    version_labels: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        labels = dict(self.version_labels)
        for label, version in labels.items():
            if not isinstance(label, str) or isinstance(version, bool) or not isinstance(version, int):
                raise InvalidArgumentError(
                    f"version_labels of model {self.name} must map str to int, got {label!r}: {version!r}"
                )
        object.__setattr__(self, "version_labels", MappingProxyType(labels))


def uri_is_relative_path(uri: str) -> bool:
    """TF Serving's rule: no ``scheme://`` prefix and not starting with ``/``."""
    return _SCHEME_RE.match(uri) is None and not uri.startswith("/")


def load_model_server_config(path: str | os.PathLike[str]) -> ModelServerConfig:
    """Parse the text-format ``ModelServerConfig`` in ``path``.

    A file that cannot be read raises the matching ServingError (NOT_FOUND for a missing
    file); text that does not parse raises INVALID_ARGUMENT
    ``Invalid protobuf file: '<path>': <parser message with line:column>``.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise as_serving_error(exc, f"Failed to read ModelServerConfig file {os.fspath(path)}: ") from exc
    try:
        return text_format.Parse(data.decode("utf-8"), model_server_config_pb2.ModelServerConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"Invalid protobuf file: '{os.fspath(path)}': {exc}") from exc


def config_from_flags(model_name: str, model_base_path: str) -> ModelServerConfig:
    """The ``ModelServerConfig`` of ``--model_name``/``--model_base_path``: one model list
    entry, platform ``tensorflow``, default version policy (latest 1).

    A relative ``model_base_path`` is made absolute against the current directory (TF Serving
    rejects it; a pyserving convenience); URIs and absolute paths are kept as given.
    """
    from tensorflow_serving.config import model_server_config_pb2

    if model_base_path and uri_is_relative_path(model_base_path):
        model_base_path = os.path.abspath(model_base_path)
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = model_name
    entry.base_path = model_base_path
    entry.model_platform = TENSORFLOW_PLATFORM
    return config


def _platform(config: ModelConfig) -> str:
    """TF Serving's GetPlatform: ``model_platform``, or the deprecated ``model_type``."""
    if config.model_type != 0:
        _log.warning(
            "Model %s uses the deprecated ModelConfig field model_type; use model_platform instead.", config.name
        )
        if config.model_platform:
            raise InvalidArgumentError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) "
                "and ModelServerConfig::model_platform."
            )
        if config.model_type != _MODEL_TYPE_TENSORFLOW:
            raise InvalidArgumentError(f"ModelServerConfig::model_type choice {config.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not config.model_platform:
        raise InvalidArgumentError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) "
            "nor ModelServerConfig::model_platform."
        )
    return str(config.model_platform)


def _policy(config: ModelConfig, warnings: list[str]) -> ServableVersionPolicy:
    proto = config.model_version_policy
    choice = proto.WhichOneof("policy_choice")
    if choice is None or choice == "latest":
        return LatestVersions(int(proto.latest.num_versions)) if choice else LatestVersions()
    if choice == "all":
        return AllVersions()
    versions = tuple(int(v) for v in proto.specific.versions)
    if not versions:
        warnings.append(
            f"Model {config.name} has a 'specific' version policy that lists no versions: "
            "no version of it will be served (every loaded version is unloaded)."
        )
    try:
        return SpecificVersions(versions)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"model_version_policy of model {config.name}: {exc.message}") from exc


def _model_configs(config: Any, reload_rpc: bool) -> list[ModelConfig] | None:
    """The model list of ``config``, or None for an empty config (no action)."""
    full_name = getattr(getattr(config, "DESCRIPTOR", None), "full_name", None)
    if full_name == "tensorflow.serving.ModelConfigList":
        return list(config.config)
    if full_name != "tensorflow.serving.ModelServerConfig":
        raise InvalidArgumentError(
            f"expected a tensorflow.serving.ModelServerConfig or ModelConfigList, got {type(config).__name__}"
        )
    kind = config.WhichOneof("config")
    if kind == "model_config_list":
        return list(config.model_config_list.config)
    if reload_rpc:
        raise InvalidArgumentError(RELOAD_RPC_UNSUPPORTED_MESSAGE)
    if kind == "custom_model_config":
        raise InvalidArgumentError(CUSTOM_CONFIG_MESSAGE)
    return None


def models_from_config(
    config: ModelServerConfig | Any,
    previous: Sequence[ModelEntry] | None = None,
    *,
    reload_rpc: bool = False,
) -> list[ModelEntry]:
    """Validate ``config`` (a ``ModelServerConfig`` or a bare ``ModelConfigList``) and
    return its models in config order.

    ``previous`` is the list currently served (None or empty at startup); it is used for the
    platform-change check and returned (copied) for an empty config. ``reload_rpc`` selects
    the ReloadConfig RPC's rule and message for a config that is not a model list. Raises
    :class:`InvalidArgumentError` with TF Serving's messages (module docstring); warnings
    (deprecated ``model_type``, a ``specific`` policy listing no versions) are logged.
    """
    configs = _model_configs(config, reload_rpc)
    if configs is None:
        _log.info("Taking no action for empty config.")
        return list(previous or [])

    seen: set[str] = set()
    for position, model in enumerate(configs):
        if not model.name:
            raise InvalidArgumentError(
                f"Model config entry {position} (base_path()={model.base_path}) has an empty name; "
                "every model needs a name"
            )
        if model.name in seen:
            raise InvalidArgumentError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in configs:
        if uri_is_relative_path(model.base_path):
            raise InvalidArgumentError(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )

    old_platforms = {entry.name: entry.platform for entry in previous or ()}
    for model in configs:
        if model.name in old_platforms:
            new_platform = _platform(model)
            if new_platform != old_platforms[model.name]:
                raise InvalidArgumentError(
                    f"Illegal to change a model's platform. For model {model.name} platform was "
                    f"{old_platforms[model.name]} and new platform requested is {new_platform}"
                )

    supported = set(platform_names())
    warnings: list[str] = []
    entries: list[ModelEntry] = []
    for model in configs:
        platform = _platform(model)
        if platform not in supported:
            raise InvalidArgumentError(f"Model {model.name} requests unsupported platform {platform}")
        entries.append(
            ModelEntry(
                name=model.name,
                base_path=model.base_path,
                platform=platform,
                version_policy=_policy(model, warnings),
                version_labels={label: int(version) for label, version in model.version_labels.items()},
            )
        )

    for model in configs:
        if model.HasField("logging_config"):
            raise InvalidArgumentError(f"not supported yet: request logging (logging_config of model {model.name})")
    for line in warnings:
        _log.warning("%s", line)
    return entries
