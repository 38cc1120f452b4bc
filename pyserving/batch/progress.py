"""Progress of a batch job: a tqdm bar on a terminal, periodic log lines otherwise.

:class:`Progress` is fed by one thread (the pipeline's compute thread) through
:meth:`Progress.update`; :meth:`Progress.close` is called once by the thread that runs the
job, after the feeding thread stopped. The bar shows rows, rows/s and the ETA (when the
input's row count is known); the log lines (logger ``pyserving.batch``, INFO, every
``interval_s`` seconds and at the end) say the same in words.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

__all__ = ["Progress"]

_log = logging.getLogger("pyserving.batch")


class Progress:
    def __init__(self, total: int | None, initial: int, *, bar: bool | None = None, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.bad = total, initial, 0
        self._initial = initial
        self._clock = clock
        self._started = clock()
        self._interval_s = interval_s
        self._next_log = self._started + interval_s
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit=" rows", unit_scale=True, dynamic_ncols=True,
                             smoothing=0.1, file=sys.stderr)

    def update(self, rows: int, bad: int = 0) -> None:
        self.done += rows
        self.bad += bad
        if self._bar is not None:
            self._bar.update(rows)
            if bad:
                self._bar.set_postfix(bad=self.bad, refresh=False)
        elif self._clock() >= self._next_log:
            self._next_log = self._clock() + self._interval_s
            _log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = (self.done - self._initial) / elapsed
        text = f"{self.done:,}"
        if self.total:
            text += f" of {self.total:,} rows ({100.0 * self.done / self.total:.1f} %)"
            if rate > 0:
                text += f", {rate:,.0f} rows/s, ETA {_duration((self.total - self.done) / rate)}"
        else:
            text += f" rows, {rate:,.0f} rows/s"
        if self.bad:
            text += f"; {self.bad:,} bad rows"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
