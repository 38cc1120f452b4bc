"""Reading and atomically replacing the server's text config files.

One implementation for every config file the server reads or writes back (model config,
routing config, monitoring config, SSL config): pure functions, safe from any thread.

* :func:`read_config_text` returns a file's text; a file that cannot be read raises
  :func:`as_serving_error`'s error (NOT_FOUND when missing) and text that is not UTF-8
  raises INVALID_ARGUMENT, both naming the kind of file and its path.
* :func:`parse_text_config` parses protobuf text format; errors name the file, line and column.
* :func:`atomic_write_text` replaces a file so that a reader (a config poll) sees the old
  or the new content, never a mix: the text goes to a temporary file in the same folder
  (created exclusively), is flushed and fsynced, gets the old file's permission bits (0666
  minus the umask for a new file), and is renamed over the target; the folder is fsynced
  after the rename. Through a symbolic link, the file it points to is replaced. On failure
  the old file is unchanged, the temporary file is removed, and a ServingError naming the
  path is raised.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, TypeVar

from pyserving.servable.errors import InvalidArgumentError, as_serving_error

__all__ = ["read_config_text", "parse_text_config", "atomic_write_text"]

_M = TypeVar("_M")


def read_config_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of the ``what`` file (e.g. "routing config") at ``path``."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise as_serving_error(exc, f"Cannot read {what} file {source}: ") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"Cannot parse {what} {source}: not UTF-8 text ({exc})") from exc


def parse_text_config(text: str, message: _M, what: str, source: str) -> _M:
    """Parse protobuf text format into ``message`` (returned); a syntax error or an unknown
    field raises INVALID_ARGUMENT ``Cannot parse <what> <source> line L column C: ...``."""
    from google.protobuf import text_format

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise InvalidArgumentError(f"Cannot parse {what} {source}{_where(exc)}") from exc
    return message


def _where(exc: Any) -> str:
    """`` line L column C: message`` of a ``text_format.ParseError`` (its own ``L:C : `` prefix removed)."""
    text = str(exc)
    line, column = exc.GetLine(), exc.GetColumn()
    if line is None:
        return f": {text}"
    prefix = f"{line}:{column} : " if column is not None else f"{line} : "
    detail = text[len(prefix):] if text.startswith(prefix) else text
    where = f" line {line}" + (f" column {column}" if column is not None else "")
    return f"{where}: {detail}"


def atomic_write_text(path: str | os.PathLike[str], text: str, what: str = "file") -> None:
    """Replace the file at ``path`` with ``text`` atomically (see the module docstring)."""
    target = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(target)
    temp_path = ""
    try:
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, temp_path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temp_path, target)
        temp_path = ""
        _fsync_folder(folder)
    except OSError as exc:
        raise as_serving_error(exc, f"Failed to write {what} {os.fspath(path)}: ") from exc
    finally:
        if temp_path:
            try:
                os.unlink(temp_path)
            except OSError:
                pass


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (best effort: some file systems refuse to open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
