"""End to end: flags and process behaviour of ``pyserving-model-server`` and ``pyserving``.

Every server here is the real binary in a subprocess on free loopback ports. Waits are
bounded polls of an observable condition (output lines, HTTP status, model status); every
server is stopped in teardown, and where the test is about shutdown it checks that SIGTERM
ends the process with status 0 within a bounded time.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np
import pytest
import requests

from tests.support.saved_models import write_half_plus_two_tf1
from tests.support.polling import wait_for as poll_wait_for
from tests.support.server_process import ServerProcess, free_port, start_model_server

pytestmark = pytest.mark.slow

DEMO_BASE = Path(__file__).resolve().parents[2] / "pyserving" / "data" / "half_plus_two"
DEMO_VERSION_DIR = DEMO_BASE / "00000123"
TIMEOUT_S = 30.0
#: Bound on anything the server does in the background (version pick-up, config poll, unload).
CHANGE_WAIT_S = 60.0
#: Bound on a clean exit after SIGTERM.
SHUTDOWN_S = 30.0

#: A ``python``-platform model: y = factor * x, where the factor is the version number.
PYTHON_MODEL = '''
import numpy as np

from pyserving.servable.signature import DType, SignatureSpec, TensorSpec


class Scaler:
    def __init__(self, factor):
        self.factor = factor
        self.signatures = {
            "serving_default": SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, (None,))}, {"y": TensorSpec(DType.FLOAT, (None,))}
            )
        }

    def run(self, signature_name, inputs, output_filter=()):
        return {"y": (inputs["x"] * self.factor).astype(np.float32)}


def create_servable(version_dir):
    return Scaler(float(version_dir.name))
'''


def write_python_model(version_dir: Path) -> None:
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(PYTHON_MODEL)


def copy_demo(base_path: Path, version: int) -> Path:
    target = base_path / str(version)
    shutil.copytree(DEMO_VERSION_DIR, target)
    return target


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = CHANGE_WAIT_S) -> Any:
    """Poll ``condition`` until truthy (a server not answering yet counts as "not yet")."""
    return poll_wait_for(condition, what, timeout_s, 0.1, (requests.RequestException, grpc.RpcError))


def run_to_exit(args: list[str], program: str = "pyserving-model-server", timeout_s: float = 60.0) -> tuple[int, str]:
    process = ServerProcess(args, program=program)
    try:
        code = process.wait_exit(timeout_s)
    finally:
        process.stop()
    return code, process.output


def rest_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def predict(rest_port: int, model: str, instances: list[Any], suffix: str = "") -> requests.Response:
    return requests.post(
        f"{rest_url(rest_port)}/v1/models/{model}{suffix}:predict", json={"instances": instances}, timeout=TIMEOUT_S
    )


def states(rest_port: int, model: str) -> dict[str, str]:
    """version -> state from the REST status of ``model`` ({} when the model is unknown)."""
    response = requests.get(f"{rest_url(rest_port)}/v1/models/{model}", timeout=TIMEOUT_S)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


def assert_sigterm_exits_zero(process: ServerProcess) -> None:
    started = time.monotonic()
    code = process.stop(timeout_s=SHUTDOWN_S)
    assert code == 0, f"exit status {code} {time.monotonic() - started:.1f} s after SIGTERM:\n{process.output[-3000:]}"


# -- flags that end the process before any model loads ----------------------------------------


def test_version_prints_tensorflow_model_server_and_exits_zero() -> None:
    code, output = run_to_exit(["--version"])
    assert code == 0, output
    assert output.startswith("TensorFlow ModelServer:")
    assert "TensorFlow Library:" in output


def test_help_exits_zero_and_lists_flags() -> None:
    code, output = run_to_exit(["--help"])
    assert code == 0, output
    assert "--model_config_file" in output and "--rest_api_port" in output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model_base_path=/m", "--no_such_flag=1"], "--no_such_flag"),
        (["--model_base_path=/m", "--port=abc"], "--port: 'abc'"),
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (["--model_base_path=/m", "--tensorflow_session_config_file=/s.pbtxt"],
         "not supported yet: --tensorflow_session_config_file"),
        (["--model_base_path=/m", "--port=0"],
         "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."),
    ],
    ids=["unknown flag", "bad port", "no model source", "later flag", "no grpc endpoint"],
)
def test_bad_command_lines_exit_non_zero_naming_the_problem(args: list[str], expected: str) -> None:
    code, output = run_to_exit(args)
    assert code != 0, output
    assert expected in output, output


def test_bad_model_config_files_fail_to_start(tmp_path: Path) -> None:
    relative = tmp_path / "relative.config"
    relative.write_text("model_config_list { config { name: 'a' base_path: 'models/a' model_platform: 'tensorflow' } }")
    for config, expected in (
        (relative, "Expected model a to have an absolute path or URI; got base_path()=models/a"),
        (tmp_path / "missing.config", f"Failed to read ModelServerConfig file {tmp_path / 'missing.config'}"),
    ):
        code, output = run_to_exit([f"--port={free_port()}", "--rest_api_port=0", f"--model_config_file={config}"])
        assert code == 1, output
        assert "Failed to start server. Error: " + expected in output, output


def test_missing_base_path_fails_to_start(tmp_path: Path) -> None:
    code, output = run_to_exit([f"--port={free_port()}", "--rest_api_port=0",
                                f"--model_base_path={tmp_path / 'no_such_model'}"])
    assert code == 1, output
    assert "Failed to start server" in output
    assert f"Could not find base path {tmp_path / 'no_such_model'}" in output


@pytest.mark.parametrize("case", ["garbage saved_model.pb", "no meta graph with the tags"])
def test_model_whose_only_version_cannot_load_fails_to_start(tmp_path: Path, case: str) -> None:
    base = tmp_path / "broken"
    if case == "garbage saved_model.pb":
        (base / "1").mkdir(parents=True)
        (base / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        extra, reason = [], "Cannot parse the SavedModel"
    else:
        copy_demo(base, 1)
        extra, reason = ["--saved_model_tags=gpu"], "Could not find meta graph def matching supplied tags: { gpu }"
    code, output = run_to_exit([f"--port={free_port()}", "--rest_api_port=0", "--max_num_load_retries=0",
                                "--model_name=broken", f"--model_base_path={base}", *extra])
    assert code == 1, output
    assert "Failed to start server. Error: 1 servable(s) did not become available" in output
    assert "{name: broken version: 1}" in output and reason in output, output


def test_a_port_in_use_fails_to_start_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run_to_exit([f"--port={port}", "--rest_api_port=0", f"--model_base_path={DEMO_BASE}"])
    assert code == 1, output
    assert f"Failed to start server. Error: Could not bind gRPC port at 127.0.0.1:{port}" in output


# -- one server started with "--flag value" arguments -----------------------------------------


@pytest.fixture(scope="module")
def flag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, int, Path]]:
    base = tmp_path_factory.mktemp("watched") / "half"
    copy_demo(base, 1)
    grpc_port, rest_port = free_port(), free_port()
    process = ServerProcess([
        "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        "--model_name", "half", "--model_base_path", str(base),
        "--file_system_poll_wait_seconds", "1",
        "--enable_profiler=false", "--xla_cpu_compilation_enabled",
    ])
    try:
        if not process.wait_for_output("Exporting HTTP/REST API", 90):
            pytest.fail(f"server did not start:\n{process.output}")
        yield process, grpc_port, rest_port, base
    finally:
        process.stop()


def test_flags_in_name_value_form_serve_the_model(flag_server: tuple[ServerProcess, int, int, Path]) -> None:
    _, grpc_port, rest_port, _ = flag_server
    response = predict(rest_port, "half", [1.0, 2.0, 5.0])
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert f"Running gRPC ModelServer at 127.0.0.1:{grpc_port}" in flag_server[0].output


def test_not_applicable_flags_give_exactly_one_warning(flag_server: tuple[ServerProcess, int, int, Path]) -> None:
    lines = [line for line in flag_server[0].output.splitlines() if "Ignoring flags" in line]
    assert len(lines) == 1, lines
    assert "--enable_profiler" in lines[0] and "--xla_cpu_compilation_enabled" in lines[0]


def test_new_version_renamed_into_the_watched_folder_takes_over(
    flag_server: tuple[ServerProcess, int, int, Path], tmp_path: Path
) -> None:
    _, _, rest_port, base = flag_server
    assert states(rest_port, "half") == {"1": "AVAILABLE"}
    staging = tmp_path / "export"
    write_half_plus_two_tf1(staging, b=3.0, any_shape_x=True)  # y = 0.5 x + 3
    staging.rename(base / "2")

    wait_for(lambda: states(rest_port, "half") == {"2": "AVAILABLE", "1": "END"},
             "version 2 AVAILABLE and version 1 END")
    response = predict(rest_port, "half", [1.0, 2.0])
    assert response.json() == {"predictions": [3.5, 4.0]}
    gone = predict(rest_port, "half", [1.0], suffix="/versions/1")
    assert gone.status_code == 404
    assert gone.json() == {"error": "Servable not found for request: Specific(half, 1)"}


# -- gRPC on a UNIX socket; HandleReloadConfigRequest; SIGTERM -------------------------------


def _reload_config(stub: Any, models: list[tuple[str, Path, str]]) -> Any:
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    for name, base_path, platform in models:
        entry = request.config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str(base_path)
        entry.model_platform = platform
    return stub.HandleReloadConfigRequest(request, timeout=CHANGE_WAIT_S)


def _grpc_predict(stub: Any, model: str, x: np.ndarray) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return stub.Predict(request, timeout=TIMEOUT_S)


def test_unix_socket_reload_config_rpc_and_sigterm(tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    first, second = tmp_path / "first", tmp_path / "second"
    copy_demo(first, 1)
    write_python_model(second / "3")  # y = 3 x
    socket_path = tmp_path / "grpc.sock"
    rest_port = free_port()
    process = ServerProcess(["--port=0", f"--grpc_socket_path={socket_path}", f"--rest_api_port={rest_port}",
                             "--model_name=first", f"--model_base_path={first}"])
    try:
        assert process.wait_for_output("Exporting HTTP/REST API", 90), process.output
        assert f"Running gRPC ModelServer at UNIX socket {socket_path}" in process.output
        assert "Running gRPC ModelServer at 127.0.0.1" not in process.output  # --port=0: no TCP port

        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            response = _grpc_predict(prediction, "first", np.array([[2.0]], np.float32))
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [[3.0]])

            added = _reload_config(models, [("first", first, "tensorflow"), ("second", second, "python")])
            assert added.status.error_code == 0
            response = _grpc_predict(prediction, "second", np.array([1.0, 2.0], np.float32))
            assert response.model_spec.version.value == 3
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 6.0])

            ghost = tmp_path / "ghost"  # no such folder: the reload fails at once, nothing else changes
            with pytest.raises(grpc.RpcError) as info:
                _reload_config(models, [("first", first, "tensorflow"), ("second", second, "python"),
                                        ("ghost", ghost, "tensorflow")])
            assert info.value.code() is grpc.StatusCode.UNKNOWN
            assert f"Could not find base path {ghost} for servable ghost" in info.value.details()
            _grpc_predict(prediction, "first", np.array([[2.0]], np.float32))
            _grpc_predict(prediction, "second", np.array([1.0], np.float32))

            _reload_config(models, [("second", second, "python")])
            wait_for(lambda: states(rest_port, "first") in ({"1": "END"}, {}), "model first unloaded")
            with pytest.raises(grpc.RpcError) as info:
                _grpc_predict(prediction, "first", np.array([[2.0]], np.float32))
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert info.value.details() == "Servable not found for request: Latest(first)"
            response = _grpc_predict(prediction, "second", np.array([1.0], np.float32))
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0])
        assert_sigterm_exits_zero(process)
    finally:
        process.stop()


# -- --model_config_file_poll_wait_seconds ---------------------------------------------------


def _write_config(path: Path, models: list[tuple[str, Path, str]]) -> None:
    """Replace ``path`` atomically (written beside it, then renamed), as a deploy tool would."""
    entries = "".join(
        f"  config {{ name: '{name}' base_path: '{base}' model_platform: '{platform}' }}\n"
        for name, base, platform in models
    )
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("model_config_list {\n" + entries + "}\n")
    os.replace(staging, path)


def test_edited_config_file_is_picked_up_by_the_poll(tmp_path: Path) -> None:
    half, scaler = tmp_path / "half", tmp_path / "scaler"
    copy_demo(half, 123)
    write_python_model(scaler / "2")  # y = 2 x
    config = tmp_path / "models.config"
    _write_config(config, [("half", half, "tensorflow")])
    process, _, rest_port = start_model_server(
        [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    )
    try:
        assert predict(rest_port, "half", [2.0]).json() == {"predictions": [3.0]}
        assert predict(rest_port, "scaler", [2.0]).status_code == 404

        _write_config(config, [("half", half, "tensorflow"), ("scaler", scaler, "python")])
        wait_for(lambda: predict(rest_port, "scaler", [2.0]).status_code == 200, "model scaler served")
        assert predict(rest_port, "scaler", [2.0]).json() == {"predictions": [4.0]}

        _write_config(config, [("scaler", scaler, "python")])
        wait_for(lambda: predict(rest_port, "half", [2.0]).status_code == 404, "model half no longer served")
        assert predict(rest_port, "scaler", [1.5]).json() == {"predictions": [3.0]}

        config.write_text("model_config_list { config { name: 'broken' ")  # a bad edit keeps the old config
        wait_for(lambda: "Failed to read ModelServerConfig file" in process.output, "the parse error logged")
        assert predict(rest_port, "scaler", [1.0]).json() == {"predictions": [2.0]}
        assert_sigterm_exits_zero(process)
    finally:
        process.stop()


# -- pyserving serve ---------------------------------------------------------------------------


def _serve(paths: list[str]) -> tuple[ServerProcess, int]:
    rest_port = free_port()
    process = ServerProcess(["serve", *paths, f"--port={free_port()}", f"--rest_api_port={rest_port}"],
                            program="pyserving")
    if not process.wait_for_output("Press Ctrl-C to stop.", 90):
        process.stop()
        pytest.fail(f"pyserving serve did not start:\n{process.output}")
    return process, rest_port


def test_pyserving_serve_without_path_serves_the_demo_model() -> None:
    process, rest_port = _serve([])
    try:
        curl = [line for line in process.output.splitlines() if "curl" in line]
        assert curl and ":predict" in curl[0], process.output
        assert f"localhost:{rest_port}/v1/models/half_plus_two:predict" in curl[0]
        response = predict(rest_port, "half_plus_two", [1.0, 2.0, 5.0])
        assert response.json() == {"predictions": [2.5, 3.0, 4.5]}
        assert states(rest_port, "half_plus_two") == {"123": "AVAILABLE"}
        assert_sigterm_exits_zero(process)
    finally:
        process.stop()


def test_pyserving_serve_a_single_model_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "my_model"
    shutil.copytree(DEMO_VERSION_DIR, model_dir)
    process, rest_port = _serve([str(model_dir)])
    try:
        assert states(rest_port, "my_model") == {"1": "AVAILABLE"}
        assert predict(rest_port, "my_model", [4.0]).json() == {"predictions": [4.0]}
        assert_sigterm_exits_zero(process)
    finally:
        process.stop()


def test_pyserving_serve_the_base_path_of_a_python_model(tmp_path: Path) -> None:
    base = tmp_path / "scaler"
    write_python_model(base / "1")
    write_python_model(base / "5")
    process, rest_port = _serve([str(base)])
    try:
        assert "scaler" in process.output and "python" in process.output
        assert states(rest_port, "scaler") == {"5": "AVAILABLE"}
        assert predict(rest_port, "scaler", [1.0, 2.0]).json() == {"predictions": [5.0, 10.0]}
        assert_sigterm_exits_zero(process)
    finally:
        process.stop()


def test_pyserving_help_names_the_three_ways() -> None:
    code, output = run_to_exit(["--help"], program="pyserving")
    assert code == 0, output
    text = output.lower()
    assert "three ways" in text
    for way in ("library", "pyserving-model-server", "watch"):
        assert way in text, way
