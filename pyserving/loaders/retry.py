"""Load retries: how often and how far apart a failing ``Loader.load()`` is tried again.

:func:`load_with_retries` runs ``load`` up to ``1 + max_retries`` times, waiting
``interval_s`` between attempts, and stops early when ``cancelled`` is set (the version
is no longer aspired). The wait is on the event, so cancelling wakes it at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from pyserving.servable.errors import CancelledError, InvalidArgumentError, ServingError, as_serving_error

__all__ = ["RetryPolicy", "load_with_retries"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries``: attempts after the first (default 5, TF Serving's).
    ``interval_s``: seconds between attempts (default 60.0; <= 0 means no wait)."""

    max_retries: int = 5
    interval_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise InvalidArgumentError(f"max_retries must be an int, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be >= 0, got {self.max_retries}")


def load_with_retries(
    load: Callable[[], None],
    policy: RetryPolicy,
    cancelled: threading.Event,
    description: str = "servable",
) -> None:
    """Call ``load`` until it succeeds, the attempts run out, or ``cancelled`` is set.

    Raises the last attempt's error as a ``ServingError`` (chained to the original
    exception), or ``CancelledError`` when cancelled before a successful attempt. Blocks
    the calling thread for the attempts and the waits between them.
    """
    attempts = 1 + policy.max_retries
    last: ServingError | None = None
    for attempt in range(1, attempts + 1):
        if cancelled.is_set():
            raise CancelledError(f"Loading of servable {description} cancelled") from last
        try:
            load()
            return
        except Exception as exc:  # noqa: BLE001 - any loader failure is retried
            last = as_serving_error(exc)
            if attempt == attempts:
                raise last from exc
            _log.warning(
                "Loading %s failed (attempt %d of %d): %s; retrying in %.3g s",
                description, attempt, attempts, last.message, max(policy.interval_s, 0.0),
            )
        if policy.interval_s > 0 and cancelled.wait(policy.interval_s):
            raise CancelledError(f"Loading of servable {description} cancelled") from last
    raise AssertionError("unreachable")
