"""Scanning one base path: its version directories, their completeness and revisions.

The file-system half of :class:`~pyserving.sources.file_system_source.FileSystemSource`:
:func:`scan_versions` turns one servable's base path into the aspired list the source
sends, and the helpers below it list, judge and fingerprint version directories.

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
    being sent with its last complete revision until it is complete again.
    :func:`scan_versions` says how long until an incomplete version may become complete,
    so the caller can re-check it then instead of waiting for the next poll.

Revision
    ``StoragePath.revision`` is a 16-hex-digit hash of (relative path, size, mtime in ns)
    of every file under the version directory: it changes when any file changes.

Threading and blocking
    Everything here blocks on file-system I/O and runs readiness checks on the calling
    thread. The functions keep no state; the ``last_complete`` dict handed to
    :func:`scan_versions` belongs to one servable, and its owner must not scan that
    servable from two threads at once (the source holds its ``_emit_lock``).

Failures
    :func:`scan_versions` does not raise for a bad version: a version directory that
    cannot be read, or whose readiness check raises, becomes ``ServableData.failed``. A
    base path that cannot be listed is returned as the scan's error
    (:func:`base_path_error`) with no list. Notices are ``(logging level, message)`` pairs
    for the caller to log; nothing here logs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pyserving.servable.data import ServableData
from pyserving.servable.errors import InvalidArgumentError, NotFoundError, ServingError, as_serving_error
from pyserving.servable.ids import ServableId
from pyserving.sources.storage_path import StoragePath
from pyserving.sources.version_policy import ServableVersionPolicy, SpecificVersions

__all__ = [
    "ReadinessCheck",
    "Notice",
    "ScanResult",
    "parse_version_directory_name",
    "any_directory",
    "list_version_dirs",
    "fingerprint",
    "check_complete",
    "base_path_error",
    "scan_versions",
]

ReadinessCheck = Callable[[Path], bool]
Notice = tuple[int, str]  # (logging level, message) for the caller to log

_MAX_VERSION = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan of a base path found.

    ``items`` is the aspired list, or ``None`` when nothing is to be sent: the base path
    cannot be listed (``error`` says why), or it has version folders but none is complete
    yet (``error`` is ``None``; the versions serving now keep serving). ``recheck_in_s`` is how long until an
    incomplete version may become complete, ``None`` when no such wait is known.
    """

    items: list[ServableData[StoragePath]] | None
    error: ServingError | None
    notices: list[Notice]
    recheck_in_s: float | None = None


def parse_version_directory_name(name: str) -> int | None:
    """The version a child name stands for, or ``None`` when the child is not a version."""
    if name.startswith((".", "_")) or name.endswith((".partial", "~")) or ".tmp" in name:
        return None
    if not _DIGITS.fullmatch(name):
        return None
    version = int(name)
    return version if version <= _MAX_VERSION else None


def any_directory(path: Path) -> bool:
    """The default readiness check: every version directory is ready."""
    return True


def list_version_dirs(name: str, base: str, notices: list[Notice]) -> dict[int, str]:
    """``{version: child name}`` of the version directories under ``base``.

    Raises ``OSError`` when ``base`` cannot be listed; appends a warning to ``notices``
    for each version that several names give.
    """
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


def fingerprint(root: str, wall_now: float) -> tuple[str, float]:
    """(revision hash, latest change time) of everything inside ``root``.

    ``wall_now`` is the wall-clock time: modification times after it are ignored in
    favour of the change time. Raises ``OSError`` (``FileNotFoundError`` when something
    vanished while it was read).
    """
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


def check_complete(
    path: str,
    ready: ReadinessCheck,
    touched_at: float | None,
    *,
    quiet_s: float,
    retry_s: float,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> tuple[StoragePath | None, float | None]:
    """``(StoragePath, None)`` when the version at ``path`` is complete, else ``(None,
    seconds until it may be)``; the wait is ``None`` when unknown (readiness check fails).

    ``touched_at`` is the ``clock`` time of the last file-system event inside the version;
    ``retry_s`` is the shortest wait when files vanish while they are read. Raises what
    ``ready`` raises and ``OSError`` other than ``FileNotFoundError``.
    """
    if not ready(Path(path)):
        return None, None
    try:
        revision, newest = fingerprint(path, wall_clock())
    except FileNotFoundError:  # something vanished while we looked: it is moving
        return None, max(quiet_s, retry_s)
    wait_s = 0.0
    if quiet_s > 0:
        wait_s = newest + quiet_s - wall_clock()
        if touched_at is not None:
            wait_s = max(wait_s, touched_at + quiet_s - clock())
    if wait_s > 0:
        return None, wait_s
    return StoragePath(path, revision), None


def base_path_error(name: str, base: str, exc: OSError) -> ServingError:
    """The servable's error for a base path that cannot be listed."""
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"Could not find base path {base} for servable {name}")
    if isinstance(exc, NotADirectoryError):
        return InvalidArgumentError(f"Base path {base} for servable {name} is not a directory")
    return as_serving_error(exc, f"Cannot list base path {base} for servable {name}: ")


def scan_versions(
    name: str,
    base: str,
    policy: ServableVersionPolicy,
    ready: ReadinessCheck,
    last_complete: dict[int, StoragePath],
    touched: dict[str, float],
    *,
    quiet_s: float,
    retry_s: float,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> ScanResult:
    """One servable's aspired list, chosen by ``policy`` among its complete versions.

    ``last_complete`` (version -> last complete ``StoragePath``) is read and updated in
    place; ``touched`` maps a version child name to its last event time (``clock``).
    """
    notices: list[Notice] = []
    try:
        children = list_version_dirs(name, base, notices)
    except OSError as exc:
        error = base_path_error(name, base, exc)
        notices.append((logging.ERROR, f"{error.message}. Its loaded versions keep serving; the path is "
                        "checked again at the next poll or file change."))
        return ScanResult(None, error, notices)
    if not children:
        last_complete.clear()
        notices.append((logging.WARNING, f"No versions of servable {name} found under base path {base}. "
                        "Did you forget to name your leaf directory as a number (eg. '/1/')?"))
        return ScanResult([], None, notices)
    candidates: dict[int, ServableData[StoragePath]] = {}
    recheck_in: float | None = None
    for version, child in children.items():
        sid, path = ServableId(name, version), os.path.join(base, child)
        try:
            storage, wait_s = check_complete(path, ready, touched.get(child), quiet_s=quiet_s,
                                             retry_s=retry_s, clock=clock, wall_clock=wall_clock)
        except Exception as exc:  # noqa: BLE001 - becomes this version's error
            candidates[version] = ServableData.failed(
                sid, as_serving_error(exc, f"Cannot read version directory {path} of servable {name}: "))
            continue
        if storage is not None:
            last_complete[version] = storage
        elif wait_s is None:
            notices.append((logging.INFO, f"Version directory {path} of servable {name} is not ready: its "
                            "platform's files (saved_model.pb for TensorFlow, model.py for Python) are "
                            "missing; it is loaded once they are there."))
        storage = storage or last_complete.get(version)
        if storage is not None:
            candidates[version] = ServableData.of(sid, storage)
        if wait_s is not None:
            recheck_in = wait_s if recheck_in is None else min(recheck_in, wait_s)
    for version in [v for v in last_complete if v not in children]:
        del last_complete[version]
    if isinstance(policy, SpecificVersions):
        for version in policy.missing(list(children)):
            notices.append((logging.WARNING, f"Version {version} of servable {name}, requested by its "
                            f"specific version policy, is not under base path {base}"))
    if not candidates:
        # Version folders exist but none is complete yet (still being written, or not ready):
        # send nothing, so what is serving keeps serving until a replacement is complete. Only a
        # base path without any version folder means "unload everything".
        return ScanResult(None, None, notices, recheck_in)
    return ScanResult([candidates[v] for v in policy.select(sorted(candidates))], None, notices, recheck_in)
