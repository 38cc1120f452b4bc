"""Watchdog glue for :class:`~pyserving.sources.file_system_source.FileSystemSource`.

:class:`Watcher` owns one watchdog observer (inotify on Linux) and its watches: each
existing base path recursively and, on its own, the nearest existing parent of each base
path, so a base path that appears later, is deleted or is replaced by a rename is
noticed. :func:`is_read_only`, :func:`event_paths` and :func:`affected` tell which servables an event concerns
and which version directories it touched; the source re-scans those servables about
:data:`DEBOUNCE_S` later on its own worker thread.

Lazy import
    watchdog is imported by :meth:`Watcher.start` only, never when this module is
    imported, so ``import pyserving`` stays light. When watchdog is missing or its
    observer cannot start (e.g. inotify unavailable), a warning is logged and the
    watcher stays inactive: the source then relies on polling.

Threading
    The ``on_event`` callback runs on watchdog's thread, one event at a time; it must
    only record the event (no I/O, no waiting on the source's scans). :class:`Watcher`
    is not thread-safe: its owner serialises :meth:`~Watcher.start`,
    :meth:`~Watcher.sync` and :meth:`~Watcher.detach` (the source holds its
    ``_emit_lock``). :func:`stop_observer` blocks until watchdog's threads end; call it
    without holding locks that ``on_event`` takes.

Failures
    A path that cannot be watched is logged and skipped (polling covers it); a watch
    whose directory was deleted or replaced is dropped and re-made by the next
    :meth:`~Watcher.sync`. Nothing here raises for file-system trouble.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "DEBOUNCE_S",
    "Watcher",
    "is_read_only",
    "event_paths",
    "affected",
    "watch_targets",
    "identity",
    "start_observer",
    "stop_observer",
]

# Logged under the source's name, so one logger configures all of FileSystemSource.
_log = logging.getLogger("pyserving.sources.file_system_source")
DEBOUNCE_S = 0.03  # delay between an event and the re-scan it triggers
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})  # reads, e.g. readiness checks

EventCallback = Callable[[Any], None]
_Key = tuple[str, bool]  # (path, recursive)


def is_read_only(event: Any) -> bool:
    """Whether a watchdog event only reports a read (opening, closing without writing),
    e.g. by a readiness check; such events change nothing and are ignored."""
    return event.event_type in _IGNORED_EVENTS


def event_paths(event: Any) -> list[str]:
    """The paths a watchdog event names: its source, then a move's destination."""
    return [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]


def affected(base: str, paths: Sequence[str], *, synthetic: bool) -> tuple[bool, list[str]]:
    """Whether an event on ``paths`` concerns the servable at ``base``, and the children of
    ``base`` (version directories) that something *inside* them changed.

    An event on ``base``, anything under it, or an ancestor of it (the base path may have
    appeared or vanished) concerns it. A synthetic event (made up by watchdog for a moved
    or new directory's contents) touches no child: the files did not change.
    """
    hit, touched = False, []
    for path in paths:
        if path == base or path.startswith(base + os.sep):
            hit = True
            parts = path[len(base) + 1 :].split(os.sep)
            if len(parts) >= 2 and not synthetic:
                touched.append(parts[0])
        elif base.startswith(path.rstrip(os.sep) + os.sep):
            hit = True  # an ancestor changed: the base path may have appeared
    return hit, touched


def watch_targets(base: str) -> list[_Key]:
    """(path, recursive) watches for ``base``: itself recursively when it exists, and its
    nearest existing parent alone, which sees ``base`` appear, vanish or be renamed."""
    targets = [(base, True)] if os.path.isdir(base) else []
    path = os.path.dirname(base)
    while not os.path.isdir(path):
        if os.path.dirname(path) == path:
            return targets
        path = os.path.dirname(path)
    return targets + [(path, False)]


def identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or ``None`` when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def start_observer(on_event: EventCallback) -> tuple[Any, Any]:
    """A started watchdog observer and a handler forwarding to ``on_event``; ``(None,
    None)`` when watchdog is unavailable (the source then relies on polling)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError as exc:
        _log.warning("watchdog is not installed (%s); FileSystemSource relies on polling", exc)
        return None, None

    class _Forwarder(FileSystemEventHandler):
        def dispatch(self, event: Any) -> None:
            on_event(event)

    observer = Observer()
    observer.daemon = True
    try:
        observer.start()
    except Exception as exc:  # noqa: BLE001 - e.g. inotify unavailable
        _log.warning("Cannot start watching files (%s); FileSystemSource relies on polling", exc)
        return None, None
    return observer, _Forwarder()


def stop_observer(observer: Any) -> None:
    """Stop a watchdog observer and wait for its threads; ``None`` is ignored."""
    if observer is not None:
        observer.stop()
        observer.join()


class Watcher:
    """The observer and the watches kept for a set of base paths (see module docs)."""

    def __init__(self, on_event: EventCallback) -> None:
        self._on_event = on_event
        self._observer: Any = None
        self._handler: Any = None
        # (path, recursive) -> (watch, identity of path when it was scheduled)
        self._watches: dict[_Key, tuple[Any, tuple[int, int] | None]] = {}

    @property
    def active(self) -> bool:
        """Whether an observer is running (started, not detached)."""
        return self._observer is not None

    def start(self) -> None:
        """Start the observer; the watcher stays inactive if watchdog is unavailable."""
        self._observer, self._handler = start_observer(self._on_event)

    def sync(self, bases: Iterable[str]) -> None:
        """Make the watches match ``bases``: drop stale ones, add missing ones."""
        if self._observer is None:
            return
        desired = {key for base in bases for key in watch_targets(base)}
        try:
            alive = {e.watch for e in list(self._observer.emitters) if e.is_alive()}
        except RuntimeError:  # the set changed while we copied it; check next time
            alive = {watch for watch, _ in self._watches.values()}
        for key, (watch, ident) in list(self._watches.items()):
            if key not in desired or watch not in alive or ident != identity(key[0]):
                try:
                    self._observer.unschedule(watch)
                except (KeyError, OSError, RuntimeError):
                    pass
                del self._watches[key]
        for key in desired - self._watches.keys():
            path, recursive = key
            try:
                watch = self._observer.schedule(self._handler, path, recursive=recursive)
            except OSError as exc:
                _log.warning("Cannot watch %s for changes (%s); relying on polling for it", path, exc)
                continue
            self._watches[key] = (watch, identity(path))

    def detach(self) -> Any:
        """Forget the observer and its watches and return it (``None`` if none) for
        :func:`stop_observer`; the watcher is inactive afterwards."""
        observer, self._observer = self._observer, None
        self._watches.clear()
        return observer
