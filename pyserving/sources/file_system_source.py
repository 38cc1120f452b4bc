""":class:`FileSystemSource`: aspires to the version directories found under base paths.

Each :class:`WatchedServable` names a base path whose numeric child directories are the
versions (``/models/mnist/1``, ``/models/mnist/0002``). For every servable the source
sends its target the *complete* aspired list of ``ServableData[StoragePath]``, chosen by
the servable's :mod:`version policy <pyserving.sources.version_policy>`.

Version directories
    A child counts when it is a directory (or a link to one) whose whole name is decimal
    digits (``0003`` is version 3, at most 2**63-1). Hidden names (``.3``), temporary names
    (``_3``, ``3.tmp``, ``3.partial``, ``3~``, any name containing ``.tmp``), negative and
    other non-numeric names and plain files are ignored. When two names give one number,
    the canonical spelling (``3`` over ``03``), else the first name in sort order, is used
    and a warning names the others.

When is a version complete?
    A version is aspired only once it is complete, which means both:

    1. the readiness check passes (e.g. the TensorFlow platform wants ``saved_model.pb``;
       the default accepts any directory), and
    2. nothing inside the version directory changed during the last ``quiet_period_s``:
       no file or subdirectory in it has a modification or change time (the later of
       ``st_mtime`` and ``st_ctime``; a modification time in the future is ignored) newer
       than that, and no file-system event touched anything in it in that time.

    So a version written elsewhere and then renamed into the base path in one step is
    complete as soon as its files are ``quiet_period_s`` old (the rename itself does not
    count), while a version copied in file by file waits until the writes stop.
    ``quiet_period_s=0`` turns rule 2 off. An incomplete version is not aspired *yet*; it
    does not count as missing: with ``LatestVersions`` the newest complete versions stay
    aspired meanwhile, and a version that was complete before and is being changed keeps
    being sent with its last complete revision until it is complete again. The source
    re-checks an incomplete version at the moment it could become complete (a timer), so
    pick-up does not wait for the next poll.

Revision
    ``StoragePath.revision`` is a 16-hex-digit hash of (relative path, size, mtime in ns)
    of every file under the version directory: it changes when any file changes.

Failures
    A missing or unreadable base path is an error of that servable only: it is logged
    (once, until it changes), recorded in :meth:`FileSystemSource.servable_errors`, and no
    list is sent for that servable, so its loaded versions keep serving; the other
    servables go on (TF Serving aborts the whole poll instead). A version directory that
    cannot be read, or whose readiness check raises, is sent as ``ServableData.failed``.
    A base path with no version directories sends an empty list (unload all) with TF
    Serving's warning, unless ``versions_always_present``, which refuses and sends nothing.
    That flag also suppresses every other empty list, as in TF Serving.

Events and polls
    With ``use_watchdog`` (default) a watchdog observer (inotify on Linux) watches every
    base path recursively and, on its own, the nearest existing parent of each base path,
    so a base path that appears later, is deleted or is replaced by a rename is noticed. An event schedules a re-scan of the servables it concerns about 30 ms later
    on the source's worker thread (watchdog's thread only records it). Polling is the
    safety net: ``poll_interval_s > 0`` polls periodically, ``0`` never after the start,
    ``< 0`` never (tests call :meth:`poll_once`). :meth:`start` always scans once and
    emits the initial state before it returns (TF Serving with a negative interval never
    emits). A poll sends every servable's list, changed or not; an event-driven or timed
    re-scan sends a servable's list only when it differs from the last one sent.

Threading
    Callbacks are never called concurrently: every scan-and-emit (worker thread,
    :meth:`poll_once`, :meth:`update_config`) runs under one lock, ``_emit_lock``, which
    also orders the lists sent for a servable. The target callback runs under that lock,
    so it must be quick (targets' callbacks are, see :mod:`pyserving.sources.source`); it
    may call back into this source from the same thread. ``_lock`` guards the config and
    the bookkeeping and is never held while calling out.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    as_serving_error,
)
from pyserving.servable.ids import ServableId
from pyserving.sources.source import AspiredVersionsCallback, Source
from pyserving.sources.storage_path import StoragePath
from pyserving.sources.version_policy import LatestVersions, ServableVersionPolicy, SpecificVersions

__all__ = [
    "FileSystemSource",
    "FileSystemSourceStatistics",
    "WatchedServable",
    "ReadinessCheck",
    "parse_version_directory_name",
]

ReadinessCheck = Callable[[Path], bool]

_log = logging.getLogger(__name__)
_DEBOUNCE_S = 0.03  # delay between an event and the re-scan it triggers
_RECHECK_SLACK_S = 0.01  # timers fire this much after a version could become complete
_MAX_WAIT_S = 5.0  # longest worker sleep, so an injected clock cannot stall it forever
_MAX_VERSION = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})  # reads, e.g. readiness checks


def parse_version_directory_name(name: str) -> int | None:
    """The version a child name stands for, or ``None`` when the child is not a version."""
    if name.startswith((".", "_")) or name.endswith((".partial", "~")) or ".tmp" in name:
        return None
    if not _DIGITS.fullmatch(name):
        return None
    version = int(name)
    return version if version <= _MAX_VERSION else None


@dataclass(frozen=True, slots=True)
class WatchedServable:
    """One servable to watch: ``name``, ``base_path`` (made absolute), its version policy
    (default latest 1) and optionally its own readiness check."""

    name: str
    base_path: str
    version_policy: ServableVersionPolicy = LatestVersions(1)
    is_version_ready: ReadinessCheck | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"servable name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.base_path, (str, os.PathLike)) or not os.fspath(self.base_path):
            raise InvalidArgumentError(
                f"base_path of servable {self.name} must be a non-empty path, got {self.base_path!r}"
            )
        if not isinstance(self.version_policy, ServableVersionPolicy):
            raise InvalidArgumentError(
                f"version_policy of servable {self.name} must be a ServableVersionPolicy, "
                f"got {self.version_policy!r}"
            )
        object.__setattr__(self, "base_path", os.path.abspath(os.fspath(self.base_path)))


@dataclass(frozen=True, slots=True)
class FileSystemSourceStatistics:
    """Counters since construction: polls, servable scans, file-system events received,
    callbacks sent, and errors (unreadable base paths and callbacks that raised)."""

    polls: int
    scans: int
    events: int
    callbacks: int
    errors: int


@dataclass
class _Stream:
    """What the source remembers of one servable between scans (guarded by _emit_lock)."""

    last_complete: dict[int, StoragePath] = field(default_factory=dict)
    last_sent: list[ServableData[StoragePath]] | None = None
    notices: set[str] = field(default_factory=set)


class _Phase(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class FileSystemSource(Source[StoragePath]):
    """Watches base paths and sends each servable's aspired versions (see module docs).

    Life cycle: construct, :meth:`set_aspired_versions_callback` (once), :meth:`start`,
    :meth:`stop`. Tests may skip ``start`` and drive it with :meth:`poll_once`.
    """

    def __init__(
        self,
        servables: Sequence[WatchedServable],
        *,
        poll_interval_s: float = 1.0,
        versions_always_present: bool = False,
        is_version_ready: ReadinessCheck | None = None,
        quiet_period_s: float = 0.2,
        use_watchdog: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(poll_interval_s, (int, float)) or math.isnan(poll_interval_s):
            raise InvalidArgumentError(
                f"poll_interval_s must be a number of seconds, got {poll_interval_s!r}"
            )
        if not isinstance(quiet_period_s, (int, float)) or not 0 <= quiet_period_s < math.inf:
            raise InvalidArgumentError(
                f"quiet_period_s must be a finite number >= 0, got {quiet_period_s!r}"
            )
        self._poll_interval_s = float(poll_interval_s)
        self._always_present = versions_always_present
        self._is_version_ready = is_version_ready
        self._quiet_s = float(quiet_period_s)
        self._use_watchdog = use_watchdog
        self._clock = clock  # monotonic: deadlines and event times
        self._wall_clock = wall_clock  # compared with file times
        # _lock guards every field below up to _emit_lock; _wake is signalled on new work.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._servables = _check_servables(servables)
        self._callback: AspiredVersionsCallback[StoragePath] | None = None
        self._phase = _Phase.NEW
        self._due: dict[str, float] = {}  # servable -> when to re-scan it (events, timers)
        self._next_poll: float | None = None
        self._touched: dict[str, dict[str, float]] = {}  # servable -> version dir -> event time
        self._errors: dict[str, ServingError] = {}
        self._counts = {"polls": 0, "scans": 0, "events": 0, "callbacks": 0, "errors": 0}
        # _emit_lock serializes scan+emit and guards _streams, _observer, _watches.
        self._emit_lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}
        self._observer: Any = None
        self._handler: Any = None
        self._watches: dict[tuple[str, bool], tuple[Any, tuple[int, int] | None]] = {}
        self._worker: threading.Thread | None = None

    # -- public API ---------------------------------------------------------------------

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[StoragePath]) -> None:
        with self._lock:
            if self._callback is not None:
                raise FailedPreconditionError("FileSystemSource already has an aspired-versions callback")
            self._callback = callback

    def start(self) -> None:
        """Start watching: the initial state of every servable is sent before this returns.

        Raises ``FailedPreconditionError`` without a callback, or when called twice or
        after :meth:`stop`.
        """
        with self._lock:
            if self._callback is None:
                raise FailedPreconditionError(
                    "call set_aspired_versions_callback before FileSystemSource.start"
                )
            if self._phase is not _Phase.NEW:
                raise FailedPreconditionError(
                    f"FileSystemSource.start called when already {self._phase.value}"
                )
            self._phase = _Phase.STARTED
        if self._use_watchdog:
            with self._emit_lock:
                self._observer, self._handler = _start_observer(self._on_fs_event)
        self.poll_once()
        with self._lock:
            if self._phase is not _Phase.STARTED:  # stopped meanwhile
                return
            if self._poll_interval_s > 0:
                self._next_poll = self._clock() + self._poll_interval_s
            self._worker = threading.Thread(target=self._run, name="pyserving-fs-source", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        """Stop the worker and the observer and wait for them. Idempotent; no callback is
        made after this returns (unless ``stop`` is called from inside the callback)."""
        with self._lock:
            self._phase = _Phase.STOPPED
            self._wake.notify_all()
            worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        with self._emit_lock:
            observer, self._observer = self._observer, None
            self._watches.clear()
        if observer is not None:
            observer.stop()
            observer.join()

    def poll_once(self) -> None:
        """Scan every servable now and send each list (changed or not). Synchronous."""
        with self._lock:
            if self._callback is None:
                raise FailedPreconditionError("FileSystemSource.poll_once needs an aspired-versions callback")
            if self._phase is _Phase.STOPPED:
                raise FailedPreconditionError("FileSystemSource.poll_once called after stop")
            self._counts["polls"] += 1
        with self._emit_lock:
            self._sync_watches()
            self._scan_and_emit(self._names(), always_emit=True)

    def update_config(self, servables: Sequence[WatchedServable]) -> None:
        """Replace the watched servables. Removed ones are sent an empty list at once;
        new or changed ones are scanned and sent at once (when a callback is set)."""
        new = _check_servables(servables)
        with self._emit_lock:
            with self._lock:
                old, self._servables = self._servables, new
                removed = [n for n in old if n not in new]
                changed = [n for n, s in new.items() if old.get(n) != s]
                for name in removed + changed:
                    self._due.pop(name, None)
                    self._touched.pop(name, None)
                    self._errors.pop(name, None)
                callback = self._callback if self._phase is not _Phase.STOPPED else None
            for name in removed + changed:
                self._streams.pop(name, None)
            if callback is None:
                return
            for name in removed:
                self._emit(name, [], callback)
            self._sync_watches()
            self._scan_and_emit(changed, always_emit=True)

    def servable_errors(self) -> dict[str, ServingError]:
        """The current error of each servable whose base path cannot be read."""
        with self._lock:
            return dict(self._errors)

    def statistics(self) -> FileSystemSourceStatistics:
        with self._lock:
            return FileSystemSourceStatistics(**self._counts)

    # -- scanning -----------------------------------------------------------------------

    def _scan_and_emit(self, names: Sequence[str], *, always_emit: bool) -> None:
        """Scan ``names`` and send their lists. Caller holds _emit_lock."""
        for name in names:
            with self._lock:
                servable = self._servables.get(name)
                callback = self._callback if self._phase is not _Phase.STOPPED else None
                touched = dict(self._touched.get(name, {}))
                if servable is not None and callback is not None:
                    self._counts["scans"] += 1
            if servable is None or callback is None:
                continue
            stream = self._streams.setdefault(name, _Stream())
            items, error, notices = self._scan(servable, stream, touched)
            if error is None and not items and self._always_present:
                items = None
                notices.append((logging.ERROR, f"Refusing to unload all versions for Servable: {name}"))
            _log_notices(stream, notices)
            with self._lock:
                if error is not None:
                    self._errors[name] = error
                    self._counts["errors"] += 1
                else:
                    self._errors.pop(name, None)
            if items is None or (not always_emit and items == stream.last_sent):
                continue
            stream.last_sent = items
            self._emit(name, items, callback)

    def _emit(
        self,
        name: str,
        items: list[ServableData[StoragePath]],
        callback: AspiredVersionsCallback[StoragePath],
    ) -> None:
        with self._lock:
            self._counts["callbacks"] += 1
        try:
            callback(name, items)
        except Exception:  # noqa: BLE001 - a faulty target must not stop the source
            _log.exception("The aspired-versions callback raised for servable %s", name)
            with self._lock:
                self._counts["errors"] += 1

    def _scan(
        self, servable: WatchedServable, stream: _Stream, touched: dict[str, float]
    ) -> tuple[list[ServableData[StoragePath]] | None, ServingError | None, list[tuple[int, str]]]:
        """One servable's aspired list (``None``: send nothing), its error and log notices."""
        name, base = servable.name, servable.base_path
        notices: list[tuple[int, str]] = []
        try:
            children = _version_dirs(name, base, notices)
        except OSError as exc:
            error = _base_path_error(name, base, exc)
            notices.append((logging.ERROR, f"{error.message}. Its loaded versions keep serving; the path is "
                            "checked again at the next poll or file change."))
            return None, error, notices
        if not children:
            stream.last_complete.clear()
            notices.append((logging.WARNING, f"No versions of servable {name} found under base path {base}. "
                            "Did you forget to name your leaf directory as a number (eg. '/1/')?"))
            return [], None, notices
        ready = servable.is_version_ready or self._is_version_ready or _any_directory
        candidates: dict[int, ServableData[StoragePath]] = {}
        recheck_in: float | None = None
        for version, child in children.items():
            sid, path = ServableId(name, version), os.path.join(base, child)
            try:
                storage, wait_s = self._inspect(path, ready, touched.get(child))
            except Exception as exc:  # noqa: BLE001 - becomes this version's error
                candidates[version] = ServableData.failed(
                    sid, as_serving_error(exc, f"Cannot read version directory {path} of servable {name}: "))
                continue
            if storage is not None:
                stream.last_complete[version] = storage
            storage = storage or stream.last_complete.get(version)
            if storage is not None:
                candidates[version] = ServableData.of(sid, storage)
            if wait_s is not None:
                recheck_in = wait_s if recheck_in is None else min(recheck_in, wait_s)
        for version in [v for v in stream.last_complete if v not in children]:
            del stream.last_complete[version]
        policy = servable.version_policy
        if isinstance(policy, SpecificVersions):
            for version in policy.missing(list(children)):
                notices.append((logging.WARNING, f"Version {version} of servable {name}, requested by its "
                                f"specific version policy, is not under base path {base}"))
        if recheck_in is not None:
            with self._lock:
                self._schedule_locked(name, self._clock() + recheck_in + _RECHECK_SLACK_S)
        return [candidates[v] for v in policy.select(sorted(candidates))], None, notices

    def _inspect(
        self, path: str, ready: ReadinessCheck, touched_at: float | None
    ) -> tuple[StoragePath | None, float | None]:
        """``(StoragePath, None)`` when complete, else ``(None, seconds until it may be)``;
        the wait is ``None`` when unknown (readiness check fails)."""
        if not ready(Path(path)):
            return None, None
        try:
            revision, newest = _fingerprint(path, self._wall_clock())
        except FileNotFoundError:  # something vanished while we looked: it is moving
            return None, max(self._quiet_s, _DEBOUNCE_S)
        wait_s = 0.0
        if self._quiet_s > 0:
            wait_s = newest + self._quiet_s - self._wall_clock()
            if touched_at is not None:
                wait_s = max(wait_s, touched_at + self._quiet_s - self._clock())
        if wait_s > 0:
            return None, wait_s
        return StoragePath(path, revision), None

    # -- worker and watchdog ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._phase is _Phase.STOPPED:
                        return
                    now = self._clock()
                    poll = self._next_poll is not None and now >= self._next_poll
                    if poll:
                        self._next_poll = now + self._poll_interval_s
                        self._counts["polls"] += 1
                    names = sorted(n for n, at in self._due.items() if at <= now)
                    for n in names:
                        del self._due[n]
                    if poll or names:
                        break
                    deadlines = list(self._due.values())
                    if self._next_poll is not None:
                        deadlines.append(self._next_poll)
                    timeout = min([_MAX_WAIT_S] + [max(d - now, 0.001) for d in deadlines])
                    self._wake.wait(timeout)
            try:
                with self._emit_lock:
                    self._sync_watches()
                    if poll:
                        self._scan_and_emit(self._names(), always_emit=True)
                    else:
                        self._scan_and_emit(names, always_emit=False)
            except Exception:  # noqa: BLE001 - keep watching whatever went wrong
                _log.exception("FileSystemSource worker failed to scan; it will try again")

    def _names(self) -> list[str]:
        with self._lock:
            return list(self._servables)

    def _schedule_locked(self, name: str, at: float) -> None:
        self._due[name] = min(self._due.get(name, math.inf), at)
        self._wake.notify_all()

    def _on_fs_event(self, event: Any) -> None:
        """Runs on watchdog's thread: records the event and schedules re-scans, no I/O."""
        if event.event_type in _IGNORED_EVENTS:
            return
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        now = self._clock()
        with self._lock:
            if self._phase is _Phase.STOPPED:
                return
            self._counts["events"] += 1
            for servable in self._servables.values():
                base, hit = servable.base_path, False
                for path in paths:
                    if path == base or path.startswith(base + os.sep):
                        hit = True
                        parts = path[len(base) + 1 :].split(os.sep)
                        if len(parts) >= 2 and not event.is_synthetic:
                            self._touched.setdefault(servable.name, {})[parts[0]] = now
                    elif base.startswith(path.rstrip(os.sep) + os.sep):
                        hit = True  # an ancestor changed: the base path may have appeared
                if hit:
                    self._schedule_locked(servable.name, now + _DEBOUNCE_S)
            for times in self._touched.values():  # forget events older than the quiet period
                for child in [c for c, at in times.items() if at < now - self._quiet_s]:
                    del times[child]

    def _sync_watches(self) -> None:
        """Watch each base path (or its nearest existing parent). Caller holds _emit_lock."""
        if self._observer is None:
            return
        with self._lock:
            bases = [s.base_path for s in self._servables.values()]
        desired = {key for base in bases for key in _watch_targets(base)}
        try:
            alive = {e.watch for e in list(self._observer.emitters) if e.is_alive()}
        except RuntimeError:  # the set changed while we copied it; check next time
            alive = {watch for watch, _ in self._watches.values()}
        for key, (watch, identity) in list(self._watches.items()):
            if key not in desired or watch not in alive or identity != _identity(key[0]):
                try:
                    self._observer.unschedule(watch)
                except (KeyError, OSError, RuntimeError):
                    pass
                del self._watches[key]
        for key in desired - self._watches.keys():
            path, recursive = key  # type: ignore[misc]
            try:
                watch = self._observer.schedule(self._handler, path, recursive=recursive)
            except OSError as exc:
                _log.warning("Cannot watch %s for changes (%s); relying on polling for it", path, exc)
                continue
            self._watches[key] = (watch, _identity(path))  # type: ignore[index]


def _check_servables(servables: Sequence[WatchedServable]) -> dict[str, WatchedServable]:
    by_name: dict[str, WatchedServable] = {}
    for servable in servables:
        if not isinstance(servable, WatchedServable):
            raise InvalidArgumentError(f"servables must be WatchedServable objects, got {servable!r}")
        if servable.name in by_name:
            raise InvalidArgumentError(f"servable names must be unique, got {servable.name!r} twice")
        by_name[servable.name] = servable
    return by_name


def _any_directory(path: Path) -> bool:
    return True


def _log_notices(stream: _Stream, notices: list[tuple[int, str]]) -> None:
    """Log each notice when it is new for this servable; repeats go to DEBUG."""
    for level, message in notices:
        _log.log(level if message not in stream.notices else logging.DEBUG, "%s", message)
    stream.notices = {message for _, message in notices}


def _base_path_error(name: str, base: str, exc: OSError) -> ServingError:
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"Could not find base path {base} for servable {name}")
    if isinstance(exc, NotADirectoryError):
        return InvalidArgumentError(f"Base path {base} for servable {name} is not a directory")
    return as_serving_error(exc, f"Cannot list base path {base} for servable {name}: ")


def _version_dirs(name: str, base: str, notices: list[tuple[int, str]]) -> dict[int, str]:
    """``{version: child name}`` of the version directories under ``base``."""
    found: dict[int, list[str]] = {}
    with os.scandir(base) as entries:
        for entry in entries:
            version = parse_version_directory_name(entry.name)
            if version is None:
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                found.setdefault(version, []).append(entry.name)
    chosen: dict[int, str] = {}
    for version, children in sorted(found.items()):
        children.sort(key=lambda child: (child != str(version), child))
        if len(children) > 1:
            notices.append((logging.WARNING, f"Duplicate version directories detected for servable {name} "
                            f"under {base}: {children} all name version {version}; using {children[0]}"))
        chosen[version] = children[0]
    return chosen


def _fingerprint(root: str, wall_now: float) -> tuple[str, float]:
    """(revision hash, latest change time) of everything inside ``root``."""
    files: list[tuple[str, int, int]] = []
    newest = -math.inf
    pending, seen = [""], set()
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(root, rel)) as entries:
            for entry in entries:
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    if not entry.is_symlink():
                        raise
                    st = entry.stat(follow_symlinks=False)  # a dangling link
                changed = st.st_ctime if st.st_mtime > wall_now else max(st.st_mtime, st.st_ctime)
                newest = max(newest, changed)
                child = os.path.join(rel, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        pending.append(child)
                else:
                    files.append((child, st.st_size, st.st_mtime_ns))
    digest = hashlib.blake2b(digest_size=8)
    for child, size, mtime_ns in sorted(files):
        digest.update(f"{child}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest(), newest


def _watch_targets(base: str) -> list[tuple[str, bool]]:
    """(path, recursive) watches for ``base``: itself recursively when it exists, and its
    nearest existing parent alone, which sees ``base`` appear, vanish or be renamed."""
    targets = [(base, True)] if os.path.isdir(base) else []
    path = os.path.dirname(base)
    while not os.path.isdir(path):
        if os.path.dirname(path) == path:
            return targets
        path = os.path.dirname(path)
    return targets + [(path, False)]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _start_observer(on_event: Callable[[Any], None]) -> tuple[Any, Any]:
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
