"""TensorFlow SavedModels: :class:`SavedModelLoader` and :class:`SavedModelServable`.

Loading (``SavedModelServable.load``, on a load worker thread; blocks for as long as
TensorFlow needs) reads ``saved_model.pb`` (or ``.pbtxt``), picks the MetaGraph whose tag
set equals ``SavedModelOptions.tags`` (NOT_FOUND naming the tag sets present otherwise)
and opens a session runner, falling back to signature functions
(:mod:`~pyserving.loaders.saved_model_runners` describes both, and the thread options).
Every failure is a ServingError; TensorFlow errors keep their canonical code.

Requests: :meth:`SavedModelServable.run` is thread-safe and lock-free. It checks inputs
and the output filter with the shared rules of :mod:`pyserving.servable.validation`
(the servers check them too; library callers call ``run`` directly, and the compiled
callable does not check shapes) after turning Python lists and scalars into arrays.
TensorFlow runtime errors come back as the ServingError of their canonical code. String
tensors travel as numpy ``object`` arrays of ``bytes``. :meth:`~SavedModelServable.classify`
and :meth:`~SavedModelServable.regress` implement the optional classify/regress extension
of ``InferenceServable``; their outputs pass the shared classify/regress output checks.

Warmup: a loader built with ``warmup=WarmupOptions(...)`` replays the version's
``assets.extra/tf_serving_warmup_requests`` against the new servable inside ``load()``
(:mod:`pyserving.loaders.warmup`); a failed warmup closes the servable and fails the load.
``warmup=None`` (the default for direct construction) skips it; the tensorflow platform
passes it unless ``--enable_model_warmup=false``.

Ownership: the loader owns the servable; ``unload()`` closes the session and drops the
graph, the callables and the loaded object, so their memory is freed at once.

Module layout: this module (loader, servable, options re-export) is the public surface;
``saved_model_signatures`` reads protos and plans signatures, ``saved_model_runners``
executes them.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pyserving.loaders.loader import Loader, Resources
from pyserving.loaders.saved_model_runners import Backend, Call, SavedModelOptions, as_array, open_backend
from pyserving.loaders.saved_model_signatures import SignaturePlan, select_meta_graph, signature_spec
from pyserving.loaders.warmup import WarmupOptions, run_warmup
from pyserving.servable.errors import (
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
)
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, SignatureSpec
from pyserving.servable.validation import check_classify_outputs, check_regress_output
from pyserving.sources.storage_path import StoragePath

__all__ = [
    "SavedModelOptions",
    "SavedModelLoader",
    "SavedModelServable",
    "set_load_observer",
    "RAM_ESTIMATE_FACTOR",
    "directory_size",
]

_log = logging.getLogger(__name__)

#: TF Serving's rule: a loaded SavedModel takes about 1.2 x its size on disk.
RAM_ESTIMATE_FACTOR = 1.2
_INIT_OP_SIGNATURE = "__saved_model_init_op"
_MAX_CACHED_RUNNERS = 64  # per servable; further output filters run uncached

_Runner = tuple[tuple[str, ...], Call]


def directory_size(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of the files under ``path`` (NOT_FOUND if it is missing)."""
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"SavedModel directory {str(root)!r} does not exist")
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class SavedModelServable:
    """A loaded SavedModel; satisfies ``InferenceServable``. Build it with :meth:`load`.

    All public methods are safe to call from many threads at once until :meth:`close`;
    afterwards they raise FAILED_PRECONDITION.
    """

    def __init__(self, sig_defs: dict[str, Any], tags: tuple[str, ...], backend: Backend, tf: Any) -> None:
        self._sig_defs = sig_defs
        self._tags = tags
        self._backend: Backend | None = backend
        self._op_error: type[BaseException] = tf.errors.OpError
        self._runners: dict[tuple[str, tuple[str, ...]], _Runner] = {}
        self._signatures: dict[str, SignaturePlan] = {}
        for name, sig_def in sig_defs.items():
            spec = signature_spec(name, sig_def)
            if spec is not None:
                self._signatures[name] = SignaturePlan(name, spec, sig_def)
        self._specs = MappingProxyType({n: s.spec for n, s in self._signatures.items()})

    @classmethod
    def load(
        cls, export_dir: str | os.PathLike[str], options: SavedModelOptions = SavedModelOptions()
    ) -> SavedModelServable:
        """Load the SavedModel in ``export_dir``; raises ServingError on failure."""
        tf = _import_tensorflow()

        export_dir = os.fspath(export_dir)
        meta_graph = select_meta_graph(export_dir, options.tags)
        sig_defs = {}
        for name, sig_def in meta_graph.signature_def.items():
            if name != _INIT_OP_SIGNATURE:
                sig_defs[name] = type(sig_def)()
                sig_defs[name].CopyFrom(sig_def)  # keep only these, not the whole graph
        tags = tuple(meta_graph.meta_info_def.tags)
        del meta_graph
        try:
            backend = open_backend(tf, export_dir, sig_defs, options)
        except tf.errors.OpError as exc:
            raise ServingError.from_code(Code(exc.error_code), exc.message) from exc
        return cls(sig_defs, tags, backend, tf)

    # -- metadata ---------------------------------------------------------------------
    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._specs

    @property
    def meta_graph_tags(self) -> tuple[str, ...]:
        return self._tags

    @property
    def execution(self) -> str:
        """``"session"`` or ``"function"``: how requests run."""
        return self._live_backend().kind

    def signature_def_map(self) -> dict[str, Any]:
        """Signature name -> ``SignatureDef`` proto (init op excluded). Do not modify the protos."""
        return dict(self._sig_defs)

    # -- requests ---------------------------------------------------------------------
    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run a signature. Inputs may also be lists or scalars; they become arrays first."""
        sig = self._signatures.get(signature_name)
        if sig is None:
            raise FailedPreconditionError(f'Serving signature key "{signature_name}" not found.')
        feeds = sig.feeds(inputs)
        key = (signature_name, tuple(output_filter))
        runner = self._runners.get(key)
        if runner is None:
            runner = self._new_runner(sig, key)
        aliases, call = runner
        try:
            values = call(feeds)
        except self._op_error as exc:
            raise ServingError.from_code(Code(exc.error_code), exc.message) from exc
        return {a: v if type(v) is np.ndarray else as_array(v) for a, v in zip(aliases, values)}

    def classify(self, signature_name: str, serialized_examples: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Run a classify signature on serialized ``tf.Example``s.

        Returns ``"classes"`` (bytes, ``[N, K]``) and/or ``"scores"`` (float, ``[N, K]``),
        whichever the signature has, checked by ``check_classify_outputs``.
        """
        sig = self._example_signature(signature_name, CLASSIFY_METHOD, "classification")
        wanted = tuple(a for a in ("classes", "scores") if a in sig.fetch_names)
        if not wanted:
            raise InvalidArgumentError(
                f"Expected classification signature {signature_name} to have a classes or scores output; "
                f"it has {sorted(sig.fetch_names)}"
            )
        result = self._run_examples(sig, serialized_examples, wanted)
        classes, scores = check_classify_outputs(result.get("classes"), result.get("scores"), len(serialized_examples))
        checked = {"classes": classes, "scores": scores}
        return {alias: checked[alias] for alias in wanted}

    def regress(self, signature_name: str, serialized_examples: Sequence[bytes]) -> np.ndarray:
        """Run a regress signature on serialized ``tf.Example``s; returns ``[N]`` values."""
        sig = self._example_signature(signature_name, REGRESS_METHOD, "regression")
        if "outputs" not in sig.fetch_names:
            raise InvalidArgumentError(f"No regression outputs found in signature {signature_name}")
        value = self._run_examples(sig, serialized_examples, ("outputs",))["outputs"]
        return check_regress_output(value, len(serialized_examples))

    def _example_signature(self, name: str, method: str, kind: str) -> SignaturePlan:
        sig = self._signatures.get(name)
        if sig is None:
            raise InvalidArgumentError(f"No signature was found with the name: {name}")
        if sig.spec.method_name != method:
            raise InvalidArgumentError(
                f"Expected {kind} signature method_name to be {method}. Was: {sig.spec.method_name}"
            )
        if len(sig.spec.inputs) != 1:
            raise InvalidArgumentError("Expected one input Tensor.")
        if "inputs" not in sig.spec.inputs:
            raise InvalidArgumentError(f"No {kind} inputs found in signature {name}")
        return sig

    def _run_examples(
        self, sig: SignaturePlan, examples: Sequence[bytes], wanted: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        if len(examples) == 0:
            raise InvalidArgumentError("Input is empty.")
        batch = np.empty(len(examples), dtype=object)
        batch[:] = list(examples)
        return self.run(sig.name, {"inputs": batch}, wanted)

    def _new_runner(self, sig: SignaturePlan, key: tuple[str, tuple[str, ...]]) -> _Runner:
        aliases = sig.outputs_for(key[1])
        runner = (aliases, self._live_backend().make(sig, aliases))
        if len(self._runners) < _MAX_CACHED_RUNNERS:
            runner = self._runners.setdefault(key, runner)  # atomic; a racing twin is dropped
        return runner

    def _live_backend(self) -> Backend:
        backend = self._backend
        if backend is None:
            raise FailedPreconditionError("This SavedModel servable has been unloaded")
        return backend

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """Release the session / loaded model. Requests must have finished (the manager
        guarantees it); later calls raise FAILED_PRECONDITION. Idempotent."""
        backend, self._backend = self._backend, None
        self._runners = {}  # every lookup now misses, so ``run`` fails in _live_backend
        if backend is not None:
            backend.close()


#: ``observer(model_path, ok, latency_s)`` after each SavedModel load attempt (TF's
#: ``:tensorflow:cc:saved_model:load_attempt_count`` / ``load_latency``); see set_load_observer.
LoadObserver = Callable[[str, bool, float], None]
_load_observer_lock = threading.Lock()
_load_observer: LoadObserver | None = None


def set_load_observer(observer: LoadObserver | None) -> LoadObserver | None:
    """Install ``observer`` (None removes it), process-wide; returns the one it replaces.

    It is called on the load thread after each attempt to read a SavedModel (warmup not
    included), possibly from several threads at once; an exception it raises is logged
    and ignored."""
    global _load_observer
    with _load_observer_lock:
        previous, _load_observer = _load_observer, observer
    return previous


def _notify_load(model_path: str, ok: bool, latency_s: float) -> None:
    observer = _load_observer
    if observer is None:
        return
    try:
        observer(model_path, ok, latency_s)
    except Exception:  # noqa: BLE001 - metrics must never fail a load
        _log.exception("SavedModel load observer failed")


class SavedModelLoader(Loader):
    """Loads one SavedModel version directory. Construction only remembers the path."""

    def __init__(
        self,
        storage_path: StoragePath | str | os.PathLike[str],
        options: SavedModelOptions = SavedModelOptions(),
        servable_id: ServableId | None = None,
        *,
        warmup: WarmupOptions | None = None,
    ) -> None:
        if not isinstance(storage_path, StoragePath):
            storage_path = StoragePath(os.fspath(storage_path))
        self._storage_path = storage_path
        self._options = options
        self._id = servable_id
        self._warmup = warmup
        self._estimate: Resources | None = None
        self._servable: SavedModelServable | None = None

    def estimate_resources(self) -> Resources:
        if self._estimate is None:
            size = directory_size(self._storage_path.path)
            self._estimate = Resources(int(size * RAM_ESTIMATE_FACTOR))
        return self._estimate

    def load(self) -> None:
        if self._servable is not None:
            raise FailedPreconditionError(f"SavedModel {self._storage_path} is already loaded")
        started = time.perf_counter()
        try:
            servable = SavedModelServable.load(self._storage_path.path, self._options)
        except BaseException:
            _notify_load(self._storage_path.path, False, time.perf_counter() - started)
            raise
        _notify_load(self._storage_path.path, True, time.perf_counter() - started)
        _log.info(
            "Loaded SavedModel %s from %s (tags %s, %s runner, signatures: %s)",
            self._id or "", self._storage_path, ",".join(servable.meta_graph_tags),
            servable.execution, ", ".join(sorted(servable.signatures)),
        )
        if self._warmup is not None:
            try:
                run_warmup(servable, self._storage_path.path, self._warmup, name=str(self._id or ""))
            except BaseException:
                servable.close()  # a failed load leaves nothing behind
                del servable
                gc.collect()
                raise
        self._servable = servable

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        if servable is not None:
            servable.close()
            del servable
            # TF graphs hold reference cycles; free them now, not later. Cheap because the
            # objects TensorFlow's import created were frozen out of the collector's scans.
            gc.collect()

    @property
    def servable(self) -> SavedModelServable | None:
        return self._servable

    @property
    def revision(self) -> str | None:
        return self._storage_path.revision

    @property
    def options(self) -> SavedModelOptions:
        return self._options

    @property
    def warmup(self) -> WarmupOptions | None:
        """How ``load()`` warms the version up; None: it does not."""
        return self._warmup


_tensorflow_lock = threading.Lock()  # guards _tensorflow_frozen
_tensorflow_frozen = False


def _import_tensorflow() -> Any:
    """Import TensorFlow; the first time, move the ~270k objects its import created out of
    the garbage collector's scans (``gc.freeze``).

    Without this a full collection — ours after each unload, or one Python starts on its own
    — walks every one of them and holds the GIL for ~0.16 s, pausing every request of every
    model on each swap. The frozen objects are TensorFlow's modules and registries, which
    live as long as the process anyway; models loaded later are not frozen.
    """
    global _tensorflow_frozen
    import tensorflow as tf

    with _tensorflow_lock:
        if not _tensorflow_frozen:
            gc.collect()
            gc.freeze()
            _tensorflow_frozen = True
    return tf
