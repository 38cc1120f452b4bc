"""The ``--monitoring_config_file`` (text ``MonitoringConfig``) -> :class:`MonitoringSettings`.

The file is TF Serving's format (``monitoring.proto`` has its field names and numbers), so
a TF Serving file works unchanged::

    prometheus_config {
      enable: true
      path: "/monitoring/prometheus/metrics"
    }

Rules (TF Serving's, plus a check of the path): ``enable`` defaults to false (an empty file
turns nothing on); an empty ``path`` means :data:`DEFAULT_PATH`; with ``enable: true`` the
path must start with ``/`` and hold no whitespace, ``?`` or ``#`` (it is matched against
the request path of the REST port as is). A disabled config's path is not checked.

Contracts: pure functions, safe from any thread; protobuf is imported inside them. Errors
are :class:`~pyserving.servable.errors.ServingError`: a syntax error, an unknown field or a
wrong type is :class:`InvalidArgumentError` "Cannot parse monitoring config <file> line L
column C: ..."; a bad path is :class:`InvalidArgumentError` naming the file, the field,
the rule and the value; a file that cannot be read raises
:func:`~pyserving.servable.errors.as_serving_error`'s error (``NotFoundError`` when missing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server.config_files import parse_text_config, read_config_text

__all__ = ["DEFAULT_PATH", "MonitoringSettings", "parse_monitoring_config", "load_monitoring_config"]

#: Where metrics are served when the config leaves ``path`` empty (TF Serving's default).
DEFAULT_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    """What the monitoring config asks for.

    ``enabled``: serve Prometheus metrics on the REST port. ``path``: the URL path they are
    served at (always set, :data:`DEFAULT_PATH` unless the file names another).
    """

    enabled: bool = False
    path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str = "<text>") -> MonitoringSettings:
    """The settings of a text-format ``MonitoringConfig``; ``source`` names it in errors."""
    from pyserving.protos import monitoring_pb2

    config = parse_text_config(text, monitoring_pb2.MonitoringConfig(), "monitoring config", source)
    prometheus = config.prometheus_config
    path = prometheus.path or DEFAULT_PATH
    if prometheus.enable:
        _check_path(path, source)
    return MonitoringSettings(enabled=prometheus.enable, path=path)


def load_monitoring_config(path: str | os.PathLike[str]) -> MonitoringSettings:
    """Read and parse the monitoring config file at ``path`` (see :func:`parse_monitoring_config`)."""
    return parse_monitoring_config(read_config_text(path, "monitoring config"), os.fspath(path))


def _check_path(path: str, source: str) -> None:
    if not path.startswith("/"):
        raise InvalidArgumentError(
            f"Invalid monitoring config {source}: prometheus_config.path must start with '/', got {path!r}"
        )
    if any(c.isspace() or c in "?#" for c in path):
        raise InvalidArgumentError(
            f"Invalid monitoring config {source}: prometheus_config.path must not contain whitespace, '?' or '#', "
            f"got {path!r}"
        )
