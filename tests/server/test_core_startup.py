"""ServerCore.start when a newer version completes on disk while the first one is loading.

The first version's load is cancelled (it is no longer aspired); startup must then wait for the
newer version instead of failing on the cancelled one.
"""

from __future__ import annotations

import threading
import textwrap
from pathlib import Path

from pyserving.servable.ids import ServableRequest
from pyserving.servable.state import ManagerState
from pyserving.server.core import ServerCore, ServerCoreOptions
from pyserving.server.model_config import ModelEntry
from tests.support.model_drops import write_python_version

# Version 1 blocks in create_servable until the test creates `release` next to the base path.
_GATED_MODEL = textwrap.dedent('''
    import os, time

    class Model:
        pass

    def create_servable(version_dir):
        gate = os.path.join(os.path.dirname(os.path.dirname(str(version_dir))), "release")
        deadline = time.monotonic() + 60
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never released the load")
            time.sleep(0.01)  # a bounded wait for the test's file
        return Model()
''')


def test_start_waits_for_the_version_that_superseded_a_cancelled_load(tmp_path: Path) -> None:
    base = tmp_path / "models" / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.py").write_text(_GATED_MODEL)
    core = ServerCore(ServerCoreOptions(file_system_poll_wait_seconds=0.1, quiet_period_s=0.0,
                                        max_num_load_retries=0, load_wait_timeout_s=60.0))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            core.start([ModelEntry("m", str(base), "python")])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        core.manager.monitor.wait_until([ServableRequest.specific("m", 1)], ManagerState.LOADING, timeout_s=30)
        write_python_version(base / "2")  # complete at once (quiet period 0): version 1 is no longer wanted
        core.manager.monitor.wait_until([ServableRequest.specific("m", 2)], ManagerState.START, timeout_s=30)
        (tmp_path / "models" / "release").touch()  # version 1's load returns, and is found cancelled
        starter.join(60)
        assert not starter.is_alive() and not errors, errors
        with core.get_handle(ServableRequest.latest("m")) as handle:
            assert handle.id.version == 2
        states = {s.id.version: s for s in core.version_states("m")}
        assert states[1].manager_state is ManagerState.END and "cancelled" in states[1].health.message
    finally:
        (tmp_path / "models" / "release").touch()
        starter.join(60)
        core.stop()
