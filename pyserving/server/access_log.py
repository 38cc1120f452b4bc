""":class:`AccessLog`: one log line per finished request (``--enable_access_log``, off by default).

A :class:`~pyserving.server.request_events.RequestObserver`: every model request that the
gRPC or REST front end answered (success or error) becomes one INFO line of logger
``pyserving.access``, so ``--log_format`` applies to it like to any other line::

    REST predict model=half version=2 status=OK latency_ms=0.84
    GRPC GetModelStatus model=nope version=- status=NOT_FOUND latency_ms=0.05

With ``--log_format=json`` the record's extras are fields: ``event`` ``"request"``,
``entrypoint``, ``api``, ``model``, ``version`` (``null`` when the request did not resolve
to a version), ``status`` (canonical code name) and ``latency_ms`` (float, from arrival at
the front end to the answer being ready). The line's timestamp is when the answer was
ready, not when the line was written. Health, metrics and admin calls are not model
requests and are not logged.

Threading and cost (the observer contract of :mod:`~pyserving.server.request_events`):

* :meth:`AccessLog.observe` runs on the request's thread: a level check, a clock read and
  an append to a bounded queue under a short lock. It never blocks and never raises; when
  the queue (``queue_size`` lines) is full the line is dropped and counted, and the writer
  logs one WARNING saying how many were dropped once it caught up.
* One writer thread (``pyserving-access-log``, a daemon) formats and logs the lines in
  arrival order, so a slow stderr never slows a request.
* :meth:`AccessLog.close` (the server's stop): stops accepting, writes what is queued and
  ends the thread, waiting at most ``timeout_s``. Idempotent.

Testing: ``start_thread=False`` runs without the thread; :meth:`AccessLog.step` then writes
the queued lines on the caller's thread. ``clock`` (seconds since the epoch) is injectable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server.request_events import RequestEvent

__all__ = ["AccessLog", "AccessLogStatistics", "ACCESS_LOGGER", "DEFAULT_QUEUE_SIZE"]

#: The logger every access line goes through.
ACCESS_LOGGER = "pyserving.access"
#: Lines queued at most before new ones are dropped.
DEFAULT_QUEUE_SIZE = 10_000

_Line = tuple[RequestEvent, float]  # the event and when it was observed (epoch seconds)


@dataclass(frozen=True, slots=True)
class AccessLogStatistics:
    """``written``: lines logged; ``dropped``: lines lost to a full queue; ``queued``: waiting."""

    written: int
    dropped: int
    queued: int


class AccessLog:
    """See the module docstring. ``logger``: where lines go (default ``pyserving.access``);
    ``queue_size`` >= 1."""

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        start_thread: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InvalidArgumentError(f"queue_size must be an int >= 1, got {queue_size!r}")
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)
        self._queue_size = queue_size
        self._clock = clock
        self._changed = threading.Condition(threading.Lock())  # guards everything below
        self._queue: deque[_Line] = deque()
        self._closed = False
        self._written = 0
        self._dropped = 0
        self._dropped_unreported = 0
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="pyserving-access-log", daemon=True)
            self._thread.start()

    # -- the request thread ----------------------------------------------------------------

    def observe(self, event: RequestEvent) -> None:
        """Queue ``event``'s line (request thread; never blocks or raises)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        with self._changed:
            if self._closed:
                return
            if len(self._queue) >= self._queue_size:
                self._dropped += 1
                self._dropped_unreported += 1
                return
            self._queue.append((event, self._clock()))
            self._changed.notify()

    # -- the writer --------------------------------------------------------------------------

    def step(self) -> int:
        """Write every queued line on the caller's thread; return how many were written."""
        with self._changed:
            lines = list(self._queue)
            self._queue.clear()
            dropped, self._dropped_unreported = self._dropped_unreported, 0
        for event, at in lines:
            self._write(event, at)
        with self._changed:
            self._written += len(lines)
        if dropped:
            self._logger.warning(
                "Access log: %d lines dropped because more than %d were waiting to be written "
                "(is stderr read fast enough?)", dropped, self._queue_size, extra={"event": "access_log_dropped"},
            )
        return len(lines)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._dropped_unreported and not self._closed:
                    self._changed.wait()
                done = self._closed and not self._queue
            self.step()
            if done:
                return

    def _write(self, event: RequestEvent, at: float) -> None:
        latency_ms = round(event.latency_s * 1000.0, 3)
        version = "-" if event.version is None else event.version
        try:
            record = self._logger.makeRecord(
                self._logger.name, logging.INFO, __file__, 0,
                "%s %s model=%s version=%s status=%s latency_ms=%.2f",
                (event.entrypoint, event.api, event.model, version, event.status, latency_ms), None,
                extra={
                    "event": "request", "entrypoint": event.entrypoint, "api": event.api, "model": event.model,
                    "version": event.version, "status": event.status, "latency_ms": latency_ms,
                },
            )
            record.created = at  # when the answer was ready, not when the line is written
            record.msecs = (at - int(at)) * 1000.0
            self._logger.handle(record)
        except Exception:  # noqa: BLE001 - a bad event must not end the writer
            logging.getLogger(__name__).exception("Could not write an access log line for %r", event)

    # -- life cycle ---------------------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting lines, write the queued ones, end the writer (at most ``timeout_s``)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        thread = self._thread
        if thread is None:
            self.step()
        elif thread is not threading.current_thread():
            thread.join(timeout_s)

    def statistics(self) -> AccessLogStatistics:
        with self._changed:
            return AccessLogStatistics(written=self._written, dropped=self._dropped, queued=len(self._queue))
