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
5. ``logging_config`` (request logging, :class:`RequestLoggingConfig`), messages starting
   ``logging_config of model X:``: ``log_collector_config.filename_prefix`` is required and
   must be an absolute path naming the start of a file name (not ending in ``/``);
   ``sampling_config.sampling_rate`` must be in [0, 1]; ``log_collector_config.type`` is kept
   as given (pyserving has one collector: TFRecord files); ``custom_logging_config``,
   ``sampling_config.per_task_sampling_configs`` and ``sampling_config.attributes`` are
   refused as not supported. A rate of 0 (the proto's default) is accepted with a warning: it
   logs nothing. (TF Serving's open-source binary refuses every ``logging_config``.)

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
    "RequestLoggingConfig",
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
class RequestLoggingConfig:
    """A model's request logging: TF Serving's ``LoggingConfig`` once validated.

    ``filename_prefix`` (``log_collector_config.filename_prefix``): an absolute path; the log
    files are ``<filename_prefix>.<UTC time>.<n>.tfrecord`` (see
    :mod:`pyserving.server.request_logger`), the folder is created when missing.
    ``sampling_rate`` (``sampling_config.sampling_rate``): the probability, in [0, 1], that a
    successful request is logged; 0, the proto's default, logs nothing.
    ``collector_type`` (``log_collector_config.type``): kept for the config's round trip;
    pyserving has one collector (TFRecord files) whatever it says.

    Raises :class:`InvalidArgumentError` naming the field, the rule and the value.
    """

    filename_prefix: str
    sampling_rate: float = 0.0
    collector_type: str = ""

    def __post_init__(self) -> None:
        prefix = self.filename_prefix
        if not isinstance(prefix, str) or not prefix:
            raise InvalidArgumentError(
                "log_collector_config.filename_prefix is required: the absolute path every log file name "
                f"starts with, e.g. '/var/log/pyserving/requests'; got {prefix!r}"
            )
        if not os.path.isabs(prefix):
            raise InvalidArgumentError(
                f"log_collector_config.filename_prefix must be an absolute path, got {prefix!r}"
            )
        if prefix.endswith(("/", os.sep)):
            raise InvalidArgumentError(
                "log_collector_config.filename_prefix must name the start of a file name, not a folder "
                f"(e.g. {prefix + 'requests'!r}), got {prefix!r}"
            )
        rate = self.sampling_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise InvalidArgumentError(f"sampling_config.sampling_rate must be in [0, 1], got {rate!r}")
        object.__setattr__(self, "sampling_rate", float(rate))
        if not isinstance(self.collector_type, str):
            raise InvalidArgumentError(
                f"log_collector_config.type must be a string, got {self.collector_type!r}"
            )


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model the server should serve: what a ``ModelConfig`` means once validated.

    ``base_path`` is absolute (or a URI); ``platform`` is a registered platform name;
    ``version_labels`` maps label -> version and is read-only; ``logging`` is the model's
    request logging, None when its config has no ``logging_config``.
    """

    name: str
    base_path: str
    platform: str = TENSORFLOW_PLATFORM
    version_policy: ServableVersionPolicy = LatestVersions()
    version_labels: Mapping[str, int] = field(default_factory=dict, hash=False)
    logging: RequestLoggingConfig | None = None

    def __post_init__(self) -> None:
        labels = dict(self.version_labels)
        for label, version in labels.items():
            if not isinstance(label, str) or isinstance(version, bool) or not isinstance(version, int):
                raise InvalidArgumentError(
                    f"version_labels of model {self.name} must map str to int, got {label!r}: {version!r}"
                )
        object.__setattr__(self, "version_labels", MappingProxyType(labels))
        if self.logging is not None and not isinstance(self.logging, RequestLoggingConfig):
            raise InvalidArgumentError(
                f"logging of model {self.name} must be a RequestLoggingConfig or None, got {self.logging!r}"
            )


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


def _request_logging(config: ModelConfig, warnings: list[str]) -> RequestLoggingConfig | None:
    """The validated ``logging_config`` of ``config`` (None when it has none)."""
    if not config.HasField("logging_config"):
        return None
    proto = config.logging_config
    where = f"logging_config of model {config.name}"
    sampling = proto.sampling_config
    if proto.HasField("custom_logging_config"):
        raise InvalidArgumentError(
            f"{where}: custom_logging_config is not supported (got {proto.custom_logging_config.type_url!r}); "
            "pyserving writes TFRecord files under log_collector_config.filename_prefix"
        )
    if len(sampling.per_task_sampling_configs):
        raise InvalidArgumentError(
            f"{where}: sampling_config.per_task_sampling_configs is not supported "
            f"(got {len(sampling.per_task_sampling_configs)}); use sampling_config.sampling_rate"
        )
    if sampling.attributes:
        raise InvalidArgumentError(
            f"{where}: sampling_config.attributes is not supported, got {sampling.attributes}"
        )
    try:
        result = RequestLoggingConfig(
            filename_prefix=proto.log_collector_config.filename_prefix,
            sampling_rate=sampling.sampling_rate,
            collector_type=proto.log_collector_config.type,
        )
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where}: {exc.message}") from exc
    if result.sampling_rate == 0.0:
        warnings.append(
            f"Model {config.name} has a logging_config with sampling_rate 0: none of its requests is logged; "
            "set logging_config { sampling_config { sampling_rate: R } } with R in (0, 1] to log them."
        )
    return result


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
                logging=_request_logging(model, warnings),
            )
        )

    for line in warnings:
        _log.warning("%s", line)
    return entries
