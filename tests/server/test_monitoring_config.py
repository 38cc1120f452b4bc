"""Tests for pyserving.server.monitoring_config and pyserving/protos/monitoring.proto."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.server.monitoring_config import (
    DEFAULT_PATH,
    MonitoringSettings,
    load_monitoring_config,
    parse_monitoring_config,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    return path


def test_tf_servings_documented_file_parses_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, 'prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    assert load_monitoring_config(path) == MonitoringSettings(enabled=True, path="/monitoring/prometheus/metrics")


def test_custom_path_and_defaults() -> None:
    assert parse_monitoring_config('prometheus_config { enable: true path: "/metrics" }') == MonitoringSettings(
        True, "/metrics"
    )
    assert parse_monitoring_config("prometheus_config { enable: true }") == MonitoringSettings(True, DEFAULT_PATH)
    assert parse_monitoring_config("") == MonitoringSettings(False, DEFAULT_PATH)
    assert parse_monitoring_config("# nothing enabled\nprometheus_config { }") == MonitoringSettings(False, DEFAULT_PATH)
    assert DEFAULT_PATH == "/monitoring/prometheus/metrics"


def test_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "prometheus_config {\n  enable: true\n  port: 8080\n}\n")
    with pytest.raises(InvalidArgumentError) as info:
        load_monitoring_config(path)
    assert info.value.message.startswith(f"Cannot parse monitoring config {path} line 3 column 3: ")
    assert '"port"' in info.value.message
    with pytest.raises(InvalidArgumentError, match=r"Cannot parse monitoring config <text> line 1 column \d+"):
        parse_monitoring_config("prometheus_config { enable: sometimes }")
    with pytest.raises(InvalidArgumentError, match="Cannot parse monitoring config x.cfg line 2"):
        parse_monitoring_config("prometheus_config {\n  enable = true\n}\n", "x.cfg")


@pytest.mark.parametrize("bad", ["metrics", "monitoring/prometheus", "/metrics?x=1", "/a b", "/m#top"])
def test_an_enabled_path_must_be_absolute_and_plain(bad: str) -> None:
    text = f'prometheus_config {{ enable: true path: "{bad}" }}'
    with pytest.raises(InvalidArgumentError) as info:
        parse_monitoring_config(text, "m.cfg")
    assert info.value.message.startswith("Invalid monitoring config m.cfg: prometheus_config.path must ")
    assert repr(bad) in info.value.message


def test_a_disabled_config_is_not_checked() -> None:
    assert parse_monitoring_config('prometheus_config { path: "metrics" }') == MonitoringSettings(False, "metrics")


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.config"
    with pytest.raises(NotFoundError, match=f"Cannot read monitoring config file {missing}: "):
        load_monitoring_config(missing)
    latin = tmp_path / "latin.config"
    latin.write_bytes('prometheus_config { path: "/m\xe9" }'.encode("latin-1"))
    with pytest.raises(InvalidArgumentError, match=f"Cannot parse monitoring config {latin}: not UTF-8 text"):
        load_monitoring_config(latin)


def test_proto_has_tf_servings_field_names_and_numbers_and_is_generated() -> None:
    from pyserving.protos import monitoring_pb2

    config = monitoring_pb2.MonitoringConfig.DESCRIPTOR
    assert [(f.name, f.number) for f in config.fields] == [("prometheus_config", 1)]
    prometheus = monitoring_pb2.PrometheusConfig.DESCRIPTOR
    assert [(f.name, f.number, f.type) for f in prometheus.fields] == [
        ("enable", 1, prometheus.fields[0].TYPE_BOOL),
        ("path", 2, prometheus.fields[1].TYPE_STRING),
    ]
    # The same bytes as TF Serving's message: enable=true, path="/p".
    message = monitoring_pb2.MonitoringConfig()
    message.prometheus_config.enable = True
    message.prometheus_config.path = "/p"
    assert message.SerializeToString() == b"\x0a\x06\x08\x01\x12\x02/p"
    proto = ROOT / "pyserving" / "protos" / "monitoring.proto"
    generated = (ROOT / "pyserving" / "protos" / "monitoring_pb2.py").read_text()
    assert f"Source SHA-256: {hashlib.sha256(proto.read_bytes()).hexdigest()}" in generated, (
        "monitoring.proto changed: run python tools/gen_protos.py"
    )
