"""End to end: live model updates of the real ``pyserving-model-server`` under traffic.

Each test runs 8 clients (4 gRPC, 4 REST, requests naming no version) for its whole
length (:mod:`tests.support.traffic`) and asserts that not one request failed, while:

* 20 versions are renamed into the watched folder one after another: each is picked up,
  requests go to the old version until the new one is AVAILABLE and to the new one after,
  and a request naming the old version gets NOT_FOUND only once it left the served set;
* a python model whose requests take 0.2 s is swapped: in-flight requests finish before
  the old version is unloaded (its requests fail if they run after ``close()``);
* a version is written in place, file by file: it is loaded only once complete;
* corrupt and unloadable versions end in END with the loader's message in GetModelStatus
  and REST status, the previous version keeps serving, and repairing or replacing the
  files in place loads them without a restart;
* a base path is deleted, recreated, turned into a file and emptied: only its own model
  is affected;
* model-config reloads (file poll and HandleReloadConfigRequest) add, re-policy and remove
  models without one state change of the models they do not touch.

The servers poll the file system every 300 s, longer than this module runs, so every
pick-up here comes from a file-system event (the poll is only a safety net). States are
checked twice: the exact sequence from the server's lifecycle log lines, and the sequence
seen by a thread polling the REST status (:mod:`tests.support.status_watch`). Waits are
bounded (``CHANGE_WAIT_S``); each scenario group shares one server (module fixtures), and
each test reads the versions it starts from off the server, so the tests of a group do not
depend on each other's numbers.

Two tests pin fixed defects: a fresh replacement of the only version must not unload the
serving one while it waits out its quiet period, and a repair made while a failed load waits
to retry is loaded at once.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from tests.support.live_server import (
    CHANGE_WAIT_S,
    Server,
    assert_lifecycle,
    assert_no_failures,
    grpc_status,
    start_server,
    wait_for,
    wait_states,
)
from tests.support.model_drops import (
    lifecycle_lines,
    stage_tf_version,
    start_slow_copy,
    write_config,
    write_python_version,
)
from tests.support.status_watch import FAIL_THEN_LOAD, LOAD_AND_UNLOAD, check_history
from tests.support.traffic import TrafficClients, rest_status
from tests.support.version_probe import SpecificVersionProbe

pytestmark = pytest.mark.slow

#: Group 1: a failed load ends at once. Group 2: one retry a minute later (the default interval).
FAIL_AT_ONCE = ["--max_num_load_retries=0"]
RETRY_IN_A_MINUTE = ["--max_num_load_retries=1", "--load_retry_interval_micros=60000000"]
#: The exact lifecycle of a version that was loaded and then replaced.
SWAPPED = list(LOAD_AND_UNLOAD)


# -- group 1: one TF model swapped again and again; config-file poll ----------------------------


@pytest.fixture(scope="module")
def swap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("live")
    (root / "staging").mkdir()
    (root / "half").mkdir()
    stage_tf_version(root / "staging", "half", 1).rename(root / "half" / "1")
    for version in (1, 2):
        write_python_version(root / "scaler" / str(version))
    server = start_server(root, [("half", root / "half", "tensorflow", "")], ["--model_config_file_poll_wait_seconds=1", *FAIL_AT_ONCE])
    try:
        yield server
    finally:
        server.process.stop()


def test_twenty_versions_dropped_under_traffic_fail_no_request(swap_server: Server) -> None:
    server, base = swap_server, swap_server.base("half")
    first = server.newest("half")
    drops = list(range(first + 1, first + 21))
    staged = {v: stage_tf_version(server.root / "staging", "half", v) for v in drops}
    available_at: dict[int, float] = {}
    probe = SpecificVersionProbe("half", server.grpc_port, server.rest_port, max_duration_s=150.0).start()
    try:
        with server.watcher("half") as watcher, server.clients("half") as clients:
            for v in drops:
                probe.pin(v - 1)
                staged[v].rename(base / str(v))
                available_at[v] = wait_states(server, "half", {v: "AVAILABLE"})
                wait_states(server, "half", {v - 1: "END"})
                assert clients.wait_for_version(v, CHANGE_WAIT_S) is not None, f"no client was answered by {v}"
                probe.wait_gone(v - 1, CHANGE_WAIT_S)
            report = clients.stop()
    finally:
        probe.stop()

    assert_no_failures(report)
    for v in drops:
        stale = report.stale_after(v, available_at[v])
        assert not stale, f"requests sent after version {v} was AVAILABLE were answered by older versions: {stale[:5]}"
        assert report.versions().get(v, 0) > 0, f"no answer from version {v}: {report.versions()}"
    for v, record in probe.records.items():  # NOT_FOUND for Specific(half, v) only once v left the served set
        assert record.answers > 0 and not record.failures, record
        assert record.not_found and f"Servable not found for request: Specific(half, {v})" in record.not_found, record
        assert record.status_after[v][0] in ("UNLOADING", "END"), record
        assert record.status_after[v + 1][0] == "AVAILABLE", record
    assert not watcher.errors(), watcher.errors()
    assert not watcher.polls_without_available("half"), "a status poll found no AVAILABLE version"
    for v in drops[:-1]:
        assert_lifecycle(server, "half", v, SWAPPED)
        problem = check_history(watcher.history("half", v), LOAD_AND_UNLOAD)
        assert problem is None, f"version {v}: {problem}"
    assert_lifecycle(server, "half", first, SWAPPED)
    assert_lifecycle(server, "half", drops[-1], ["START", "LOADING", "AVAILABLE"])
    events = [(v, state) for v, state, _ in lifecycle_lines(server.process.output, "half")]
    for v in drops:  # the new version was AVAILABLE before the old one started unloading
        assert events.index((v, "AVAILABLE")) < events.index((v - 1, "UNLOADING")), events


def test_version_written_in_place_file_by_file_is_loaded_only_once_complete(swap_server: Server) -> None:
    server, base = swap_server, swap_server.base("half")
    old = server.newest("half")
    new = old + 1
    source = stage_tf_version(server.root / "staging", "half", new)
    with server.watcher("half") as watcher, server.clients("half") as clients:
        copy = start_slow_copy(source, base / str(new))
        try:
            output, _ = copy.communicate(timeout=60)
        finally:
            copy.kill()
        assert copy.returncode == 0, output
        last_write_at = float(output.split()[0])
        available_at = wait_states(server, "half", {new: "AVAILABLE", old: "END"})
        assert clients.wait_for_version(new, CHANGE_WAIT_S) is not None
        report = clients.stop()

    assert_no_failures(report)
    early = watcher.seen_before("half", new, last_write_at)
    assert not early, f"version {new} was in the model status before its last file was written: {early[:3]}"
    assert all(s.end_s > last_write_at for s in report.samples if s.version == new)
    assert not report.stale_after(new, available_at)
    assert_lifecycle(server, "half", new, ["START", "LOADING", "AVAILABLE"])  # one load, and it succeeded
    assert_lifecycle(server, "half", old, SWAPPED)


def _assert_failed_and_contained(server: Server, version: int, serving: int, loader_says: str) -> str:
    """The loader's message in the log, REST status and GetModelStatus; ``serving`` still serves."""
    wait_states(server, "half", {version: "END"})
    logged = wait_for(lambda: [rest for v, state, rest in lifecycle_lines(server.process.output, "half")
                               if v == version and state == "END"], f"the END line of version {version}")
    assert logged[0].startswith(": load failed: "), logged
    loader_message = logged[0].removeprefix(": load failed: ")  # its first line
    state, message = rest_status(server.rest_port, "half")[version]
    assert state == "END" and loader_says in message and loader_message in message, (message, loader_message)
    grpc_state, grpc_code, grpc_message = grpc_status(server, "half", version)
    assert (grpc_state, grpc_message) == ("END", message) and grpc_code != 0, (grpc_state, grpc_code, grpc_message)
    assert server.states("half")[serving] == "AVAILABLE"
    return message


def test_broken_versions_are_contained_and_load_once_repaired_in_place(swap_server: Server) -> None:
    server, base, staging = swap_server, swap_server.base("half"), swap_server.root / "staging"
    good = server.newest("half")
    corrupt, unloadable = good + 1, good + 2
    repaired = stage_tf_version(staging, "half", corrupt)
    replacement = stage_tf_version(staging, "half", unloadable)
    broken = staging / "broken"  # garbage saved_model.pb
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    no_variables = staging / "no-variables"  # a real graph whose variables are missing
    no_variables.mkdir()
    shutil.copy(replacement / "saved_model.pb", no_variables / "saved_model.pb")

    with server.watcher("half") as watcher, server.clients("half") as clients:
        broken.rename(base / str(corrupt))
        _assert_failed_and_contained(server, corrupt, good, "SavedModel")
        first_answer = clients.answered()
        wait_for(lambda: clients.answered() > first_answer + 50, "the old version answering after the failure")
        # Repair in place: the variables come back, then saved_model.pb is replaced.
        shutil.copytree(repaired / "variables", base / str(corrupt) / "variables")
        os.replace(repaired / "saved_model.pb", base / str(corrupt) / "saved_model.pb")
        repaired_at = wait_states(server, "half", {corrupt: "AVAILABLE", good: "END"})
        assert clients.wait_for_version(corrupt, CHANGE_WAIT_S) is not None

        no_variables.rename(base / str(unloadable))
        _assert_failed_and_contained(server, unloadable, corrupt, "variables")
        # Replace in place: the broken folder is deleted and a good one renamed to its name.
        shutil.rmtree(base / str(unloadable))
        replacement.rename(base / str(unloadable))
        replaced_at = wait_states(server, "half", {unloadable: "AVAILABLE", corrupt: "END"})
        assert clients.wait_for_version(unloadable, CHANGE_WAIT_S) is not None
        report = clients.stop()

    assert_no_failures(report)
    assert set(report.versions()) == {good, corrupt, unloadable}, report.versions()
    assert not report.stale_after(corrupt, repaired_at) and not report.stale_after(unloadable, replaced_at)
    assert not watcher.polls_without_available("half"), "a status poll found no AVAILABLE version"
    for version in (corrupt, unloadable):
        assert_lifecycle(server, "half", version, ["START", "LOADING", "END!", "START", "LOADING", "AVAILABLE"]
                         + (["UNLOADING", "END"] if version == corrupt else []))
        problem = check_history(watcher.history("half", version), FAIL_THEN_LOAD + (("UNLOADING", "END")
                                                                                    if version == corrupt else ()))
        assert problem is None, f"version {version}: {problem}"
        assert any(state == "END" and message for state, message in watcher.history("half", version))
    assert "changed on disk since it failed; loading it again" in server.process.output


def test_config_file_edits_never_interrupt_the_models_they_do_not_touch(swap_server: Server) -> None:
    server = swap_server
    half = ("half", server.base("half"), "tensorflow", "")
    scaler = server.base("scaler")
    serving = server.newest("half")
    half_lines = len(lifecycle_lines(server.process.output, "half"))
    with server.watcher("half", "scaler") as watcher, server.clients("half") as clients:
        started = time.monotonic()
        write_config(server.config, [half, ("scaler", scaler, "python", "")])  # add
        wait_states(server, "scaler", {2: "AVAILABLE"})
        write_config(server.config, [half, ("scaler", scaler, "python", "all {}")])  # re-policy: every version
        wait_states(server, "scaler", {1: "AVAILABLE", 2: "AVAILABLE"})
        write_config(server.config, [half, ("scaler", scaler, "python", "specific { versions: 1 }")])
        wait_states(server, "scaler", {1: "AVAILABLE", 2: "END"})
        write_config(server.config, [half])  # remove
        wait_states(server, "scaler", {1: "END", 2: "END"})
        report = clients.stop()

    assert_no_failures(report)
    assert set(report.versions()) == {serving}
    assert not watcher.changes("half", started), "the status of half changed during the reloads"
    assert len(lifecycle_lines(server.process.output, "half")) == half_lines, "half changed state during the reloads"
    assert_lifecycle(server, "scaler", 2, SWAPPED)
    assert_lifecycle(server, "scaler", 1, SWAPPED)


# -- group 2: three models; in-flight requests, base paths, HandleReloadConfigRequest ---------

SLOW_REQUEST_S = 0.2


@pytest.fixture(scope="module")
def paths_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("paths")
    (root / "staging").mkdir()
    (root / "alpha").mkdir()
    stage_tf_version(root / "staging", "alpha", 1).rename(root / "alpha" / "1")
    write_python_version(root / "beta" / "1")
    write_python_version(root / "slow" / "1", delay_s=SLOW_REQUEST_S)
    server = start_server(root, [(name, root / name, platform, "") for name, platform in
                                 (("alpha", "tensorflow"), ("beta", "python"), ("slow", "python"))],
                          RETRY_IN_A_MINUTE)
    try:
        yield server
    finally:
        server.process.stop()


def _config_entries(server: Server, extra: list[tuple[str, Path, str, str]]) -> list[tuple[str, Path, str, str]]:
    return [(name, server.base(name), platform, "") for name, platform in
            (("alpha", "tensorflow"), ("beta", "python"), ("slow", "python"))] + extra


def test_requests_in_flight_finish_before_the_old_version_is_unloaded(paths_server: Server) -> None:
    server, base, staging = paths_server, paths_server.base("slow"), paths_server.root / "staging"
    first = server.newest("slow")
    swaps = [first + 1, first + 2, first + 3]
    with server.watcher("slow") as watcher, server.clients("slow") as clients:
        for v in swaps:  # every request sleeps 0.2 s: each swap happens under requests in flight
            write_python_version(staging / f"slow-{v}", delay_s=SLOW_REQUEST_S).rename(base / str(v))
            wait_states(server, "slow", {v: "AVAILABLE", v - 1: "END"})
            assert clients.wait_for_version(v, CHANGE_WAIT_S) is not None
        report = clients.stop()

    assert_no_failures(report)  # a request that ran on an unloaded (closed) version would have failed
    assert not watcher.polls_without_available("slow")
    unload_times = [float(rest.split()[1]) for v, state, rest in lifecycle_lines(server.process.output, "slow")
                    if state == "END" and rest.startswith(" after")]
    assert len(unload_times) == len(swaps) and max(unload_times) > 0.0, (
        f"the unloads did not wait for requests in flight: {unload_times}")
    for v in [first] + swaps[:-1]:
        assert_lifecycle(server, "slow", v, SWAPPED)


def test_the_serving_version_stays_until_a_fresh_replacement_is_complete(paths_server: Server) -> None:
    server, beta = paths_server, paths_server.base("beta")
    old = server.newest("beta")
    new = old + 1
    with server.watcher("beta") as watcher, server.clients("beta", clients=4) as clients:
        # A usual deploy: move the new version in, delete the old one; then the new one's
        # files still change for a moment (a copy tool finishing up), so it is surely
        # incomplete when the server looks.
        write_python_version(server.root / "staging" / f"beta-{new}").rename(beta / str(new))
        shutil.rmtree(beta / str(old))
        for _ in range(10):
            with open(beta / str(new) / "model.py", "a") as model:
                model.write("# still being written\n")
            time.sleep(0.05)  # pacing a writer, well below the 0.2 s quiet period
        wait_states(server, "beta", {new: "AVAILABLE", old: "END"})
        assert clients.wait_for_version(new, CHANGE_WAIT_S) is not None
        report = clients.stop()

    assert_no_failures(report)
    assert not watcher.polls_without_available("beta"), "a status poll found no AVAILABLE version of beta"
    assert_lifecycle(server, "beta", old, SWAPPED)


def test_missing_unreadable_and_emptied_base_paths_affect_only_their_own_model(paths_server: Server) -> None:
    server, staging = paths_server, paths_server.root / "staging"
    alpha, beta = server.base("alpha"), server.base("beta")
    version = server.newest("beta")

    def drop_alpha(clients: TrafficClients) -> None:  # alpha keeps updating whatever happens to beta
        new = server.newest("alpha") + 1
        stage_tf_version(staging, "alpha", new).rename(alpha / str(new))
        wait_states(server, "alpha", {new: "AVAILABLE", new - 1: "END"})
        assert clients.wait_for_version(new, CHANGE_WAIT_S) is not None, f"no client was answered by alpha {new}"

    # Written now, so its files are older than the quiet period when it is renamed in (a
    # fresh one waits out the quiet period first; the test above covers that case).
    write_python_version(staging / "beta-recreated" / str(version + 1))
    with server.watcher("alpha", "beta") as watcher, server.clients("alpha") as alpha_clients:
        with server.clients("beta", clients=4) as beta_clients:
            shutil.rmtree(beta)  # deleted: beta keeps serving what it loaded
            wait_for(lambda: f"Could not find base path {beta} for servable beta" in server.process.output,
                     "the missing base path logged")
            drop_alpha(alpha_clients)
            assert server.states("beta")[version] == "AVAILABLE"

            (staging / "beta-recreated").rename(beta)  # recreated, with a new version
            wait_states(server, "beta", {version + 1: "AVAILABLE", version: "END"})
            version += 1

            beta.rename(staging / "beta-aside")  # a file where the folder was: cannot be listed
            beta.write_text("not a folder")
            wait_for(lambda: f"Base path {beta} for servable beta is not a directory" in server.process.output,
                     "the unreadable base path logged")
            drop_alpha(alpha_clients)
            assert server.states("beta")[version] == "AVAILABLE"
            beta.unlink()
            (staging / "beta-aside").rename(beta)  # the same folder back, then a new version
            write_python_version(beta / str(version + 1))
            wait_states(server, "beta", {version + 1: "AVAILABLE", version: "END"})
            assert_lifecycle(server, "beta", version, SWAPPED)  # restoring the folder reloaded nothing
            version += 1
            beta_report = beta_clients.stop()

        for child in sorted(beta.iterdir(), key=lambda p: int(p.name)):  # emptied: beta unloads, alpha
            shutil.rmtree(child)                                          # does not notice
        wait_states(server, "beta", {version: "END"})
        drop_alpha(alpha_clients)
        write_python_version(staging / f"beta-{version + 1}").rename(beta / str(version + 1))
        wait_states(server, "beta", {version + 1: "AVAILABLE"})
        alpha_report = alpha_clients.stop()

    assert_no_failures(alpha_report)
    assert_no_failures(beta_report)
    assert len(alpha_report.versions()) == 4, alpha_report.versions()
    assert not watcher.errors(), watcher.errors()
    assert not watcher.polls_without_available("alpha"), "a status poll found no AVAILABLE version of alpha"
    assert "No versions of servable beta found under base path" in server.process.output
    assert_lifecycle(server, "beta", version, SWAPPED)  # the emptied base path unloaded it
    assert_lifecycle(server, "beta", version + 1, ["START", "LOADING", "AVAILABLE"])


def test_reload_config_rpc_adds_repolicies_and_removes_models_without_touching_others(paths_server: Server) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    server = paths_server
    gamma = server.base("gamma")
    for version in (1, 2):
        write_python_version(gamma / str(version))
    untouched = ("alpha", "beta", "slow")
    lines_before = {name: len(lifecycle_lines(server.process.output, name)) for name in untouched}

    def reload(extra: list[tuple[str, Path, str, str]]) -> None:
        request = model_management_pb2.ReloadConfigRequest()
        for name, base, platform, policy in _config_entries(server, extra):
            entry = request.config.model_config_list.config.add(name=name, base_path=str(base),
                                                                model_platform=platform)
            if policy == "all":
                entry.model_version_policy.all.SetInParent()
            elif policy:
                entry.model_version_policy.specific.versions.append(int(policy))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=CHANGE_WAIT_S)
        assert response.status.error_code == 0, response

    with server.watcher("alpha", "gamma") as watcher, server.clients("alpha") as clients:
        started = time.monotonic()
        reload([("gamma", gamma, "python", "")])  # add: returns once gamma settled
        assert server.states("gamma") == {2: "AVAILABLE"}
        reload([("gamma", gamma, "python", "all")])  # re-policy: every version
        wait_states(server, "gamma", {1: "AVAILABLE", 2: "AVAILABLE"})
        reload([("gamma", gamma, "python", "1")])  # re-policy: only version 1
        wait_states(server, "gamma", {1: "AVAILABLE", 2: "END"})
        reload([])  # remove
        wait_states(server, "gamma", {1: "END", 2: "END"})
        report = clients.stop()

    assert_no_failures(report)
    assert len(report.versions()) == 1, report.versions()
    assert not watcher.changes("alpha", started), "the status of alpha changed during the reloads"
    assert_lifecycle(server, "gamma", 1, SWAPPED)
    assert_lifecycle(server, "gamma", 2, SWAPPED)
    for name in untouched:
        assert len(lifecycle_lines(server.process.output, name)) == lines_before[name], f"{name} changed state"


def test_a_version_repaired_while_its_load_waits_to_retry_is_loaded_at_once(paths_server: Server) -> None:
    server, beta, staging = paths_server, paths_server.base("beta"), paths_server.root / "staging"
    good = server.newest("beta")
    broken = good + 1
    (staging / f"beta-{broken}").mkdir()
    (staging / f"beta-{broken}" / "model.py").write_text(
        "def create_servable(version_dir):\n    raise ValueError('broken on purpose')\n")
    (staging / f"beta-{broken}").rename(beta / str(broken))
    wait_for(lambda: f"Loading {{name: beta version: {broken}}} failed (attempt 1 of 2)" in server.process.output,
             "the first failed attempt")
    states = server.states("beta")
    assert (states[good], states[broken]) == ("AVAILABLE", "LOADING"), states
    fixed = write_python_version(staging / f"beta-{broken}-fixed")
    os.replace(fixed / "model.py", beta / str(broken) / "model.py")  # repaired in place
    wait_for(lambda: server.states("beta").get(broken) == "AVAILABLE", f"the repaired version {broken} loaded",
             timeout_s=5.0)  # far below the 60 s retry interval
