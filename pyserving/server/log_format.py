"""How the server's log lines look: readable text (default) or one JSON object per line.

``--log_format=text`` (default)::

    2024-05-01 12:00:00,123 I pyserving.manager.lifecycle_log] {name: m version: 3} LOADING

``--log_format=json`` (:class:`JsonFormatter`), one object per line, keys in this order::

    {"timestamp": "2024-05-01T12:00:00.123Z", "level": "INFO",
     "logger": "pyserving.manager.lifecycle_log", "event": "version_loading",
     "message": "{name: m version: 3} LOADING", "model": "m", "version": 3}

* ``timestamp``: ISO-8601, UTC, milliseconds, ``Z`` suffix (the record's creation time).
* ``level``: ``DEBUG`` ``INFO`` ``WARNING`` ``ERROR`` ``CRITICAL``; ``logger``: its name.
* ``event``: a short machine name: the record's ``event`` extra when it has one
  (``logger.info(..., extra={"event": "version_available"})``), else the message itself.
* ``message``: the formatted message, exactly the text format's message.
* Then, when the record carries them as extras, the fields of :data:`EXTRA_FIELDS` in that
  order (``model``, ``version`` of per-version lines; the access log's ``entrypoint``,
  ``api``, ``status``, ``latency_ms``). Other extras are left out, so the schema is fixed.
* ``traceback``: the formatted exception when the record has ``exc_info``;
  ``stack``: the stack when it has ``stack_info``.

Values that JSON cannot hold are written as ``str(value)``; every line is valid JSON and
holds no newline (newlines inside strings are escaped).

:func:`configure_logging` installs one stderr handler on the root logger with either
format; :class:`HeldRecords` keeps the records logged before it is called (the flag parser
logs its warning before ``--log_format`` is known) and hands them to it, so they come out
in the chosen format too.

Threading: formatters and handlers are the standard library's (thread-safe). Call
:func:`configure_logging` at startup, before other threads log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

import orjson

from pyserving.servable.errors import InvalidArgumentError

__all__ = ["JsonFormatter", "TEXT_FORMAT", "LOG_FORMATS", "LOG_LEVELS", "EXTRA_FIELDS", "configure_logging",
           "HeldRecords"]

#: The text format (the server's format since the beginning).
TEXT_FORMAT = "%(asctime)s %(levelname).1s %(name)s] %(message)s"
#: Values of ``--log_format``.
LOG_FORMATS = ("text", "json")
#: Level names :func:`configure_logging` accepts (case-insensitive).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Record extras written as JSON fields, in this order, when a record has them.
EXTRA_FIELDS = ("model", "version", "entrypoint", "api", "status", "latency_ms")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring). ``extra_fields``:
    the extras written when present (default :data:`EXTRA_FIELDS`)."""

    def __init__(self, extra_fields: Iterable[str] = EXTRA_FIELDS) -> None:
        super().__init__()
        self._extra_fields = tuple(extra_fields)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event = getattr(record, "event", None)
        fields: dict[str, Any] = {
            "timestamp": _utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": event if isinstance(event, str) and event else message,
            "message": message,
        }
        attributes = record.__dict__
        for name in self._extra_fields:
            if name in attributes:
                fields[name] = attributes[name]
        if record.exc_info:
            if not record.exc_text:  # cached on the record, as logging.Formatter does
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields["traceback"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(fields, default=str).decode()
        except TypeError:  # e.g. an int beyond 64 bits: every value as text instead
            return orjson.dumps({key: str(value) for key, value in fields.items()}).decode()


def _utc_timestamp(record: logging.LogRecord) -> str:
    # record.msecs is the creation time's milliseconds (never rounded up to 1000).
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class HeldRecords(logging.Handler):
    """Keeps the records logged while it is installed (a ``with`` block) on the root logger.

    For the records logged before logging is configured: pass it to
    :func:`configure_logging` (``held=``), which hands them to the new handler in order.
    Records below the root logger's level are not seen, as with any handler.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "HeldRecords":
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)

    def __iter__(self) -> Iterator[logging.LogRecord]:
        return iter(self.records)


class _ServerHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (replaced when it is called again)."""


def configure_logging(log_format: str, level: str, *, held: Iterable[logging.LogRecord] = ()) -> None:
    """Log to stderr in ``log_format`` (``"text"`` or ``"json"``) from ``level`` (a name of
    :data:`LOG_LEVELS`, any case) up; then hand ``held`` records to the new handler.

    Raises :class:`InvalidArgumentError` naming a bad format or level. Calling it again
    replaces the handler it installed. When the root logger already has handlers of
    someone else (a program embedding the server configured logging itself), nothing is
    changed and ``held`` records go to those handlers, like ``logging.basicConfig``.
    With ``json``, Python warnings (``warnings.warn``) are logged too (logger
    ``py.warnings``), so stderr stays one JSON object per line.
    """
    if log_format not in LOG_FORMATS:
        raise InvalidArgumentError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    name = str(level).strip().upper()
    if name not in LOG_LEVELS:
        raise InvalidArgumentError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    root = logging.getLogger()
    if isinstance(held, logging.Handler):
        root.removeHandler(held)  # still installed: it would keep what is handed on below
    ours = [h for h in root.handlers if isinstance(h, _ServerHandler)]
    foreign = [h for h in root.handlers if not isinstance(h, (_ServerHandler, HeldRecords))]
    if not foreign:
        for handler in ours:
            root.removeHandler(handler)
        handler = _ServerHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(name)
        logging.captureWarnings(log_format == "json")
    for record in list(held):
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
