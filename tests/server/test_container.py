"""The container: the Python entrypoint, the Dockerfile, the Kubernetes manifest, and (when a
container engine is usable) the image itself, built and run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from pyserving.server import container
from pyserving.server.flags import parse_model_server_args
from tests.support.model_drops import write_python_version
from tests.support.polling import wait_for
from tests.support.server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
MANIFEST = ROOT / "deploy" / "kubernetes.yaml"


# --- the entrypoint ----------------------------------------------------------------------------


@pytest.fixture()
def server_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replaces the server's main: records each argv it is called with, returns 7."""
    import pyserving.server.main as server_main

    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(list(argv))
        return 7

    monkeypatch.setattr(server_main, "main", fake_main)
    return calls


@pytest.mark.parametrize(
    ("environ", "extra", "name", "base_path", "rest_port"),
    [
        ({}, [], "model", "/models/model", 8501),
        ({"MODEL_NAME": "half"}, [], "half", "/models/half", 8501),
        ({"MODEL_NAME": "half", "MODEL_BASE_PATH": "/srv/models"}, [], "half", "/srv/models/half", 8501),
        ({"MODEL_BASE_PATH": "/mnt"}, ["--rest_api_port=9000", "--model_name=other"], "other", "/mnt/model", 9000),
        ({"UNRELATED": "x"}, ["--model_base_path=/elsewhere/m"], "model", "/elsewhere/m", 8501),
    ],
)
def test_entrypoint_argv_from_the_environment_then_the_arguments(
    server_argv: list[list[str]], environ: dict[str, str], extra: list[str], name: str, base_path: str,
    rest_port: int,
) -> None:
    assert container.main(extra, environ) == 7  # the server's exit status
    [argv] = server_argv
    assert argv[:2] == ["--port=8500", "--rest_api_port=8501"] and argv[4:] == extra
    options = parse_model_server_args(argv)
    assert (options.model_name, options.model_base_path, options.port, options.rest_api_port) == (
        name, base_path, 8500, rest_port)


def test_entrypoint_reads_os_environ_and_sys_argv_by_default(
    server_argv: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_NAME", "envmodel")
    monkeypatch.delenv("MODEL_BASE_PATH", raising=False)
    monkeypatch.setattr(sys, "argv", ["pyserving-container-entrypoint", "--log_format=json"])
    container.main()
    assert server_argv == [["--port=8500", "--rest_api_port=8501", "--model_name=envmodel",
                            "--model_base_path=/models/envmodel", "--log_format=json"]]


def test_the_console_script_is_declared() -> None:
    assert '"pyserving-container-entrypoint=pyserving.server.container:main"' in (ROOT / "setup.py").read_text()


def test_version_through_the_module(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pyserving.server.container", "--version"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=dict(os.environ, MODEL_BASE_PATH=str(tmp_path)))
    assert done.returncode == 0 and done.stdout.startswith("TensorFlow ModelServer: "), done.stderr


# --- the Dockerfile -----------------------------------------------------------------------------


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def instruction(name: str) -> list[str]:
    return [rest for keyword, rest in instructions() if keyword == name]


def healthcheck_command() -> list[str]:
    [check] = instruction("HEALTHCHECK")
    _, _, exec_form = check.partition(" CMD ")
    return list(json.loads(exec_form))


def test_dockerfile_base_user_ports_environment() -> None:
    [base] = instruction("FROM")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    users = instruction("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), users  # the last USER is the runtime one
    assert users[-1].split(":")[0].isdigit()  # numeric, so Kubernetes' runAsNonRoot can check it
    ports = {port for rest in instruction("EXPOSE") for port in rest.split()}
    assert {"8500", "8501"} <= ports
    env = " ".join(instruction("ENV"))
    assert "MODEL_NAME=model" in env and "MODEL_BASE_PATH=/models" in env
    assert any("pip install /tmp/pyserving-src" in run for run in instruction("RUN"))


def test_dockerfile_entrypoint_and_healthcheck() -> None:
    [entrypoint] = instruction("ENTRYPOINT")
    assert json.loads(entrypoint) == ["pyserving-container-entrypoint"]
    check = healthcheck_command()
    assert check[:2] == ["python", "-c"] and "http://127.0.0.1:8501/v1/health/ready" in check[2]
    assert "curl" not in " ".join(instruction("HEALTHCHECK"))


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    assert not ignored & {"setup.py", "pyproject.toml", "README.md", "pyserving"}


@pytest.mark.slow
def test_healthcheck_command_against_a_served_model(tmp_path: Path) -> None:
    """The entrypoint module serves $MODEL_BASE_PATH/$MODEL_NAME; the HEALTHCHECK command
    succeeds while it is ready and fails once it is gone."""
    write_python_version(tmp_path / "m" / "1")
    rest_port = free_port()
    check = [sys.executable] + healthcheck_command()[1:]
    check[-1] = check[-1].replace(":8501/", f":{rest_port}/")
    server = ServerProcess(["-m", "pyserving.server.container", f"--port={free_port()}",
                            f"--rest_api_port={rest_port}"], program="python",
                           env={"MODEL_NAME": "m", "MODEL_BASE_PATH": str(tmp_path)})
    try:
        assert server.wait_for_output("Exporting HTTP/REST API", 120), server.output
        assert requests.get(f"http://127.0.0.1:{rest_port}/v1/models/m", timeout=10).json()[
            "model_version_status"][0]["state"] == "AVAILABLE"
        assert subprocess.run(check, timeout=60).returncode == 0
    finally:
        assert server.stop() == 0, server.output
    assert subprocess.run(check, timeout=60, capture_output=True).returncode != 0


# --- the Kubernetes manifest ---------------------------------------------------------------------


def test_manifest_probes_ports_volume_and_resources() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    assert "path: /v1/health/ready" in text and "path: /v1/health/live" in text  # without a YAML parser
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: only the text checks ran")
    documents = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {d["kind"]: d for d in documents}
    assert set(by_kind) == {"Deployment", "Service"}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    [server] = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    named_ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert named_ports == {"grpc": 8500, "http": 8501}
    assert server["readinessProbe"]["httpGet"]["port"] in ("http", 8501)
    assert {"cpu", "memory"} <= set(server["resources"]["requests"])
    [mount] = server["volumeMounts"]
    assert mount["mountPath"] == "/models"
    assert mount["name"] in {v["name"] for v in pod["volumes"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["MODEL_BASE_PATH"] == "/models"
    service = by_kind["Service"]["spec"]
    assert {p["port"] for p in service["ports"]} == {8500, 8501}
    assert service["selector"] == by_kind["Deployment"]["spec"]["selector"]["matchLabels"]


# --- the image, when a container engine is usable --------------------------------------------------


def _engine_unusable() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no container engine: the docker command is not installed"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 30 s"
    if info.returncode != 0:
        reason = (info.stderr or info.stdout).strip().splitlines()
        return f"docker info failed: {reason[-1] if reason else 'exit status ' + str(info.returncode)}"
    return None


def _docker(*args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=check)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_image_builds_and_serves(tmp_path: Path) -> None:
    reason = _engine_unusable()
    if reason:
        pytest.skip(reason)
    image = "pyserving-test:latest"
    build = subprocess.run(["docker", "build", "-t", image, str(ROOT)], capture_output=True, text=True, timeout=2000)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert _docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "10001:10001"
    models = tmp_path / "half"
    write_python_version(models / "1")
    name = f"pyserving-test-{os.getpid()}"
    _docker("run", "-d", "--name", name, "-p", "127.0.0.1::8501", "-e", "MODEL_NAME=half",
            "-v", f"{models}:/models/half:ro", image, "--log_format=json")
    try:
        mapped = _docker("port", name, "8501/tcp").stdout.split()[0]  # 127.0.0.1:49153
        url = f"http://{mapped}/v1/health/ready"

        def ready() -> Any:
            if _docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
                pytest.fail("the container exited:\n" + _docker("logs", name, check=False).stderr[-4000:])
            return requests.get(url, timeout=5).status_code == 200

        wait_for(ready, "the container's /v1/health/ready to answer 200", 180, interval_s=1,
                 tolerate=(requests.RequestException,))
        answer = requests.post(f"http://{mapped}/v1/models/half:predict", json={"instances": [2.0]}, timeout=30)
        assert answer.json() == {"predictions": [2.0]}
        assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"
        wait_for(lambda: _docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "healthy",
                 "the HEALTHCHECK to report healthy", 120, interval_s=2)
        stopped = _docker("stop", "--time", "30", name, timeout_s=60)
        assert stopped.returncode == 0
        assert _docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        _docker("rm", "-f", name, check=False)  # the image stays, so a rerun builds from the cache
