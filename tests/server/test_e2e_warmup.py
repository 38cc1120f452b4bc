"""End to end: model warmup in the real ``pyserving-model-server``.

* Version 1 of ``half`` has a good warmup file (predict, classify and regress records); with
  ``--num_request_iterations_for_warmup=2`` the server logs that it replayed the 3 records
  twice each before the version became AVAILABLE.
* Version 2, renamed into the watched folder, has a warmup record the model refuses (an input
  of the wrong shape): its load fails, it stays in END with the warmup error in
  ``GET /v1/models/half``, and version 1 keeps answering.
* The two warmup flags reach the tensorflow platform's options (no server needed).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from pyserving.server.flags import parse_model_server_args
from pyserving.server.main import settings_from_flags
from tests.support.polling import wait_for
from tests.support.saved_models import write_half_plus_two_tf1
from tests.support.server_process import ServerProcess, start_model_server
from tests.support.traffic import rest_status
from tests.support.warmup_files import classify_log, predict_log, regress_log, write_warmup_file

WAIT_S = 30.0


def test_the_warmup_flags_reach_the_tensorflow_platform() -> None:
    base = ["--model_base_path=/models/m"]
    default = settings_from_flags(parse_model_server_args(base)).core.platform_options["tensorflow"]
    assert (default["enable_model_warmup"], default["num_request_iterations_for_warmup"]) == (True, 0)
    given = settings_from_flags(parse_model_server_args(
        base + ["--enable_model_warmup=false", "--num_request_iterations_for_warmup=4"])).core.platform_options
    assert (given["tensorflow"]["enable_model_warmup"], given["tensorflow"]["num_request_iterations_for_warmup"]) \
        == (False, 4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, Path]]:
    root = tmp_path_factory.mktemp("warmup")
    base = root / "half"
    write_half_plus_two_tf1(base / "1")
    x = np.array([[1.0], [2.0]], np.float32)
    write_warmup_file(base / "1", [
        predict_log({"x": x}), classify_log([1.0, 2.0], "classify_x_to_y"), regress_log([3.0], "regress_x_to_y"),
    ])
    process, _, rest_port = start_model_server([
        f"--model_base_path={base}", "--model_name=half", "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0", "--num_request_iterations_for_warmup=2",
    ])
    try:
        yield process, rest_port, root
    finally:
        process.stop()


def _predict(rest_port: int, version: int) -> list[list[float]]:
    body = json.dumps({"instances": [[1.0], [4.0]]}).encode()
    url = f"http://127.0.0.1:{rest_port}/v1/models/half/versions/{version}:predict"
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        return json.loads(response.read())["predictions"]  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_version_is_available_only_after_its_warmup(server: tuple[ServerProcess, int, Path]) -> None:
    process, rest_port, _ = server
    assert rest_status(rest_port, "half")[1] == ("AVAILABLE", "")
    output = process.output
    warmed = output.index("Warmed up {name: half version: 1}: 3 warmup records, 2 iteration(s) each")
    assert warmed < output.index("{name: half version: 1} AVAILABLE"), output
    assert _predict(rest_port, 1) == [[2.5], [4.0]]


@pytest.mark.slow
def test_a_failing_warmup_ends_the_new_version_and_the_old_one_keeps_serving(
    server: tuple[ServerProcess, int, Path]
) -> None:
    _, rest_port, root = server
    staged = root / "staging" / "2"
    write_half_plus_two_tf1(staged, a=1.0, b=0.0)
    write_warmup_file(staged, [predict_log({"x": np.array([1.0, 2.0, 3.0], np.float32)})])  # x must be [-1, 1]
    shutil.move(str(staged), str(root / "half" / "2"))

    state, message = wait_for(lambda: (rest_status(rest_port, "half").get(2, ("", ""))[0] == "END"
                                       and rest_status(rest_port, "half")[2]), "version 2 to end", WAIT_S)
    assert state == "END"
    path = root / "half" / "2" / "assets.extra" / "tf_serving_warmup_requests"
    assert f"Warmup request 1 of 1 (predict_log) in {path} failed: " in message, message
    assert "shape" in message, message  # the model's own complaint about x
    assert rest_status(rest_port, "half")[1] == ("AVAILABLE", "")
    assert _predict(rest_port, 1) == [[2.5], [4.0]]
