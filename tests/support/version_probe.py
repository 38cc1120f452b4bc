"""A probe that asks for one *specific* version until that version is gone.

:class:`SpecificVersionProbe` runs one thread. After :meth:`~SpecificVersionProbe.pin`, it
sends ``Specific(model, v)`` predicts back to back, alternating gRPC and REST, and counts
the answers (each must come from ``v``). At the first NOT_FOUND it reads the REST model
status at once and records it with the message, then waits for the next pin. A version
leaves the served set when it starts UNLOADING and never comes back, so the status read
*after* the NOT_FOUND must show ``v`` UNLOADING or END: had it still been AVAILABLE, the
NOT_FOUND came too early.

Bounded: the thread stops on :meth:`~SpecificVersionProbe.stop` or after
``max_duration_s``; waits take timeouts and raise ``AssertionError`` when they run out.
``_lock`` (a Condition) guards the pin and the records and is notified on every change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tests.support.traffic import GRPC, REST, Caller, default_version_of, describe_error, is_not_found, rest_status

__all__ = ["ProbeRecord", "SpecificVersionProbe"]


@dataclass
class ProbeRecord:
    """What the probe saw of one pinned version."""

    version: int
    answers: int = 0
    not_found: str | None = None  # the NOT_FOUND message that ended it
    status_after: dict[int, tuple[str, str]] = field(default_factory=dict)  # read right after NOT_FOUND
    failures: list[str] = field(default_factory=list)  # anything else that went wrong


class SpecificVersionProbe:
    """Asks for ``Specific(model, v)`` of the pinned ``v`` until NOT_FOUND (see module docs).

    :meth:`pin` starts probing a version; the thread then sends requests back to back,
    alternating gRPC and REST, until that version answers NOT_FOUND, reads the REST
    status at once, and waits for the next pin. Stops on :meth:`stop` or after
    ``max_duration_s``.
    """

    def __init__(self, model: str, grpc_port: int, rest_port: int, *, x: float = 1.0,
                 version_of: Callable[[float], int] = default_version_of, max_duration_s: float = 120.0) -> None:
        self.model = model
        self._ports, self._x, self._version_of = (grpc_port, rest_port), x, version_of
        self._max_duration_s = max_duration_s
        self._lock = threading.Condition()  # guards _pinned and records; notified on every change
        self._pinned: int | None = None
        self.records: dict[int, ProbeRecord] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"probe-{model}")

    def start(self) -> SpecificVersionProbe:
        self._thread.start()
        return self

    def pin(self, version: int, answered_within_s: float = 30.0) -> None:
        """Probe ``version`` from now on; returns once it answered (AssertionError if not)."""
        with self._lock:
            self._pinned = version
            self.records.setdefault(version, ProbeRecord(version))
            self._lock.notify_all()
            if not self._lock.wait_for(lambda: self.records[version].answers > 0 or self.records[version].not_found
                                       or self.records[version].failures, answered_within_s):
                raise AssertionError(f"the probe got no answer from version {version} in {answered_within_s} s")
            record = self.records[version]
            if record.answers == 0:
                raise AssertionError(f"version {version} never answered the probe: {record}")

    def wait_gone(self, version: int, timeout_s: float) -> ProbeRecord:
        """The record of ``version`` once it answered NOT_FOUND (AssertionError on timeout)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.records[version].not_found is not None, timeout_s):
                raise AssertionError(f"version {version} still answered the probe after {timeout_s} s: "
                                     f"{self.records[version]}")
            return self.records[version]

    def _run(self) -> None:
        grpc_caller: dict[int, Caller] = {}
        deadline = time.monotonic() + self._max_duration_s
        turn = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    version = self._pinned
                    if version is None or self.records[version].not_found is not None:
                        self._lock.wait(0.05)
                        continue
                turn += 1
                if turn % 2 == 0:
                    caller = grpc_caller.get(version)
                    if caller is None:
                        caller = grpc_caller[version] = Caller(GRPC, self.model, *self._ports, self._x, version)
                else:  # REST: a fresh connection each time (the probe idles between pins)
                    caller = Caller(REST, self.model, *self._ports, self._x, version)
                self._ask(caller, version)
                if caller.transport == REST:
                    caller.close()
        finally:
            for caller in grpc_caller.values():
                caller.close()

    def _ask(self, caller: Caller, version: int) -> None:
        try:
            y, named = caller()
        except Exception as exc:  # noqa: BLE001 - recorded
            message = describe_error(exc)
            status = {}
            if is_not_found(exc):
                try:
                    status = rest_status(self._ports[1], self.model)
                except Exception as status_exc:  # noqa: BLE001
                    message += f" (and reading the status failed: {describe_error(status_exc)})"
            with self._lock:
                record = self.records[version]
                if is_not_found(exc):
                    record.not_found, record.status_after = message, status
                else:
                    record.failures.append(f"{caller.transport}: {message}")
                self._lock.notify_all()
            return
        with self._lock:
            record = self.records[version]
            got = self._version_of(y)
            if got != version or (named is not None and named != version):
                record.failures.append(f"{caller.transport}: asked for version {version}, answered by {got} "
                                       f"(response names {named})")
            else:
                record.answers += 1
            self._lock.notify_all()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"probe thread still running {timeout_s} s after stop")
