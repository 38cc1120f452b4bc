"""version_scan's helpers against real temporary folders, with injected clocks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pyserving.servable.errors import InvalidArgumentError, NotFoundError
from pyserving.sources import AllVersions, LatestVersions, SpecificVersions, StoragePath
from pyserving.sources.version_scan import (
    any_directory,
    base_path_error,
    check_complete,
    fingerprint,
    list_version_dirs,
    scan_versions,
)

NOW = 1_000_000.0  # wall-clock "now" the tests pin file times to


def write(path: Path, text: str = "model", *, at: float = NOW - 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (at, at))
    return path


def frozen(value: float):
    return lambda: value


def test_list_version_dirs_keeps_numeric_directories_and_warns_about_duplicates(tmp_path):
    for name in ["1", "03", "3", "0003", "abc", ".4", "5.tmp"]:
        (tmp_path / name).mkdir()
    write(tmp_path / "7")  # a file, not a directory
    notices: list[tuple[int, str]] = []
    assert list_version_dirs("m", str(tmp_path), notices) == {1: "1", 3: "3"}
    assert len(notices) == 1 and notices[0][0] == logging.WARNING
    assert "'0003'" in notices[0][1] and "using 3" in notices[0][1]


def test_list_version_dirs_raises_for_a_missing_base(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_version_dirs("m", str(tmp_path / "missing"), [])


def test_fingerprint_changes_with_any_file_and_reports_the_newest_time(tmp_path):
    write(tmp_path / "a.pb", at=NOW - 50)
    write(tmp_path / "sub" / "b.bin", "x", at=NOW - 100)
    first, _ = fingerprint(str(tmp_path), NOW)
    assert len(first) == 16 and fingerprint(str(tmp_path), NOW)[0] == first
    write(tmp_path / "sub" / "b.bin", "xy", at=NOW - 100)
    second, newest = fingerprint(str(tmp_path), NOW)
    assert second != first
    assert newest >= NOW - 50  # ctime of the rewritten file counts as a change too


def test_check_complete_waits_for_the_quiet_period(tmp_path):
    write(tmp_path / "1" / "saved_model.pb", at=NOW - 1)
    path = str(tmp_path / "1")
    # st_ctime is real time (now); with wall_clock far in the future only mtimes matter.
    late = os.stat(path).st_ctime + 1000

    def check(quiet_s: float, wall: float, touched_at: float | None = None, clock: float = 0.0):
        return check_complete(path, any_directory, touched_at, quiet_s=quiet_s, retry_s=0.03,
                              clock=frozen(clock), wall_clock=frozen(wall))

    storage, wait_s = check(0, NOW)
    assert isinstance(storage, StoragePath) and storage.path == path and wait_s is None
    storage, wait_s = check(5, late - 2)  # ctime is > 1000 s before "late - 2": quiet
    assert storage is not None and wait_s is None
    storage, wait_s = check(5, late, touched_at=10.0, clock=12.0)  # an event 2 s ago
    assert storage is None and wait_s == pytest.approx(3.0)
    assert check_complete(path, lambda p: False, None, quiet_s=0, retry_s=0.03,
                          clock=frozen(0.0), wall_clock=frozen(NOW)) == (None, None)


def test_base_path_errors_name_the_servable_and_path():
    assert isinstance(base_path_error("m", "/b", FileNotFoundError()), NotFoundError)
    error = base_path_error("m", "/b", NotADirectoryError())
    assert isinstance(error, InvalidArgumentError) and "/b" in error.message and "m" in error.message


def scan(tmp_path: Path, policy, last_complete, ready=any_directory):
    return scan_versions("m", str(tmp_path), policy, ready, last_complete, {}, quiet_s=0, retry_s=0.03,
                         clock=frozen(0.0), wall_clock=frozen(NOW))


def test_scan_versions_applies_the_policy_and_remembers_complete_versions(tmp_path):
    write(tmp_path / "1" / "saved_model.pb")
    write(tmp_path / "2" / "saved_model.pb")
    last: dict[int, StoragePath] = {}
    result = scan(tmp_path, LatestVersions(1), last)
    assert [d.id.version for d in result.items] == [2] and result.error is None
    assert sorted(last) == [1, 2] and result.recheck_in_s is None
    # version 2 loses its model file: its last complete revision is still sent
    os.remove(tmp_path / "2" / "saved_model.pb")
    result = scan(tmp_path, AllVersions(), last, ready=lambda p: (p / "saved_model.pb").is_file())
    assert [d.id.version for d in result.items] == [1, 2]
    assert result.items[1].value == last[2]


def test_scan_versions_reports_missing_empty_and_requested_versions(tmp_path):
    missing = scan(tmp_path / "nope", LatestVersions(1), {})
    assert missing.items is None and isinstance(missing.error, NotFoundError)
    last = {4: StoragePath(str(tmp_path / "4"), "0" * 16)}
    empty = scan(tmp_path, LatestVersions(1), last)
    assert empty.items == [] and last == {} and "No versions of servable m" in empty.notices[0][1]
    write(tmp_path / "1" / "saved_model.pb")
    specific = scan(tmp_path, SpecificVersions([1, 9]), {})
    assert [d.id.version for d in specific.items] == [1]
    assert any("Version 9 of servable m" in message for _, message in specific.notices)


def test_scan_versions_turns_a_raising_readiness_check_into_that_versions_error(tmp_path):
    write(tmp_path / "1" / "saved_model.pb")

    def broken(path: Path) -> bool:
        raise OSError("disk on fire")

    result = scan(tmp_path, LatestVersions(1), {}, ready=broken)
    assert result.error is None and result.items[0].error is not None
    assert "disk on fire" in str(result.items[0].error)
