""":class:`FileSystemSource`: aspires to the version directories found under base paths.

Each :class:`WatchedServable` names a base path whose numeric child directories are the
versions (``/models/mnist/1``, ``/models/mnist/0002``). For every servable the source
sends its target the *complete* aspired list of ``ServableData[StoragePath]``, chosen by
the servable's :mod:`version policy <pyserving.sources.version_policy>`.

Versions, completeness and revisions (details in :mod:`pyserving.sources.version_scan`)
    A version is a child directory whose whole name is decimal digits (``0003`` is 3);
    hidden, temporary and other names are ignored. A version is aspired only once it is
    complete: its readiness check passes (default: any directory) and nothing in it
    changed during the last ``quiet_period_s`` (``0`` turns this off). An incomplete
    version is not aspired *yet* and does not count as missing; a version that was
    complete keeps being sent with its last complete revision. The source re-checks an
    incomplete version at the moment it could become complete (a timer), so pick-up does
    not wait for the next poll. ``StoragePath.revision`` changes when any file changes.

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
    so a base path that appears later, is deleted or is replaced by a rename is noticed
    (see :mod:`pyserving.sources.fs_watch`). An event schedules a re-scan of the
    servables it concerns about 30 ms later on the source's worker thread (watchdog's
    thread only records it). Polling is the safety net: ``poll_interval_s > 0`` polls
    periodically, ``0`` never after the start, ``< 0`` never (tests call
    :meth:`poll_once`). :meth:`start` always scans once and emits the initial state
    before it returns (TF Serving with a negative interval never emits). A poll sends
    every servable's list, changed or not; an event-driven or timed re-scan sends a
    servable's list only when it differs from the last one sent.

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
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyserving.servable.data import ServableData
from pyserving.servable.errors import FailedPreconditionError, InvalidArgumentError, ServingError
from pyserving.sources.fs_watch import (
    DEBOUNCE_S,
    Watcher,
    affected,
    event_paths,
    is_read_only,
    stop_observer,
)
from pyserving.sources.source import AspiredVersionsCallback, Source
from pyserving.sources.storage_path import StoragePath
from pyserving.sources.version_scan import (
    Notice,
    ReadinessCheck,
    any_directory,
    parse_version_directory_name,
    scan_versions,
)
from pyserving.sources.watched_servable import WatchedServable, check_servables

__all__ = [
    "FileSystemSource",
    "FileSystemSourceStatistics",
    "WatchedServable",
    "ReadinessCheck",
    "parse_version_directory_name",
]

_log = logging.getLogger(__name__)
_RECHECK_SLACK_S = 0.01  # timers fire this much after a version could become complete
_MAX_WAIT_S = 5.0  # longest worker sleep, so an injected clock cannot stall it forever


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
        self._servables = check_servables(servables)
        self._callback: AspiredVersionsCallback[StoragePath] | None = None
        self._phase = _Phase.NEW
        self._due: dict[str, float] = {}  # servable -> when to re-scan it (events, timers)
        self._next_poll: float | None = None
        self._touched: dict[str, dict[str, float]] = {}  # servable -> version dir -> event time
        self._errors: dict[str, ServingError] = {}
        self._counts = {"polls": 0, "scans": 0, "events": 0, "callbacks": 0, "errors": 0}
        # _emit_lock serializes scan+emit and guards _streams and _watcher.
        self._emit_lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}
        self._watcher = Watcher(self._on_fs_event)
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
                self._watcher.start()
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
            observer = self._watcher.detach()
        stop_observer(observer)

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
        new = check_servables(servables)
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
            ready = servable.is_version_ready or self._is_version_ready or any_directory
            scan = scan_versions(
                name, servable.base_path, servable.version_policy, ready, stream.last_complete, touched,
                quiet_s=self._quiet_s, retry_s=DEBOUNCE_S, clock=self._clock, wall_clock=self._wall_clock,
            )
            items, error, notices = scan.items, scan.error, scan.notices
            if scan.recheck_in_s is not None:
                with self._lock:
                    self._schedule_locked(name, self._clock() + scan.recheck_in_s + _RECHECK_SLACK_S)
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
        if is_read_only(event):
            return
        paths = event_paths(event)
        now = self._clock()
        with self._lock:
            if self._phase is _Phase.STOPPED:
                return
            self._counts["events"] += 1
            for servable in self._servables.values():
                hit, children = affected(servable.base_path, paths, synthetic=event.is_synthetic)
                for child in children:
                    self._touched.setdefault(servable.name, {})[child] = now
                if hit:
                    self._schedule_locked(servable.name, now + DEBOUNCE_S)
            for times in self._touched.values():  # forget events older than the quiet period
                for child in [c for c, at in times.items() if at < now - self._quiet_s]:
                    del times[child]

    def _sync_watches(self) -> None:
        """Watch each base path (or its nearest existing parent). Caller holds _emit_lock."""
        if not self._watcher.active:
            return
        with self._lock:
            bases = [s.base_path for s in self._servables.values()]
        self._watcher.sync(bases)


def _log_notices(stream: _Stream, notices: list[Notice]) -> None:
    """Log each notice when it is new for this servable; repeats go to DEBUG."""
    for level, message in notices:
        _log.log(level if message not in stream.notices else logging.DEBUG, "%s", message)
    stream.notices = {message for _, message in notices}
