"""FileSystemSource against real temporary folders, real watchdog events and real threads."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import pytest

from pyserving.servable.data import ServableData
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from pyserving.sources import (
    AllVersions,
    FileSystemSource,
    LatestVersions,
    SpecificVersions,
    StoragePath,
    WatchedServable,
)
from pyserving.sources.file_system_source import parse_version_directory_name

WAIT_S = 10.0  # upper bound of every wait; never reached when things work


class Recorder:
    """The source's callback: records every list and lets a test wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards calls
        self.calls: list[tuple[str, list[ServableData[StoragePath]]]] = []
        self.on_call: Callable[[str, list[ServableData[StoragePath]]], None] | None = None

    def __call__(self, name: str, items: Sequence[ServableData[StoragePath]]) -> None:
        if self.on_call is not None:
            self.on_call(name, list(items))
        with self._cond:
            self.calls.append((name, list(items)))
            self._cond.notify_all()

    def lists(self, name: str) -> list[list[ServableData[StoragePath]]]:
        with self._cond:
            return [items for n, items in self.calls if n == name]

    def last(self, name: str) -> list[ServableData[StoragePath]] | None:
        found = self.lists(name)
        return found[-1] if found else None

    def wait_for(self, name: str, versions: list[int]) -> list[ServableData[StoragePath]]:
        def matches() -> bool:
            last = self.last(name)
            return last is not None and [item.id.version for item in last] == versions

        with self._cond:
            ok = self._cond.wait_for(matches, timeout=WAIT_S)
        assert ok, f"{name} never aspired {versions}; calls: {self.summary()}"
        return self.last(name)  # type: ignore[return-value]

    def summary(self) -> list[tuple[str, list[int]]]:
        with self._cond:
            return [(n, [item.id.version for item in items]) for n, items in self.calls]


def versions(items: Sequence[ServableData[StoragePath]] | None) -> list[int] | None:
    return None if items is None else [item.id.version for item in items]


def write_version(base: Path, name: str, files: dict[str, str] | None = None) -> Path:
    path = base / name
    path.mkdir(parents=True)
    for rel, text in (files or {"saved_model.pb": "model"}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def has_model_file(path: Path) -> bool:
    return (path / "saved_model.pb").is_file()


@pytest.fixture
def make_source():
    made: list[FileSystemSource] = []

    def make(servables: Sequence[WatchedServable], **options) -> tuple[FileSystemSource, Recorder]:
        options.setdefault("poll_interval_s", -1)
        options.setdefault("quiet_period_s", 0)
        source = FileSystemSource(servables, **options)
        recorder = Recorder()
        source.set_aspired_versions_callback(recorder)
        made.append(source)
        return source, recorder

    yield make
    for source in made:
        source.stop()


# -- version directories and policies (synchronous, poll_once) ---------------------------


def test_version_names_are_parsed_as_numbers_and_others_ignored():
    assert parse_version_directory_name("0003") == 3
    assert parse_version_directory_name("0") == 0
    ignored = ["-1", "+1", "abc", "1a", ".3", "_3", "3.tmp", "3.tmp.x", "3.partial", "3~", "", "1" * 30, "٣"]
    for name in ignored:
        assert parse_version_directory_name(name) is None, name


def test_only_numeric_directories_are_versions(tmp_path, make_source, caplog):
    base = tmp_path / "m"
    for name in ["0003", "03", "12", ".5", "_6", "8.tmp", "9.partial", "10~", "-1", "abc"]:
        write_version(base, name)
    (base / "7").write_text("a file named like a version")
    source, recorder = make_source([WatchedServable("m", base, AllVersions())])
    with caplog.at_level(logging.WARNING):
        source.poll_once()
    items = recorder.last("m")
    assert versions(items) == [3, 12]
    assert items[0].value.path == str(base / "0003")  # the duplicate '03' is ignored, deterministically
    assert "Duplicate version directories" in caplog.text and "'03'" in caplog.text
    write_version(base, "3")
    source.poll_once()
    assert recorder.last("m")[0].value.path == str(base / "3")  # the canonical spelling wins


def test_version_policies_choose_among_complete_versions(tmp_path, make_source, caplog):
    base = tmp_path / "m"
    for name in ["1", "2", "3", "5"]:
        write_version(base, name)
    source, recorder = make_source(
        [
            WatchedServable("default", base),
            WatchedServable("latest2", base, LatestVersions(2)),
            WatchedServable("latest0", base, LatestVersions(0)),
            WatchedServable("all", base, AllVersions()),
            WatchedServable("specific", base, SpecificVersions((2, 4))),
        ]
    )
    with caplog.at_level(logging.WARNING):
        source.poll_once()
    assert versions(recorder.last("default")) == [5]
    assert versions(recorder.last("latest2")) == [3, 5]
    assert versions(recorder.last("latest0")) == [5]
    assert versions(recorder.last("all")) == [1, 2, 3, 5]
    assert versions(recorder.last("specific")) == [2]
    assert "Version 4 of servable specific" in caplog.text
    item = recorder.last("default")[0]
    assert item.ok and item.id.name == "default" and item.value.path == str(base / "5")


def test_latest_keeps_the_complete_version_while_the_newest_is_not_ready(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1")
    write_version(base, "2", {"variables/data": "half written"})
    source, recorder = make_source([WatchedServable("m", base)], is_version_ready=has_model_file)
    source.poll_once()
    assert versions(recorder.last("m")) == [1]
    (base / "2" / "saved_model.pb").write_text("model")
    source.poll_once()
    assert versions(recorder.last("m")) == [2]


def test_per_servable_readiness_check_overrides_the_source_default(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1", {"model.pkl": "x"})
    source, recorder = make_source(
        [
            WatchedServable("plain", base),
            WatchedServable("custom", base, is_version_ready=lambda p: (p / "model.pkl").exists()),
        ],
        is_version_ready=has_model_file,
    )
    source.poll_once()
    # "plain" has a version folder that is not ready: nothing is sent for it (what serves
    # keeps serving); "custom" accepts the same folder.
    assert recorder.last("plain") is None and versions(recorder.last("custom")) == [1]


def test_a_readiness_check_that_raises_becomes_that_versions_error(tmp_path, make_source):
    write_version(tmp_path / "m", "1")

    def broken(path: Path) -> bool:
        raise RuntimeError("disk on fire")

    source, recorder = make_source([WatchedServable("m", tmp_path / "m", is_version_ready=broken)])
    source.poll_once()
    (item,) = recorder.last("m")
    assert item.id.version == 1 and not item.ok and "disk on fire" in item.error.message


def test_empty_base_path_unloads_everything(tmp_path, make_source, caplog):
    (tmp_path / "m").mkdir()
    source, recorder = make_source([WatchedServable("m", tmp_path / "m")])
    with caplog.at_level(logging.WARNING):
        source.poll_once()
    assert recorder.last("m") == []
    assert f"No versions of servable m found under base path {tmp_path / 'm'}. Did you forget" in caplog.text


def test_versions_always_present_refuses_to_send_an_empty_list(tmp_path, make_source, caplog):
    (tmp_path / "m").mkdir()
    source, recorder = make_source([WatchedServable("m", tmp_path / "m")], versions_always_present=True)
    with caplog.at_level(logging.ERROR):
        source.poll_once()
    assert recorder.calls == []
    assert "Refusing to unload all versions for Servable: m" in caplog.text
    write_version(tmp_path / "m", "1")
    source.poll_once()
    assert versions(recorder.last("m")) == [1]


def test_missing_base_path_is_an_error_of_that_servable_only(tmp_path, make_source, caplog):
    write_version(tmp_path / "b", "1")
    servables = [WatchedServable("a", tmp_path / "a"), WatchedServable("b", tmp_path / "b")]
    source, recorder = make_source(servables)
    with caplog.at_level(logging.ERROR):
        source.poll_once()
    assert recorder.summary() == [("b", [1])]
    error = source.servable_errors()["a"]
    assert isinstance(error, NotFoundError)
    assert str(tmp_path / "a") in error.message and "servable a" in error.message
    assert str(tmp_path / "a") in caplog.text
    write_version(tmp_path / "a", "4")
    source.poll_once()
    assert versions(recorder.last("a")) == [4] and source.servable_errors() == {}
    assert source.statistics().errors == 1


def test_revision_changes_when_a_file_changes(tmp_path, make_source):
    write_version(tmp_path / "m", "1", {"saved_model.pb": "v1", "variables/data": "weights"})
    source, recorder = make_source([WatchedServable("m", tmp_path / "m")])
    source.poll_once()
    first = recorder.last("m")[0].value.revision
    source.poll_once()
    assert recorder.last("m")[0].value.revision == first
    (tmp_path / "m" / "1" / "variables" / "data").write_text("new weights, longer")
    source.poll_once()
    second = recorder.last("m")[0].value
    assert second.revision != first and second.path == str(tmp_path / "m" / "1")


class FakeWallClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_quiet_period_waits_for_writes_to_stop_and_keeps_the_last_complete_revision(tmp_path, make_source):
    wall = FakeWallClock()
    write_version(tmp_path / "m", "1")
    servable = WatchedServable("m", tmp_path / "m")
    source, recorder = make_source([servable], quiet_period_s=60, wall_clock=wall)
    source.poll_once()
    assert recorder.last("m") is None  # just written: not complete yet, so nothing is sent
    wall.now += 61
    source.poll_once()
    old = recorder.last("m")[0].value
    (tmp_path / "m" / "1" / "saved_model.pb").write_text("being replaced")
    wall.now = time.time()
    source.poll_once()
    assert recorder.last("m")[0].value == old  # in motion: still sent as it was last complete
    wall.now += 61
    source.poll_once()
    assert recorder.last("m")[0].value.revision != old.revision


# -- events, timers and threads (start/stop) ---------------------------------------------


def test_new_version_is_picked_up_through_an_event_without_waiting_for_the_poll(tmp_path, make_source):
    write_version(tmp_path / "m", "1")
    source, recorder = make_source([WatchedServable("m", tmp_path / "m")], poll_interval_s=30)
    source.start()
    assert versions(recorder.last("m")) == [1]  # start() sent the initial state
    write_version(tmp_path / "m", "2")
    recorder.wait_for("m", [2])
    stats = source.statistics()
    assert stats.polls == 1 and stats.events > 0


def test_slowly_copied_version_is_not_aspired_before_it_is_complete(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1")
    source, recorder = make_source(
        [WatchedServable("m", base)], quiet_period_s=0.5, is_version_ready=has_model_file
    )
    writer_done = threading.Event()
    early: list[list[int]] = []

    def check(name: str, items: list[ServableData[StoragePath]]) -> None:
        if 2 in versions(items) and not writer_done.is_set():
            early.append(versions(items))

    recorder.on_call = check
    source.start()
    recorder.wait_for("m", [1])
    pace = threading.Event()  # never set: only paces the writer

    def copy_slowly() -> None:
        write_version(base, "2")  # the readiness marker comes first
        for i in range(20):
            (base / "2" / f"shard-{i}").write_text("x" * 1000)
            pace.wait(0.05)
        writer_done.set()

    writer = threading.Thread(target=copy_slowly)
    writer.start()
    writer.join(WAIT_S)
    assert writer_done.is_set()
    first = recorder.wait_for("m", [2])
    assert early == []
    source.poll_once()
    assert recorder.last("m") == first  # what was sent first already held every shard


def test_version_moved_in_atomically_is_aspired_promptly(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1")
    staging = write_version(tmp_path / "staging", "2", {"saved_model.pb": "m", "variables/v": "w"})
    source, recorder = make_source([WatchedServable("m", base)], quiet_period_s=0.2)
    source.start()
    recorder.wait_for("m", [1])
    os.rename(staging, base / "2")
    first = recorder.wait_for("m", [2])
    assert first[0].value.path == str(base / "2")
    source.poll_once()
    assert recorder.last("m") == first


def test_deleted_version_is_removed_from_the_aspired_list(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1")
    write_version(base, "2", {"saved_model.pb": "m", "variables/v": "w"})
    source, recorder = make_source([WatchedServable("m", base, AllVersions())])
    source.start()
    assert versions(recorder.last("m")) == [1, 2]
    shutil.rmtree(base / "2")
    recorder.wait_for("m", [1])


def test_missing_base_path_is_watched_for_and_does_not_stop_other_servables(tmp_path, make_source):
    write_version(tmp_path / "b", "1")
    late = tmp_path / "later" / "models" / "a"
    source, recorder = make_source([WatchedServable("a", late), WatchedServable("b", tmp_path / "b")])
    source.start()
    assert recorder.summary() == [("b", [1])] and "a" in source.servable_errors()
    write_version(tmp_path / "b", "2")
    recorder.wait_for("b", [2])
    write_version(late, "7")
    recorder.wait_for("a", [7])
    assert source.servable_errors() == {}


def test_base_path_replaced_by_rename_or_recreated_keeps_being_watched(tmp_path, make_source):
    base = tmp_path / "m"
    write_version(base, "1")
    source, recorder = make_source([WatchedServable("m", base)])
    source.start()
    os.rename(base, tmp_path / "old")  # the old watch now follows the renamed folder
    write_version(base, "8")
    recorder.wait_for("m", [8])
    write_version(base, "9")  # seen only through a watch on the new folder
    recorder.wait_for("m", [9])
    shutil.rmtree(base)
    write_version(base, "3")
    recorder.wait_for("m", [3])
    write_version(base, "4")
    recorder.wait_for("m", [4])


def test_update_config_unloads_removed_servables_and_scans_new_ones_at_once(tmp_path, make_source):
    write_version(tmp_path / "a", "1")
    write_version(tmp_path / "b", "3")
    source, recorder = make_source([WatchedServable("a", tmp_path / "a")])
    source.start()
    source.update_config([WatchedServable("b", tmp_path / "b")])
    assert recorder.summary() == [("a", [1]), ("a", []), ("b", [3])]
    write_version(tmp_path / "a", "2")  # no longer watched
    write_version(tmp_path / "b", "4")
    recorder.wait_for("b", [4])
    assert versions(recorder.last("a")) == []
    with pytest.raises(InvalidArgumentError, match="unique"):
        source.update_config([WatchedServable("b", tmp_path / "b"), WatchedServable("b", tmp_path / "a")])


def test_periodic_polls_send_the_list_again(tmp_path, make_source):
    write_version(tmp_path / "m", "1")
    servable = WatchedServable("m", tmp_path / "m")
    source, recorder = make_source([servable], poll_interval_s=0.05, use_watchdog=False)
    source.start()
    with recorder._cond:
        assert recorder._cond.wait_for(lambda: len(recorder.calls) >= 3, timeout=WAIT_S)
    assert all(versions(items) == [1] for _, items in recorder.calls)


def test_no_threads_are_left_after_stop(tmp_path):
    write_version(tmp_path / "m", "1")
    before = set(threading.enumerate())
    source = FileSystemSource([WatchedServable("m", tmp_path / "m")], poll_interval_s=0.5)
    source.set_aspired_versions_callback(Recorder())
    source.start()
    assert set(threading.enumerate()) - before  # worker and watchdog threads run
    source.stop()
    source.stop()
    assert set(threading.enumerate()) - before == set()


def test_life_cycle_errors(tmp_path):
    source = FileSystemSource([WatchedServable("m", tmp_path)], use_watchdog=False)
    with pytest.raises(FailedPreconditionError):
        source.start()
    with pytest.raises(FailedPreconditionError):
        source.poll_once()
    source.set_aspired_versions_callback(Recorder())
    with pytest.raises(FailedPreconditionError):
        source.set_aspired_versions_callback(Recorder())
    source.start()
    with pytest.raises(FailedPreconditionError):
        source.start()
    source.stop()
    with pytest.raises(FailedPreconditionError):
        source.poll_once()


def test_invalid_options_are_rejected():
    with pytest.raises(InvalidArgumentError, match="quiet_period_s"):
        FileSystemSource([], quiet_period_s=-1)
    with pytest.raises(InvalidArgumentError, match="name"):
        WatchedServable("", "/models/x")
    with pytest.raises(InvalidArgumentError, match="version_policy"):
        WatchedServable("x", "/models/x", version_policy="latest")  # type: ignore[arg-type]
    assert WatchedServable("x", "relative/dir").base_path == os.path.abspath("relative/dir")


def test_serving_version_stays_while_its_replacement_is_incomplete(tmp_path, make_source):
    """The old folder is removed and the new one is still being written: send nothing, so
    the manager keeps the old version serving; send the new one once it is complete."""
    wall = FakeWallClock()
    base = tmp_path / "m"
    write_version(base, "1")
    source, recorder = make_source([WatchedServable("m", base)], quiet_period_s=60, wall_clock=wall)
    wall.now += 61
    source.poll_once()
    assert versions(recorder.last("m")) == [1]
    sent = len(recorder.calls)
    import shutil

    shutil.rmtree(base / "1")
    write_version(base, "2")
    wall.now = time.time()
    source.poll_once()
    assert len(recorder.calls) == sent, "an incomplete replacement must not empty the aspired list"
    wall.now += 61
    source.poll_once()
    assert versions(recorder.last("m")) == [2]
