"""``--ssl_config_file`` end to end: the real ``pyserving-model-server`` binary with TLS and
mutual TLS on both ports, talked to by TF Serving's official gRPC stub over
``grpc.secure_channel`` and by ``requests`` over HTTPS; bad SSL config files stop startup
with exit status 1 and a message naming the file.

The model is a python-platform model (``y = 1 * x``), so no SavedModel is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.certificates import KeyAndCert, Pki, make_pki, ssl_config_text
from tests.support.model_drops import write_python_version
from tests.support.server_process import ServerProcess, free_port, start_model_server

pytestmark = pytest.mark.slow

MODEL = "scaler"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    paths = pki.write(folder / "pem")
    write_python_version(folder / "models" / MODEL / "1")
    paths["model_base"] = folder / "models" / MODEL
    paths["one_way"] = folder / "ssl.pbtxt"
    paths["one_way"].write_text(ssl_config_text(pki.server.key, pki.server.cert))
    paths["mutual"] = folder / "mtls.pbtxt"
    paths["mutual"].write_text(ssl_config_text(pki.server.key, pki.server.cert, pki.ca.cert, client_verify=True))
    return paths


def _start(files: dict[str, Path], config: str) -> tuple[ServerProcess, int, int]:
    return start_model_server(
        [f"--model_name={MODEL}", f"--model_base_path={files['model_base']}", f"--ssl_config_file={files[config]}"]
    )


@pytest.fixture(scope="module")
def one_way(files: dict[str, Path]) -> Iterator[tuple[ServerProcess, int, int]]:
    server, grpc_port, rest_port = _start(files, "one_way")
    with server:
        yield server, grpc_port, rest_port


@pytest.fixture(scope="module")
def mutual(files: dict[str, Path]) -> Iterator[tuple[ServerProcess, int, int]]:
    server, grpc_port, rest_port = _start(files, "mutual")
    with server:
        yield server, grpc_port, rest_port


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
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[3.0], tensor_shape={"dim": [{"size": 1}]})
    )
    return list(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
                .outputs["y"].float_val)


def _grpc_health(channel: Any) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService")
    response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=30)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _grpc_refused(channel: Any) -> None:
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        _predict(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _session(files: dict[str, Path], client: str | None = None) -> Any:
    import requests

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace session.verify
    session.verify = str(files["ca"])
    if client is not None:
        session.cert = (str(files[f"{client}_cert"]), str(files[f"{client}_key"]))
    return session


def test_tls_on_both_ports(one_way: tuple[ServerProcess, int, int], pki: Pki, files: dict[str, Path]) -> None:
    import grpc
    import requests

    server, grpc_port, rest_port = one_way
    assert f"Running gRPC ModelServer at 127.0.0.1:{grpc_port} (TLS)" in server.output
    with grpc.secure_channel(f"localhost:{grpc_port}", _credentials(pki)) as channel:
        assert _predict(channel) == [3.0]
        assert _grpc_health(channel) == "SERVING"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        _grpc_refused(channel)
    base = f"https://127.0.0.1:{rest_port}"
    with _session(files) as session:
        assert session.get(f"{base}/v1/health/ready", timeout=30).json() == {"status": "ready"}
        assert session.get(f"{base}/v1/health/live", timeout=30).status_code == 200
        response = session.post(f"{base}/v1/models/{MODEL}:predict", json={"instances": [2.0]}, timeout=30)
        assert response.status_code == 200 and response.json() == {"predictions": [2.0]}
        assert session.get(f"{base}/v1/models/{MODEL}", timeout=30).json()["model_version_status"][0]["state"] == (
            "AVAILABLE"
        )
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{rest_port}/v1/health/ready", timeout=30)


def test_mutual_tls_on_both_ports(mutual: tuple[ServerProcess, int, int], pki: Pki, files: dict[str, Path]) -> None:
    import grpc
    import requests

    server, grpc_port, rest_port = mutual
    assert "(TLS, client certificates required)" in server.output
    for client in (None, pki.stranger):  # no certificate; a certificate from another CA
        with grpc.secure_channel(f"localhost:{grpc_port}", _credentials(pki, client)) as channel:
            _grpc_refused(channel)
    with grpc.secure_channel(f"localhost:{grpc_port}", _credentials(pki, pki.client)) as channel:
        assert _predict(channel) == [3.0]
        assert _grpc_health(channel) == "SERVING"
    url = f"https://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict"
    for client_name in (None, "stranger"):
        with _session(files, client_name) as session, pytest.raises(requests.exceptions.ConnectionError):
            session.post(url, json={"instances": [1.0]}, timeout=30)
    with _session(files, "client") as session:
        assert session.post(url, json={"instances": [5.0]}, timeout=30).json() == {"predictions": [5.0]}
        ready = session.get(f"https://127.0.0.1:{rest_port}/v1/health/ready", timeout=30)
        assert ready.json() == {"status": "ready"}


def _bad_configs(pki: Pki) -> dict[str, tuple[str, str]]:
    garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    return {
        "missing_key": (ssl_config_text("", pki.server.cert), "server_key must hold the server's PEM private key"),
        "garbage_pem": (ssl_config_text(pki.server.key, garbage), "server_cert is not a valid PEM certificate"),
        "no_custom_ca": (
            ssl_config_text(pki.server.key, pki.server.cert, client_verify=True),
            "client_verify is true but custom_ca is empty",
        ),
        "syntax": ("server_key: oops\n", "Cannot parse SSL config"),
    }


@pytest.mark.parametrize("case", ["missing_key", "garbage_pem", "no_custom_ca", "syntax", "missing_file"])
def test_bad_ssl_config_fails_startup(case: str, pki: Pki, files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / f"{case}.pbtxt"
    if case != "missing_file":
        text, expected = _bad_configs(pki)[case]
        path.write_text(text)
    else:
        expected = "Cannot read SSL config file"
    args = [
        f"--port={free_port()}", f"--rest_api_port={free_port()}",
        f"--model_base_path={files['model_base']}", f"--ssl_config_file={path}",
    ]
    with ServerProcess(args) as server:
        assert server.wait_exit(60) == 1
    assert "Failed to start server. Error: " in server.output
    assert str(path) in server.output and expected in server.output
    assert "PRIVATE KEY" not in server.output
