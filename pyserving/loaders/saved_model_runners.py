"""How a SavedModel runs: :class:`SavedModelOptions` and the two execution backends.

Implementation module of :mod:`pyserving.loaders.saved_model` (import the public names
from there). :func:`open_backend` opens one of:

* :class:`SessionBackend` (preferred): the MetaGraph is imported into a fresh ``tf.Graph``
  with the TF1 loader, variables are restored and init ops run in a
  ``tf.compat.v1.Session``, and :meth:`~Backend.make` compiles a session callable per
  (signature, outputs) (TF's ``Session._make_callable_from_options``, the public
  ``make_callable`` where absent). This works for TF1-graph SavedModels and for TF2 ones
  (their MetaGraph carries signature defs, a saver and ``__saved_model_init_op``),
  including resource and string variables and asset-backed tables, and is several times
  faster per call than the function path.
* :class:`FunctionBackend` (fallback): ``tf.saved_model.load`` and
  ``loaded.signatures[name]``; used when the session import fails or a signature has
  composite (sparse / ragged) tensors.

A callable from :meth:`Backend.make` takes the feeds in the plan's feed order, returns
one value per requested alias, does no input checking (the caller validated the feeds)
and raises ``tf.errors.OpError`` for runtime failures; it is safe to call from many
threads at once until :meth:`Backend.close`.

Threads: ``intra_op_parallelism`` / ``inter_op_parallelism`` (0 = TensorFlow decides) go
into the session ``ConfigProto``; TensorFlow sizes its CPU pools once per process from the
first session it creates, so in practice the first model loaded decides for all. On the
function path they go to ``tf.config.threading``, which is process-global and only takes
effect before the TF runtime starts (a warning is logged otherwise).

Ownership: a backend owns its session / graph / loaded object; ``close()`` drops them so
their memory can be freed at once. Opening blocks for as long as TensorFlow needs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pyserving.loaders.saved_model_signatures import SignaturePlan, all_named
from pyserving.servable.errors import InvalidArgumentError, UnimplementedError

__all__ = [
    "SavedModelOptions",
    "Backend",
    "SessionBackend",
    "FunctionBackend",
    "Call",
    "open_backend",
    "as_array",
]

_log = logging.getLogger(__name__)

_EXECUTIONS = ("auto", "session", "function")

#: A compiled signature: feeds in feed order -> one value per requested output alias.
Call = Callable[[list[np.ndarray]], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class SavedModelOptions:
    """How to load a SavedModel.

    ``tags``: the MetaGraph tag set to load (default ``("serve",)``).
    ``intra_op_parallelism`` / ``inter_op_parallelism``: threads, 0 = TensorFlow decides.
    ``inter_op_parallelism=-1`` (the default) runs a session's ops on the calling thread
    (TensorFlow's meaning of a negative value) instead of handing each call to the
    inter-op pool and waiting for it: a call no longer pays a thread wake-up, measured
    5.6 µs instead of 24-77 µs for the tiny model and 141 µs instead of 191-262 µs for the
    MLP at batch 1 (one thread calling with and without idle gaps between calls, 2 cores);
    one op's own parallel work still uses the intra-op pool. Graphs with many independent
    branches may prefer 0.
    ``execution``: ``"auto"`` (session, falling back to function), ``"session"`` or
    ``"function"`` (forced; for benchmarks and tests).
    """

    tags: tuple[str, ...] = ("serve",)
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = -1
    execution: str = "auto"

    def __post_init__(self) -> None:
        if not self.tags or not all(isinstance(t, str) and t for t in self.tags):
            raise InvalidArgumentError(f"saved_model_tags must be non-empty strings, got {list(self.tags)!r}")
        for name, lowest, meaning in (
            ("intra_op_parallelism", 0, "0 = auto"),
            ("inter_op_parallelism", -1, "0 = auto, -1 = the calling thread"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise InvalidArgumentError(f"{name} must be an int >= {lowest} ({meaning}), got {value!r}")
        if self.execution not in _EXECUTIONS:
            raise InvalidArgumentError(f"execution must be one of {_EXECUTIONS}, got {self.execution!r}")


class Backend:
    """An opened SavedModel that compiles signatures into calls. ``kind`` names it."""

    kind = ""

    def make(self, plan: SignaturePlan, aliases: tuple[str, ...]) -> Call:
        """A call computing ``aliases`` of ``plan``'s signature (may raise ServingError)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the session / loaded model; calls made earlier must not be used afterwards."""
        raise NotImplementedError


def open_backend(tf: Any, export_dir: str, sig_defs: Mapping[str, Any], options: SavedModelOptions) -> Backend:
    """The backend ``options.execution`` asks for: ``auto`` tries the session first.

    Raises ``tf.errors.OpError`` or ServingError on failure (UNIMPLEMENTED when
    ``execution="session"`` and a signature has composite tensors).
    """
    session_error: Exception | None = None
    if options.execution != "function" and all_named(sig_defs):
        try:
            return SessionBackend(tf, export_dir, options)
        except Exception as exc:
            if options.execution == "session":
                raise
            session_error = exc
            _log.warning(
                "SavedModel %s: session import failed (%s); serving it through signature functions",
                export_dir, exc,
            )
    if options.execution == "session":
        raise UnimplementedError(f"SavedModel {export_dir} has signatures a session cannot run")
    try:
        return FunctionBackend(tf, export_dir, options)
    except Exception as exc:
        if session_error is not None:
            # Both ways failed: the first error names the real problem (a missing checkpoint,
            # say); the fallback's is usually a long graph-execution trace about the same thing.
            raise session_error from exc
        raise


class SessionBackend(Backend):
    """A TF1 session over the MetaGraph imported into its own graph."""

    kind = "session"

    def __init__(self, tf: Any, export_dir: str, options: SavedModelOptions) -> None:
        v1 = tf.compat.v1
        config = v1.ConfigProto(
            intra_op_parallelism_threads=options.intra_op_parallelism,
            inter_op_parallelism_threads=options.inter_op_parallelism,
        )
        self._graph = tf.Graph()
        self._session = v1.Session(graph=self._graph, config=config)
        try:
            with self._graph.as_default(), _quiet_deprecations():
                v1.saved_model.loader.load(self._session, list(options.tags), export_dir)
            self._graph.finalize()
        except BaseException:
            self.close()
            raise
        from tensorflow.core.protobuf import config_pb2

        self._callable_options = config_pb2.CallableOptions

    def make(self, plan: SignaturePlan, aliases: tuple[str, ...]) -> Call:
        fetches = [plan.fetch_names[a] for a in aliases]
        compile_fast = getattr(self._session, "_make_callable_from_options", None)
        if compile_fast is not None:
            options = self._callable_options(feed=plan.feed_names, fetch=fetches)
            fast = compile_fast(options)
            return lambda feeds: fast(*feeds)
        slow = self._session.make_callable(fetches, plan.feed_names)
        return lambda feeds: slow(*feeds)

    def close(self) -> None:
        session = self.__dict__.pop("_session", None)
        if session is not None:
            session.close()
        self.__dict__.pop("_graph", None)


class FunctionBackend(Backend):
    """``tf.saved_model.load`` and its signature functions."""

    kind = "function"

    def __init__(self, tf: Any, export_dir: str, options: SavedModelOptions) -> None:
        threads = tf.config.threading
        for kind, value in (("intra", options.intra_op_parallelism), ("inter", options.inter_op_parallelism)):
            # Process-wide pools: only explicit positive sizes are applied (-1, "the calling
            # thread", is a session option; eager functions keep TensorFlow's pools).
            if value > 0 and getattr(threads, f"get_{kind}_op_parallelism_threads")() != value:
                try:  # process-global; only possible before the TF runtime starts
                    getattr(threads, f"set_{kind}_op_parallelism_threads")(value)
                except RuntimeError as exc:
                    _log.warning(
                        "Cannot set TensorFlow %s-op threads to %d for %s: %s", kind, value, export_dir, exc
                    )
        self._loaded = tf.saved_model.load(export_dir, tags=list(options.tags))

    def make(self, plan: SignaturePlan, aliases: tuple[str, ...]) -> Call:
        function = self._loaded.signatures.get(plan.name)
        if function is None:
            raise UnimplementedError(f"Signature {plan.name} has no callable function in this SavedModel")
        names = list(plan.spec.inputs)

        def call(feeds: list[np.ndarray]) -> list[Any]:
            result = function(**dict(zip(names, feeds)))
            return [result[a].numpy() for a in aliases]

        return call

    def close(self) -> None:
        self.__dict__.pop("_loaded", None)


def as_array(value: Any) -> np.ndarray:
    """A session's 0-d result (numpy scalar or ``bytes``) as a 0-d array."""
    if isinstance(value, (bytes, str)):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    return np.asarray(value)


def _quiet_deprecations() -> Any:
    """Silence TF's 'use tf.saved_model.load instead' notice for the TF1 loader."""
    try:
        from tensorflow.python.util import deprecation
    except ImportError:  # pragma: no cover - private module moved
        return contextlib.nullcontext()
    return deprecation.silence()
