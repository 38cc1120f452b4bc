""":class:`LoaderHarness`: one managed version — its loader, its internal state, its handles.

Internal states (finer than the published :class:`~pyserving.servable.state.ManagerState`)::

    NEW -> LOAD_REQUESTED -> LOAD_APPROVED -> LOADING -> READY
        -> UNLOAD_REQUESTED -> QUIESCING -> QUIESCED -> UNLOADING -> DISABLED
    any state except DISABLED -> ERROR   (ERROR and DISABLED are final)

* ``LOAD_APPROVED``: resources are reserved; ``LOADING``: ``Loader.load()`` (with retries)
  runs or has just succeeded; ``READY``: in the serving map and handed out.
* ``QUIESCING``: no new handles are given out; the unload waits until every handle of the
  version is released; ``QUIESCED``: none is held any more.
* A move that the table above does not allow raises ``InternalError`` (a manager bug).

Threading and ownership:

* The manager owns the harness and the loader. ``load()`` and ``unload()`` run on a
  manager worker thread, never concurrently with each other; the harness never calls
  loader code while it holds its lock.
* ``_lock`` guards ``_state``, ``_error``, ``_refs``, ``_accepting`` and ``_servable``.
  It is held only for a few bytecodes, so :meth:`try_acquire` (the request path) costs one
  lock round trip and an increment. Reading :attr:`state` takes no lock (an atomic
  attribute read); the value may be stale by the time the caller acts on it.
* ``is_aspired`` is bookkeeping of :class:`~pyserving.manager.aspired_versions_manager.AspiredVersionsManager`
  (read and written only under its step lock); a plain ``BasicManager`` ignores it.
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import Any

from pyserving.loaders.loader import Loader
from pyserving.loaders.retry import RetryPolicy, load_with_retries
from pyserving.servable.errors import (
    CancelledError,
    FailedPreconditionError,
    InternalError,
    ServingError,
    as_serving_error,
)
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId

__all__ = ["HarnessState", "LoaderHarness", "HARNESS_TRANSITIONS", "IN_FLIGHT_STATES"]

_log = logging.getLogger(__name__)


class HarnessState(enum.Enum):
    NEW = "new"
    LOAD_REQUESTED = "load requested"
    LOAD_APPROVED = "load approved"
    LOADING = "loading"
    READY = "ready"
    UNLOAD_REQUESTED = "unload requested"
    QUIESCING = "quiescing"
    QUIESCED = "quiesced"
    UNLOADING = "unloading"
    DISABLED = "disabled"
    ERROR = "error"


_S = HarnessState

#: Legal moves of the happy path; ERROR is reachable from every non-final state.
HARNESS_TRANSITIONS: dict[HarnessState, frozenset[HarnessState]] = {
    _S.NEW: frozenset({_S.LOAD_REQUESTED}),
    _S.LOAD_REQUESTED: frozenset({_S.LOAD_APPROVED}),
    _S.LOAD_APPROVED: frozenset({_S.LOADING}),
    _S.LOADING: frozenset({_S.READY}),
    _S.READY: frozenset({_S.UNLOAD_REQUESTED}),
    _S.UNLOAD_REQUESTED: frozenset({_S.QUIESCING}),
    _S.QUIESCING: frozenset({_S.QUIESCED}),
    _S.QUIESCED: frozenset({_S.UNLOADING}),
    _S.UNLOADING: frozenset({_S.DISABLED}),
    _S.DISABLED: frozenset(),
    _S.ERROR: frozenset(),
}

#: States in which a load or unload of the version is under way.
IN_FLIGHT_STATES: frozenset[HarnessState] = frozenset(
    {
        _S.LOAD_REQUESTED,
        _S.LOAD_APPROVED,
        _S.LOADING,
        _S.UNLOAD_REQUESTED,
        _S.QUIESCING,
        _S.QUIESCED,
        _S.UNLOADING,
    }
)


class LoaderHarness:
    """Drives one loader through the state machine above and counts its handles."""

    def __init__(self, servable_id: ServableId, loader: Loader | None, error: ServingError | None = None) -> None:
        if (loader is None) == (error is None):
            raise InternalError(f"a harness for {servable_id} needs exactly one of a loader or an error")
        self.id = servable_id
        self.loader = loader
        #: the loader's content token, read once here (loader code never runs under a lock)
        self.revision: str | None = _read_revision(loader) if loader is not None else None
        self.is_aspired = True
        self._lock = threading.RLock()  # guards _state, _error, _refs, _accepting, _servable
        self._released = threading.Condition(self._lock)  # notified when _refs drops to 0 while quiescing
        self._state = HarnessState.NEW if error is None else HarnessState.ERROR
        self._error = error
        self._refs = 0
        self._accepting = False
        self._servable: Any = None
        self._cancel = threading.Event()  # set when the load (and its retries) should stop

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> HarnessState:
        return self._state

    @property
    def error(self) -> ServingError | None:
        """The error that sent the harness to ERROR, else ``None``."""
        return self._error

    @property
    def refcount(self) -> int:
        """Handles of this version that are currently held."""
        with self._lock:
            return self._refs

    def _move(self, expected: HarnessState, target: HarnessState) -> None:
        """Caller holds ``_lock``."""
        if self._state is not expected or target not in HARNESS_TRANSITIONS[expected]:
            raise InternalError(
                f"Illegal transition of servable {self.id} from {self._state.name} to {target.name} "
                f"(expected {expected.name})"
            )
        self._state = target

    def request_load(self) -> None:
        """NEW -> LOAD_REQUESTED; a second request raises ``FailedPreconditionError``."""
        with self._lock:
            if self._state is not HarnessState.NEW:
                raise FailedPreconditionError(
                    f"Duplicate load request: servable {self.id} is {self._state.name}; only a NEW servable can be loaded"
                )
            self._state = HarnessState.LOAD_REQUESTED

    def approve_load(self) -> None:
        """LOAD_REQUESTED -> LOAD_APPROVED (resources are reserved)."""
        with self._lock:
            self._move(HarnessState.LOAD_REQUESTED, HarnessState.LOAD_APPROVED)

    def request_unload(self) -> None:
        """READY -> UNLOAD_REQUESTED; otherwise raises ``FailedPreconditionError``."""
        with self._lock:
            if self._state is not HarnessState.READY:
                raise FailedPreconditionError(
                    f"Servable not loaded, or unload already requested/ongoing: {self.id} is {self._state.name}"
                )
            self._state = HarnessState.UNLOAD_REQUESTED

    def fail(self, error: ServingError) -> None:
        """Any non-final state -> ERROR with ``error``; a harness already in ERROR keeps its first error."""
        with self._lock:
            if self._state is HarnessState.ERROR:
                return
            if self._state is HarnessState.DISABLED:
                raise InternalError(f"servable {self.id} is DISABLED and cannot fail: {error.message}")
            self._state = HarnessState.ERROR
            self._error = error
            self._accepting = False
            self._servable = None

    # -- load / unload (manager worker threads; no lock held around loader code) ----------

    def cancel_load(self) -> None:
        """Stop the load's retries (and discard a load that completes afterwards). Idempotent."""
        self._cancel.set()

    @property
    def load_cancelled(self) -> bool:
        return self._cancel.is_set()

    def load(self, retry: RetryPolicy) -> None:
        """LOAD_APPROVED -> LOADING, then ``Loader.load()`` with retries.

        On success the version stays LOADING but already accepts handles (the manager puts
        it into the serving map, then calls :meth:`mark_ready`). On failure the harness is
        in ERROR and the error is raised: the loader's error prefixed with
        "Loading servable {id} failed: ", or ``CancelledError`` "Loading of servable {id}
        cancelled" when :meth:`cancel_load` was called — a load that succeeds after the
        cancellation is unloaded at once.
        """
        assert self.loader is not None
        with self._lock:
            self._move(HarnessState.LOAD_APPROVED, HarnessState.LOADING)
        try:
            load_with_retries(self.loader.load, retry, self._cancel, str(self.id))
        except ServingError as err:
            if not (self._cancel.is_set() and isinstance(err, CancelledError)):
                err = _with_context(err, f"Loading servable {self.id} failed: ")
            self.fail(err)
            raise err
        if self._cancel.is_set():
            try:
                self.loader.unload()
            except Exception:  # noqa: BLE001 - the version is discarded either way
                _log.exception("Unloading servable %s after its load was cancelled failed", self.id)
            err = CancelledError(f"Loading of servable {self.id} cancelled")
            self.fail(err)
            raise err
        servable = self.loader.servable
        with self._lock:
            self._servable = servable
            self._accepting = True

    def mark_ready(self) -> None:
        """LOADING -> READY, once the version is in the serving map."""
        with self._lock:
            self._move(HarnessState.LOADING, HarnessState.READY)

    def quiesce(self) -> None:
        """UNLOAD_REQUESTED -> QUIESCING -> QUIESCED: stop handing out handles, then block
        until every handle of this version has been released."""
        with self._released:
            self._move(HarnessState.UNLOAD_REQUESTED, HarnessState.QUIESCING)
            self._accepting = False
            while self._refs > 0:
                self._released.wait()
            self._move(HarnessState.QUIESCING, HarnessState.QUIESCED)
            self._servable = None

    def unload(self) -> None:
        """QUIESCED -> UNLOADING -> DISABLED around ``Loader.unload()``.

        If the loader raises, the harness goes to ERROR and the error ("Unloading servable
        {id} failed: ...") is raised.
        """
        assert self.loader is not None
        with self._lock:
            self._move(HarnessState.QUIESCED, HarnessState.UNLOADING)
        try:
            self.loader.unload()
        except Exception as exc:  # noqa: BLE001 - reported as the version's END health
            err = as_serving_error(exc, f"Unloading servable {self.id} failed: ")
            self.fail(err)
            raise err from exc
        with self._lock:
            self._move(HarnessState.UNLOADING, HarnessState.DISABLED)

    # -- handles (request path) ----------------------------------------------------------

    def try_acquire(self) -> ServableHandle[Any] | None:
        """A handle on the loaded servable, or ``None`` once the version quiesces."""
        with self._lock:
            if not self._accepting:
                return None
            self._refs += 1
            servable = self._servable
        return ServableHandle(self.id, servable, self._release)

    def _release(self) -> None:
        with self._lock:
            self._refs -= 1
            if self._refs == 0 and not self._accepting:
                self._released.notify_all()

    def __repr__(self) -> str:
        return f"LoaderHarness({self.id}, {self._state.name}, refs={self._refs})"


def _read_revision(loader: Loader) -> str | None:
    try:
        return loader.revision
    except Exception:  # noqa: BLE001 - an unreadable token means "unknown"
        _log.exception("Reading the revision of a loader failed; treating it as unknown")
        return None


def _with_context(err: ServingError, context: str) -> ServingError:
    wrapped = as_serving_error(err, context)
    wrapped.__cause__ = err
    return wrapped
