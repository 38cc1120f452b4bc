"""Test helpers for pyserving and for users' own tests: :class:`FakeLoader`, :class:`FakeSource`.

Both are real implementations of the public interfaces, with knobs for the situations a
test needs (a load that fails, a slow load, counting live instances); no mocks.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

from pyserving.loaders.loader import Loader, Resources
from pyserving.servable.data import ServableData
from pyserving.servable.errors import FailedPreconditionError, InternalError, ServingError
from pyserving.servable.ids import ServableId
from pyserving.sources.source import AspiredVersionsCallback, Source

__all__ = ["FakeLoader", "FakeSource", "FakeServable"]


class FakeServable:
    """What a :class:`FakeLoader` serves: remembers its id and whether it was unloaded."""

    def __init__(self, servable_id: ServableId | None, payload: Any) -> None:
        self.id = servable_id
        self.payload = payload
        self.unloaded = False

    def __repr__(self) -> str:
        return f"FakeServable({self.id}, unloaded={self.unloaded})"


class FakeLoader(Loader):
    """A loader whose behaviour a test sets.

    * ``fail_times``: the first N ``load()`` calls raise ``load_error`` (default: every call
      fails when ``fail_times`` is ``-1``).
    * ``load_delay_s``: ``load()`` sleeps this long — or, when ``gate`` is given, blocks
      until the test sets it (bounded by ``gate_timeout_s``).
    * ``ram_bytes``: what :meth:`estimate_resources` reports.
    * Class-wide counters: :meth:`live_count` is the number of FakeLoaders loaded and
      not yet unloaded; ``load_calls`` / ``unload_calls`` count per instance.

    ``unload()`` on a loader that is not loaded raises ``FailedPreconditionError``, so a
    double unload fails the test loudly.
    """

    _live_lock = threading.Lock()  # guards _live
    _live = 0

    def __init__(
        self,
        servable_id: ServableId | None = None,
        *,
        payload: Any = None,
        fail_times: int = 0,
        load_error: ServingError | None = None,
        load_delay_s: float = 0.0,
        gate: threading.Event | None = None,
        gate_timeout_s: float = 30.0,
        ram_bytes: int = 0,
        revision: str | None = None,
    ) -> None:
        self.servable_id = servable_id
        self.payload = payload
        self.fail_times = fail_times
        self.load_error = load_error or InternalError(f"FakeLoader for {servable_id} was told to fail")
        self.load_delay_s = load_delay_s
        self.gate = gate
        self.gate_timeout_s = gate_timeout_s
        self.ram_bytes = ram_bytes
        self._revision = revision
        self._lock = threading.Lock()  # guards the counters and _servable
        self.load_calls = 0
        self.unload_calls = 0
        self._servable: FakeServable | None = None

    @classmethod
    def live_count(cls) -> int:
        with cls._live_lock:
            return cls._live

    @classmethod
    def reset_live_count(cls) -> None:
        with cls._live_lock:
            cls._live = 0

    @property
    def revision(self) -> str | None:
        return self._revision

    def estimate_resources(self) -> Resources:
        return Resources(ram_bytes=self.ram_bytes)

    def load(self) -> None:
        with self._lock:
            self.load_calls += 1
            attempt = self.load_calls
        if self.gate is not None:
            if not self.gate.wait(self.gate_timeout_s):
                raise InternalError(f"FakeLoader for {self.servable_id}: gate never opened")
        elif self.load_delay_s > 0:
            threading.Event().wait(self.load_delay_s)
        if self.fail_times < 0 or attempt <= self.fail_times:
            raise self.load_error
        with self._lock:
            if self._servable is not None:
                raise FailedPreconditionError(f"FakeLoader for {self.servable_id} loaded twice")
            self._servable = FakeServable(self.servable_id, self.payload)
        with FakeLoader._live_lock:
            FakeLoader._live += 1

    def unload(self) -> None:
        with self._lock:
            self.unload_calls += 1
            servable, self._servable = self._servable, None
        if servable is None:
            raise FailedPreconditionError(f"FakeLoader for {self.servable_id} unloaded while not loaded")
        servable.unloaded = True
        with FakeLoader._live_lock:
            FakeLoader._live -= 1

    @property
    def servable(self) -> FakeServable | None:
        return self._servable

    @property
    def loaded(self) -> bool:
        return self._servable is not None


class FakeSource(Source[Any]):
    """A source a test drives by hand: :meth:`set_aspired_versions` sends a list now."""

    def __init__(self) -> None:
        self._callback: AspiredVersionsCallback[Any] | None = None

    def set_aspired_versions_callback(self, callback: AspiredVersionsCallback[Any]) -> None:
        if self._callback is not None:
            raise FailedPreconditionError("FakeSource already has an aspired-versions callback")
        self._callback = callback

    def set_aspired_versions(self, servable_name: str, versions: Sequence[ServableData[Any]]) -> None:
        """Send the complete aspired list of ``servable_name`` to the target."""
        if self._callback is None:
            raise FailedPreconditionError("FakeSource is not connected to a target")
        self._callback(servable_name, list(versions))

    def aspire(self, servable_name: str, values: dict[int, Any]) -> None:
        """Shorthand: aspire ``{version: value}`` for ``servable_name``."""
        self.set_aspired_versions(
            servable_name,
            [ServableData.of(ServableId(servable_name, v), value) for v, value in sorted(values.items())],
        )
