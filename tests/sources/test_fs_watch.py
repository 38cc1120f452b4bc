"""fs_watch: event routing as pure functions, and a Watcher on a real temporary folder."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyserving.sources.fs_watch import (
    Watcher,
    affected,
    event_paths,
    identity,
    is_read_only,
    stop_observer,
    watch_targets,
)

WAIT_S = 10.0  # upper bound of every wait; never reached when things work


def event(kind: str, src: str | bytes, dest: str | bytes = "") -> Any:
    return SimpleNamespace(event_type=kind, src_path=src, dest_path=dest, is_synthetic=False)


def test_read_only_events_are_recognised_and_paths_decoded():
    assert is_read_only(event("opened", "/a")) and is_read_only(event("closed_no_write", "/a"))
    assert not is_read_only(event("modified", "/a"))
    assert event_paths(event("moved", b"/a/x", "/a/y")) == ["/a/x", "/a/y"]
    assert event_paths(event("created", "/a/x")) == ["/a/x"]


def test_affected_routes_events_to_the_servable_and_its_version_directories():
    base = os.path.join(os.sep, "models", "m")
    inside = os.path.join(base, "3", "saved_model.pb")
    assert affected(base, [inside], synthetic=False) == (True, ["3"])
    assert affected(base, [inside], synthetic=True) == (True, [])
    assert affected(base, [os.path.join(base, "3")], synthetic=False) == (True, [])
    assert affected(base, [base], synthetic=False) == (True, [])
    assert affected(base, [os.path.dirname(base)], synthetic=False) == (True, [])  # an ancestor
    assert affected(base, [base + "x", os.path.join(os.sep, "other")], synthetic=False) == (False, [])


def test_watch_targets_are_the_base_and_its_nearest_existing_parent(tmp_path):
    base = tmp_path / "m"
    assert watch_targets(str(base)) == [(str(tmp_path), False)]
    deep = tmp_path / "a" / "b" / "m"
    assert watch_targets(str(deep)) == [(str(tmp_path), False)]
    base.mkdir()
    assert watch_targets(str(base)) == [(str(base), True), (str(tmp_path), False)]


def test_identity_follows_the_directory(tmp_path):
    assert identity(str(tmp_path / "missing")) is None
    (tmp_path / "d").mkdir()
    first = identity(str(tmp_path / "d"))
    assert first is not None and identity(str(tmp_path / "d")) == first


def test_an_unstarted_watcher_does_nothing():
    watcher = Watcher(lambda e: None)
    assert not watcher.active
    watcher.sync(["/nowhere"])
    assert watcher.detach() is None
    stop_observer(None)


def test_watcher_forwards_events_under_a_watched_base_and_stops(tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    seen = threading.Event()
    target = str(base / "1")

    def on_event(e: Any) -> None:
        if target in event_paths(e):
            seen.set()

    watcher = Watcher(on_event)
    watcher.start()
    try:
        assert watcher.active
        watcher.sync([str(base)])
        Path(target).mkdir()
        assert seen.wait(WAIT_S), "no event for a new version directory"
    finally:
        observer = watcher.detach()
        stop_observer(observer)
    assert not watcher.active and not observer.is_alive()
