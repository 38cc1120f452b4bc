"""TLS and mutual TLS (``--ssl_config_file``): the SSLConfig file, its validation, and both
front ends serving it in-process with real certificates and real clients.

Fast tests check :mod:`pyserving.server.tls` (parsing, every rule, the error messages naming
the file) and the flag; the ``slow`` tests start the gRPC and REST servers over a
:class:`StaticServingCore` and talk to them with TF Serving's official stub over
``grpc.secure_channel`` and with ``requests`` over HTTPS. Certificates are made fresh for
this module by :mod:`tests.support.certificates`.
"""

from __future__ import annotations

import ssl
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.servable.ids import ServableId
from pyserving.server.flags import FlagStatus, FLAGS, parse_model_server_args
from pyserving.server.main import settings_from_flags
from pyserving.server.tls import TlsSettings, load_ssl_config, parse_ssl_config, rest_ssl_context
from pyserving.testing import HalfPlusTwoServable, StaticServingCore
from tests.support.certificates import KeyAndCert, Pki, issue, make_ca, make_pki, ssl_config_text

# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def pem_files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.write(tmp_path_factory.mktemp("pem"))


def _write(folder: Path, text: str, name: str = "ssl.pbtxt") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        load_ssl_config(path)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


# -- the SSLConfig file --------------------------------------------------------------------


def test_a_valid_file_loads_with_tf_serving_field_names(pki: Pki, tmp_path: Path) -> None:
    path = _write(tmp_path, ssl_config_text(pki.server.key, pki.server.cert, pki.ca.cert, client_verify=True))
    settings = load_ssl_config(path)
    assert settings.server_key == pki.server.key and settings.server_cert == pki.server.cert
    assert settings.custom_ca == pki.ca.cert and settings.client_verify is True
    assert settings.source == str(path)
    assert "PRIVATE KEY" not in repr(settings) and "CERTIFICATE" not in repr(settings)


def test_hand_written_text_with_tf_serving_syntax(pki: Pki) -> None:
    escaped = pki.server.cert.replace("\n", "\\n")
    key = pki.server.key.replace("\n", "\\n")
    settings = parse_ssl_config(f'server_key: "{key}"\nserver_cert: "{escaped}"\n', "hand.pbtxt")
    assert settings.client_verify is False and settings.custom_ca == ""


def test_a_certificate_chain_is_accepted(pki: Pki) -> None:
    TlsSettings(pki.server.key, pki.server.cert + pki.ca.cert)


def test_proto_matches_tf_serving_numbers() -> None:
    from pyserving.protos import ssl_config_pb2

    fields = {f.name: (f.number, f.type) for f in ssl_config_pb2.SSLConfig.DESCRIPTOR.fields}
    string, boolean = 9, 8  # FieldDescriptor.TYPE_STRING, TYPE_BOOL
    assert fields == {
        "server_key": (1, string), "server_cert": (2, string), "custom_ca": (3, string), "client_verify": (4, boolean)
    }


def test_missing_key(pki: Pki, tmp_path: Path) -> None:
    message = _error(_write(tmp_path, ssl_config_text("", pki.server.cert)))
    assert "server_key must hold the server's PEM private key, got an empty value" in message


def test_missing_cert(pki: Pki, tmp_path: Path) -> None:
    assert "server_cert must hold" in _error(_write(tmp_path, ssl_config_text(pki.server.key, "")))


def test_garbage_pem(pki: Pki, tmp_path: Path) -> None:
    broken_cert = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    message = _error(_write(tmp_path, ssl_config_text(pki.server.key, broken_cert)))
    assert "server_cert is not a valid PEM certificate" in message
    broken_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    message = _error(_write(tmp_path, ssl_config_text(broken_key, pki.server.cert)))
    assert "server_key is not a valid PEM private key" in message
    message = _error(_write(tmp_path, ssl_config_text("just some words", pki.server.cert)))
    assert "server_key must be PEM text starting with '-----BEGIN'" in message
    assert "just some words" not in message and "not shown" in message  # a key is never printed


def test_file_names_instead_of_pem_text_get_a_hint(pki: Pki, tmp_path: Path) -> None:
    message = _error(_write(tmp_path, ssl_config_text(pki.server.key, "/etc/certs/server.crt")))
    assert "'/etc/certs/server.crt'" in message and "looks like a file name" in message
    message = _error(_write(tmp_path, ssl_config_text("certs/server.key", pki.server.cert)))
    assert "server_key must be PEM text" in message and "'certs/server.key' (it looks like a file name" in message


def test_key_of_another_certificate(pki: Pki, tmp_path: Path) -> None:
    message = _error(_write(tmp_path, ssl_config_text(pki.client.key, pki.server.cert)))
    assert "server_key is not the private key of server_cert" in message


def test_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.server.key.encode(), password=None)
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        encrypted = key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(b"secret")
        ).decode()
        assert "server_key is encrypted" in _error(_write(tmp_path, ssl_config_text(encrypted, pki.server.cert)))


def test_client_verify_without_custom_ca(pki: Pki, tmp_path: Path) -> None:
    message = _error(_write(tmp_path, ssl_config_text(pki.server.key, pki.server.cert, client_verify=True)))
    assert "client_verify is true but custom_ca is empty" in message


def test_custom_ca_must_be_certificates(pki: Pki, tmp_path: Path) -> None:
    message = _error(_write(tmp_path, ssl_config_text(pki.server.key, pki.server.cert, pki.ca.key, True)))
    assert "custom_ca is not a valid PEM certificate" in message


def test_syntax_errors_and_unknown_fields(tmp_path: Path) -> None:
    assert "Cannot parse SSL config" in _error(_write(tmp_path, "server_key: 'unterminated\n"))
    assert "server_path" in _error(_write(tmp_path, 'server_path: "/x"\n'))
    (tmp_path / "binary.pbtxt").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in _error(tmp_path / "binary.pbtxt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="Cannot read SSL config file .*nowhere.pbtxt"):
        load_ssl_config(tmp_path / "nowhere.pbtxt")


def test_rest_context(pki: Pki) -> None:
    plain = rest_ssl_context(TlsSettings(pki.server.key, pki.server.cert, pki.ca.cert))
    assert plain.verify_mode == ssl.CERT_NONE  # custom_ca alone requests nothing (TF Serving)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    mutual = rest_ssl_context(TlsSettings(pki.server.key, pki.server.cert, pki.ca.cert, client_verify=True))
    assert mutual.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in mutual.get_ca_certs()] == [((("commonName", "pyserving test CA"),),)]


def test_no_key_file_stays_behind(pki: Pki) -> None:
    before = set(Path(tempfile.gettempdir()).glob("pyserving-tls-*"))
    rest_ssl_context(TlsSettings(pki.server.key, pki.server.cert))
    assert set(Path(tempfile.gettempdir()).glob("pyserving-tls-*")) == before


# -- the flag ------------------------------------------------------------------------------


def test_flag_is_implemented_and_loaded(pki: Pki, tmp_path: Path) -> None:
    spec = next(s for s in FLAGS if s.name == "ssl_config_file")
    assert spec.status is FlagStatus.IMPLEMENTED
    path = _write(tmp_path, ssl_config_text(pki.server.key, pki.server.cert))
    options = parse_model_server_args([f"--model_base_path={tmp_path}", f"--ssl_config_file={path}"])
    settings = settings_from_flags(options)
    assert settings.tls is not None and settings.tls.source == str(path)
    assert settings_from_flags(parse_model_server_args([f"--model_base_path={tmp_path}"])).tls is None


def test_flag_with_a_bad_file_fails_naming_it(pki: Pki, tmp_path: Path) -> None:
    path = _write(tmp_path, ssl_config_text(pki.server.key, pki.server.cert, client_verify=True))
    options = parse_model_server_args([f"--model_base_path={tmp_path}", f"--ssl_config_file={path}"])
    with pytest.raises(InvalidArgumentError, match=f"Invalid SSL config {path}: client_verify"):
        settings_from_flags(options)


# -- the servers -----------------------------------------------------------------------------


def _core() -> StaticServingCore:
    return StaticServingCore({ServableId("half", 1): HalfPlusTwoServable()})


class Servers:
    """gRPC (TCP and a UNIX socket) and REST, both with ``tls``; stopped by the fixture."""

    def __init__(self, tls: TlsSettings, socket_path: str) -> None:
        from pyserving.server.data_plane import DataPlane
        from pyserving.server.grpc_server import GrpcServerOptions, start_grpc_server
        from pyserving.server.rest_server import RestServerOptions, start_rest_server

        plane = DataPlane(_core())
        self.grpc = start_grpc_server(
            plane, lambda config: None,
            GrpcServerOptions(host="127.0.0.1", port=0, socket_path=socket_path, max_threads=4, tls=tls),
        )
        try:
            self.rest = start_rest_server(plane, RestServerOptions(host="127.0.0.1", port=0, num_threads=2, tls=tls))
        except BaseException:
            self.grpc.stop(0)
            raise
        self.socket_path = socket_path

    def stop(self) -> None:
        self.rest.stop(1)
        self.grpc.stop(1)


@pytest.fixture(scope="module")
def one_way(pki: Pki) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="tls-") as folder:
        servers = Servers(TlsSettings(pki.server.key, pki.server.cert), f"{folder}/grpc.sock")
        try:
            yield servers
        finally:
            servers.stop()


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="mtls-") as folder:
        servers = Servers(TlsSettings(pki.server.key, pki.server.cert, pki.ca.cert, True), f"{folder}/grpc.sock")
        try:
            yield servers
        finally:
            servers.stop()


def _credentials(pki: Pki, client: KeyAndCert | None = None) -> Any:
    import grpc

    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.cert.encode())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.encode(), private_key=client.key.encode(), certificate_chain=client.cert.encode()
    )


def _predict(channel: Any) -> list[float]:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0], tensor_shape={"dim": [{"size": 2}]})
    )
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return list(response.outputs["y"].float_val)


def _health(channel: Any) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _refused(channel: Any) -> Any:
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        _predict(channel)
    return info.value.code()


@pytest.mark.slow
def test_grpc_over_tls_with_the_official_stub(one_way: Servers, pki: Pki) -> None:
    import grpc

    with grpc.secure_channel(f"127.0.0.1:{one_way.grpc.port}", _credentials(pki)) as channel:
        assert _predict(channel) == [2.5, 3.0]
        assert _health(channel) == "SERVING"
    with grpc.secure_channel(f"localhost:{one_way.grpc.port}", _credentials(pki)) as channel:
        assert _predict(channel) == [2.5, 3.0]


@pytest.mark.slow
def test_grpc_unix_socket_is_tls_too(one_way: Servers, pki: Pki) -> None:
    import grpc

    override = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"unix:{one_way.socket_path}", _credentials(pki), options=override) as channel:
        assert _predict(channel) == [2.5, 3.0]
    with grpc.insecure_channel(f"unix:{one_way.socket_path}") as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_plaintext_grpc_client_is_refused(one_way: Servers, pki: Pki) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{one_way.grpc.port}") as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the server's CA is refused by its own side.
    other = grpc.ssl_channel_credentials(root_certificates=pki.other_ca.cert.encode())
    with grpc.secure_channel(f"127.0.0.1:{one_way.grpc.port}", other) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(f"127.0.0.1:{one_way.grpc.port}", _credentials(pki)) as channel:
        assert _predict(channel) == [2.5, 3.0]  # still serving


@pytest.mark.slow
def test_rest_over_https(one_way: Servers, pem_files: dict[str, Path]) -> None:
    import requests

    base = f"https://127.0.0.1:{one_way.rest.port}"
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace session.verify
        session.verify = str(pem_files["ca"])
        response = session.post(f"{base}/v1/models/half:predict", json={"instances": [1.0, 2.0]}, timeout=30)
        assert response.status_code == 200 and response.json() == {"predictions": [2.5, 3.0]}
        assert session.get(f"{base}/v1/health/ready", timeout=30).json() == {"status": "ready"}
        assert session.get(f"{base}/v1/health/live", timeout=30).status_code == 200
        assert session.get(f"https://localhost:{one_way.rest.port}/v1/models/half", timeout=30).status_code == 200


@pytest.mark.slow
def test_plain_http_to_the_tls_port_fails(one_way: Servers, pem_files: dict[str, Path]) -> None:
    import requests

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{one_way.rest.port}/v1/health/ready", timeout=30)
    with pytest.raises(requests.exceptions.SSLError):  # the client does not trust an unknown CA
        requests.get(f"https://127.0.0.1:{one_way.rest.port}/v1/health/ready", timeout=30)
    response = requests.get(f"https://127.0.0.1:{one_way.rest.port}/v1/health/ready", verify=str(pem_files["ca"]),
                            timeout=30)
    assert response.status_code == 200  # still serving


@pytest.mark.slow
def test_mutual_tls_grpc(mutual: Servers, pki: Pki) -> None:
    import grpc

    target = f"127.0.0.1:{mutual.grpc.port}"
    with grpc.secure_channel(target, _credentials(pki)) as channel:  # no client certificate
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, _credentials(pki, pki.stranger)) as channel:  # signed by another CA
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(target) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, _credentials(pki, pki.client)) as channel:
        assert _predict(channel) == [2.5, 3.0]
        assert _health(channel) == "SERVING"


@pytest.mark.slow
def test_mutual_tls_rest(mutual: Servers, pem_files: dict[str, Path]) -> None:
    import requests

    url = f"https://127.0.0.1:{mutual.rest.port}/v1/health/ready"
    ca = str(pem_files["ca"])
    with pytest.raises(requests.exceptions.ConnectionError):  # no client certificate
        requests.get(url, verify=ca, timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # signed by another CA
        requests.get(url, verify=ca, cert=(str(pem_files["stranger_cert"]), str(pem_files["stranger_key"])),
                     timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https", "http"), timeout=30)
    client = (str(pem_files["client_cert"]), str(pem_files["client_key"]))
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace session.verify
        session.verify, session.cert = ca, client
        assert session.get(url, timeout=30).json() == {"status": "ready"}
        response = session.post(url.replace("health/ready", "models/half:predict"), json={"instances": [4.0]},
                                timeout=30)
        assert response.json() == {"predictions": [4.0]}


@pytest.mark.slow
def test_client_ca_may_differ_from_the_server_ca(pki: Pki, tmp_path: Path) -> None:
    """custom_ca names who signs *clients*; the server's own certificate may come from elsewhere."""
    import grpc

    client_ca = make_ca("client CA")
    client = issue(client_ca, "client", server=False)
    servers = Servers(TlsSettings(pki.server.key, pki.server.cert, client_ca.cert, True), str(tmp_path / "g.sock"))
    try:
        with grpc.secure_channel(f"127.0.0.1:{servers.grpc.port}", _credentials(pki, client)) as channel:
            assert _predict(channel) == [2.5, 3.0]
        with grpc.secure_channel(f"127.0.0.1:{servers.grpc.port}", _credentials(pki, pki.client)) as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        servers.stop()


@pytest.mark.slow
def test_stop_does_not_wait_for_idle_keep_alive_tls_clients(
    pki: Pki, pem_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS close waits for the client's close_notify, which an idle client never sends;
    the server drops such connections, so the grace period is not spent on them."""
    import requests

    from pyserving.server.data_plane import DataPlane
    from pyserving.server.rest_server import RestServerOptions, start_rest_server

    tls = TlsSettings(pki.server.key, pki.server.cert)
    handle = start_rest_server(DataPlane(_core()), RestServerOptions(host="127.0.0.1", port=0, num_threads=1, tls=tls))
    with requests.Session() as session:
        session.trust_env = False
        session.verify = str(pem_files["ca"])
        try:
            assert session.get(f"https://127.0.0.1:{handle.port}/v1/health/live", timeout=30).status_code == 200
        finally:  # the session's connection stays open and idle while the server stops
            with caplog.at_level("INFO"):
                handle.stop(grace_s=5)
    assert not handle.running
    assert "timeout graceful shutdown exceeded" not in caplog.text


def test_pem_files_for_clients_are_private(pem_files: dict[str, Path]) -> None:
    assert stat.S_IMODE(pem_files["client_key"].stat().st_mode) == 0o600
