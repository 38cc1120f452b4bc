"""One running ``pyserving-model-server`` as the live-update tests drive it.

:func:`start_server` starts the real binary on free loopback ports with a model config
file and a 300 s file-system poll (so every pick-up a test sees comes from a file event),
and returns a :class:`Server`: its process, ports and folders, plus shortcuts to its
model status and to traffic helpers bound to it. The waits here are bounded polls of an
observable condition (``CHANGE_WAIT_S``); :func:`assert_no_failures` and
:func:`assert_lifecycle` put everything a failing test needs into its message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import grpc

from tests.support.polling import wait_for as poll_wait_for
from tests.support.model_drops import lifecycle, write_config
from tests.support.server_process import ServerProcess, start_model_server
from tests.support.status_watch import StatusWatcher
from tests.support.traffic import TrafficClients, TrafficReport, rest_status

__all__ = ["CHANGE_WAIT_S", "CLIENTS", "Server", "start_server", "wait_for", "wait_states", "assert_no_failures",
           "assert_lifecycle", "grpc_status"]

#: Bound on anything the server does in the background; far below the 300 s file poll.
CHANGE_WAIT_S = 20.0
#: Clients a test runs by default: 4 gRPC, 4 REST.
CLIENTS = 8


@dataclass
class Server:
    """A started server: ``root`` holds its model folders (``root / name``) and ``staging``."""

    process: ServerProcess
    grpc_port: int
    rest_port: int
    root: Path
    config: Path

    def base(self, model: str) -> Path:
        return self.root / model

    def states(self, model: str) -> dict[int, str]:
        return {version: state for version, (state, _) in rest_status(self.rest_port, model).items()}

    def newest(self, model: str) -> int:
        return max(self.states(model))

    def clients(self, model: str, clients: int = CLIENTS) -> TrafficClients:
        return TrafficClients(model, self.grpc_port, self.rest_port, clients=clients, max_duration_s=150.0)

    def watcher(self, *models: str) -> StatusWatcher:
        return StatusWatcher(self.rest_port, models, max_duration_s=150.0)


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = CHANGE_WAIT_S) -> Any:
    """Poll ``condition`` until truthy; fail naming ``what`` on timeout."""
    return poll_wait_for(condition, what, timeout_s, 0.02)


def wait_states(server: Server, model: str, wanted: dict[int, str]) -> float:
    """Wait until the model's status shows ``wanted`` (a subset); the time it was seen."""
    wait_for(lambda: all(server.states(model).get(v) == s for v, s in wanted.items()), f"{model} {wanted}")
    return time.monotonic()


def assert_no_failures(report: TrafficReport) -> None:
    assert not report.failures and not report.regressions, (
        f"{len(report.failures)} of {report.requests} requests failed, {len(report.regressions)} "
        f"answers came from an older version:\n{report.describe_failures()}")
    assert all(count > 0 for count in report.by_transport().values()), report.by_transport()


def assert_lifecycle(server: Server, model: str, version: int, expected: list[str]) -> None:
    """The server logged exactly ``expected`` for the version (its output is read by a thread:
    lines published a moment ago may still be on their way, so this waits, bounded)."""
    deadline = time.monotonic() + 5.0
    while (got := lifecycle(server.process.output, model, version)) != expected and time.monotonic() < deadline:
        if len(got) > len(expected):
            break
        time.sleep(0.02)  # polling interval of a bounded wait
    assert got == expected, f"{model} version {version} went through {got}, expected {expected}"


def start_server(root: Path, models: list[tuple[str, Path, str, str]], extra: list[str]) -> Server:
    """Write ``root / "models.config"`` with ``models`` (see ``write_config``) and start the
    server on it with ``extra`` flags; AssertionError with its output when it does not start."""
    config = root / "models.config"
    write_config(config, models)
    process, grpc_port, rest_port = start_model_server(
        [f"--model_config_file={config}", "--file_system_poll_wait_seconds=300", *extra])
    return Server(process, grpc_port, rest_port, root, config)


def grpc_status(server: Server, model: str, version: int) -> tuple[str, int, str]:
    """(state name, error code, error message) of one version from GetModelStatus."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    request.model_spec.version.value = version
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=CHANGE_WAIT_S)
    (entry,) = response.model_version_status
    state = get_model_status_pb2.ModelVersionStatus.State.Name(entry.state)
    return state, entry.status.error_code, entry.status.error_message
