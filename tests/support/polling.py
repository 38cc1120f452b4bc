"""Bounded waits for tests: poll a condition until it holds or a deadline passes.

Polling with a short interval under a deadline is how the tests wait for something they
cannot be notified of (another process's state, a server answering); it is never used as
synchronisation by sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

__all__ = ["poll_until", "wait_for"]


def poll_until(predicate: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.001) -> bool:
    """True once ``predicate()`` is true; False when ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(interval_s)
    return True


def wait_for(
    condition: Callable[[], Any],
    what: str,
    timeout_s: float,
    interval_s: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """``condition()``'s first truthy result; fails the test naming ``what`` on timeout.

    Exceptions of the ``tolerate`` types (a server not answering yet) count as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except tolerate as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)  # polling interval of a bounded wait, not synchronisation
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}; last result: {last!r}")
