"""The README's A/B walkthrough runs as written (ports swapped for free ones), so it cannot go stale.

The bash block under "A/B walkthrough" is run with ``bash -e`` in a temporary folder, with the
virtual environment's ``bin`` first on ``PATH``; 8500 and 8501 become free loopback ports. The
script starts the server in the background and kills it at its end; the whole process group is
killed afterwards in any case, so no server outlives the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server_process import free_port

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_script() -> str:
    text = README.read_text()
    start = text.index("#### A/B walkthrough")
    match = re.compile(r"```bash\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, "no bash block after the A/B walkthrough heading"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_ab_walkthrough_runs_as_written(tmp_path: Path) -> None:
    grpc_port, rest_port = free_port(), free_port()
    script = walkthrough_script().replace("8501", str(rest_port)).replace("8500", str(grpc_port))
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYSERVING_HOST="127.0.0.1",
    )
    process = subprocess.Popen(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=120)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
    assert process.returncode == 0, output
    assert re.search(r"x-pyserving-model: rec_[ab]", output), output
    assert '{"predictions":[2.0]}' in output, output  # the x-country rule
    assert '"route":"recommender"' in output, output  # the statistics
    assert '"weight": 50' in output, output  # the live change, answered with the route in force
