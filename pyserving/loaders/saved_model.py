"""TensorFlow SavedModels: :class:`SavedModelLoader` and :class:`SavedModelServable`.

Loading (``SavedModelServable.load``, on a load worker thread; blocks for as long as
TensorFlow needs) reads ``saved_model.pb`` (or ``.pbtxt``), picks the MetaGraph whose tag
set equals ``SavedModelOptions.tags`` (NOT_FOUND naming the tag sets present otherwise)
and opens one of two runners:

* **session** (preferred): the MetaGraph is imported into a fresh ``tf.Graph`` with the TF1
  loader, variables are restored and init ops run in a ``tf.compat.v1.Session``, and each
  (signature, output filter) pair gets a compiled session callable (TF's
  ``Session._make_callable_from_options``, the public ``make_callable`` where absent). This
  works for TF1-graph SavedModels and for TF2 ones (their MetaGraph carries signature
  defs, a saver and ``__saved_model_init_op``), including resource and string variables
  and asset-backed tables. It is several times faster per call than the function path.
* **function** (fallback): ``tf.saved_model.load`` and ``loaded.signatures[name]``; used
  when the session import fails or a signature has composite (sparse / ragged) tensors.

Requests: :meth:`SavedModelServable.run` is thread-safe and lock-free; it validates inputs
against the signature (names, dtypes, known dims) before running, because the compiled
callable does not check shapes. TensorFlow runtime errors come back as the ServingError of
their canonical code. String tensors travel as numpy ``object`` arrays of ``bytes``.

Threads: ``intra_op_parallelism`` / ``inter_op_parallelism`` (0 = TensorFlow decides) go
into the session ``ConfigProto``; TensorFlow sizes its CPU pools once per process from the
first session it creates, so in practice the first model loaded decides for all. On the
function path they go to ``tf.config.threading``, which is process-global and only takes
effect before the TF runtime starts (a warning is logged otherwise).

Ownership: the loader owns the servable; ``unload()`` closes the session and drops the
graph, the callables and the loaded object, so their memory is freed at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pyserving.loaders.loader import Loader, Resources
from pyserving.servable.errors import (
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnimplementedError,
)
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, DType, SignatureSpec, TensorSpec
from pyserving.sources.storage_path import StoragePath

__all__ = [
    "SavedModelOptions",
    "SavedModelLoader",
    "SavedModelServable",
    "RAM_ESTIMATE_FACTOR",
    "directory_size",
]

_log = logging.getLogger(__name__)

#: TF Serving's rule: a loaded SavedModel takes about 1.2 x its size on disk.
RAM_ESTIMATE_FACTOR = 1.2
_INIT_OP_SIGNATURE = "__saved_model_init_op"
_EXECUTIONS = ("auto", "session", "function")
_MAX_CACHED_RUNNERS = 64  # per servable; further output filters run uncached


@dataclass(frozen=True, slots=True)
class SavedModelOptions:
    """How to load a SavedModel.

    ``tags``: the MetaGraph tag set to load (default ``("serve",)``).
    ``intra_op_parallelism`` / ``inter_op_parallelism``: threads, 0 = TensorFlow decides.
    ``execution``: ``"auto"`` (session, falling back to function), ``"session"`` or
    ``"function"`` (forced; for benchmarks and tests).
    """

    tags: tuple[str, ...] = ("serve",)
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0
    execution: str = "auto"

    def __post_init__(self) -> None:
        if not self.tags or not all(isinstance(t, str) and t for t in self.tags):
            raise InvalidArgumentError(f"saved_model_tags must be non-empty strings, got {list(self.tags)!r}")
        for name in ("intra_op_parallelism", "inter_op_parallelism"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} must be an int >= 0 (0 = auto), got {value!r}")
        if self.execution not in _EXECUTIONS:
            raise InvalidArgumentError(f"execution must be one of {_EXECUTIONS}, got {self.execution!r}")


def directory_size(path: str | os.PathLike[str]) -> int:
    """Total size in bytes of the files under ``path`` (NOT_FOUND if it is missing)."""
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"SavedModel directory {str(root)!r} does not exist")
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class _Signature:
    """One runnable signature: its spec, feed order and per-input checks (immutable)."""

    __slots__ = ("name", "spec", "input_set", "checks", "feed_names", "output_aliases", "fetch_names")

    def __init__(self, name: str, spec: SignatureSpec, sig_def: Any, tf: Any) -> None:
        self.name = name
        self.spec = spec
        self.input_set = frozenset(spec.inputs)
        self.checks = [
            (alias, _numpy_dtype(t.dtype, tf), t.dtype, t.shape, _known_dims(t.shape))
            for alias, t in spec.inputs.items()
        ]
        self.feed_names = [sig_def.inputs[alias].name for alias in spec.inputs]
        self.output_aliases = tuple(spec.outputs)
        self.fetch_names = {alias: sig_def.outputs[alias].name for alias in spec.outputs}

    def feeds(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """The inputs in feed order, checked against the signature."""
        if inputs.keys() != self.input_set:
            raise InvalidArgumentError(_input_set_message(inputs.keys(), self.input_set))
        feeds = []
        for alias, np_dtype, dtype, shape, known in self.checks:
            value = inputs[alias]
            if type(value) is not np.ndarray or value.dtype != np_dtype:
                value = _coerce(alias, value, np_dtype, dtype)
            if shape is not None:
                got = value.shape
                if len(got) != len(shape) or any(got[i] != size for i, size in known):
                    _raise_shape(alias, got, shape)
            feeds.append(value)
        return feeds

    def outputs_for(self, output_filter: tuple[str, ...]) -> tuple[str, ...]:
        """The aliases to fetch for ``output_filter`` (all when empty), validated."""
        if not output_filter:
            return self.output_aliases
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in self.fetch_names:
                expected = ",".join(sorted(self.fetch_names))
                raise InvalidArgumentError(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{expected}}}."
                )
            if alias in seen:
                raise InvalidArgumentError(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return output_filter


_Runner = tuple[tuple[str, ...], Callable[[list[np.ndarray]], Sequence[Any]]]


class SavedModelServable:
    """A loaded SavedModel; satisfies ``InferenceServable``. Build it with :meth:`load`.

    All public methods are safe to call from many threads at once until :meth:`close`;
    afterwards they raise FAILED_PRECONDITION.
    """

    def __init__(
        self, sig_defs: dict[str, Any], tags: tuple[str, ...], backend: _Backend, tf: Any
    ) -> None:
        self._sig_defs = sig_defs
        self._tags = tags
        self._backend: _Backend | None = backend
        self._op_error: type[BaseException] = tf.errors.OpError
        self._runners: dict[tuple[str, tuple[str, ...]], _Runner] = {}
        self._signatures: dict[str, _Signature] = {}
        for name, sig_def in sig_defs.items():
            spec = _signature_spec(name, sig_def)
            if spec is not None:
                self._signatures[name] = _Signature(name, spec, sig_def, tf)
        self._specs = MappingProxyType({n: s.spec for n, s in self._signatures.items()})

    @classmethod
    def load(
        cls, export_dir: str | os.PathLike[str], options: SavedModelOptions = SavedModelOptions()
    ) -> SavedModelServable:
        """Load the SavedModel in ``export_dir``; raises ServingError on failure."""
        import tensorflow as tf

        export_dir = os.fspath(export_dir)
        meta_graph = _select_meta_graph(export_dir, options.tags)
        sig_defs = {}
        for name, sig_def in meta_graph.signature_def.items():
            if name != _INIT_OP_SIGNATURE:
                sig_defs[name] = type(sig_def)()
                sig_defs[name].CopyFrom(sig_def)  # keep only these, not the whole graph
        tags = tuple(meta_graph.meta_info_def.tags)
        del meta_graph
        backend: _Backend | None = None
        try:
            if options.execution != "function" and _all_named(sig_defs):
                try:
                    backend = _SessionBackend(tf, export_dir, options)
                except Exception as exc:
                    if options.execution == "session":
                        raise
                    _log.warning(
                        "SavedModel %s: session import failed (%s); serving it through signature functions",
                        export_dir, exc,
                    )
            if backend is None:
                if options.execution == "session":
                    raise UnimplementedError(f"SavedModel {export_dir} has signatures a session cannot run")
                backend = _FunctionBackend(tf, export_dir, options)
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
        return {a: v if type(v) is np.ndarray else _as_array(v) for a, v in zip(aliases, values)}

    def classify(self, signature_name: str, serialized_examples: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Run a classify signature on serialized ``tf.Example``s.

        Returns ``"classes"`` (bytes, ``[N, K]``) and/or ``"scores"`` (float, ``[N, K]``),
        whichever the signature has.
        """
        sig = self._example_signature(signature_name, CLASSIFY_METHOD, "classification")
        wanted = tuple(a for a in ("classes", "scores") if a in sig.fetch_names)
        if not wanted:
            raise InvalidArgumentError(
                f"Expected classification signature {signature_name} to have a classes or scores output; "
                f"it has {sorted(sig.fetch_names)}"
            )
        result = self._run_examples(sig, serialized_examples, wanted)
        for alias, value in result.items():
            if value.ndim != 2 or value.shape[0] != len(serialized_examples):
                raise InvalidArgumentError(
                    f"Expected {alias} Tensor shape: [{len(serialized_examples)} num_classes] "
                    f"but got {list(value.shape)}"
                )
        return result

    def regress(self, signature_name: str, serialized_examples: Sequence[bytes]) -> np.ndarray:
        """Run a regress signature on serialized ``tf.Example``s; returns ``[N]`` values."""
        sig = self._example_signature(signature_name, REGRESS_METHOD, "regression")
        if "outputs" not in sig.fetch_names:
            raise InvalidArgumentError(f"No regression outputs found in signature {signature_name}")
        value = self._run_examples(sig, serialized_examples, ("outputs",))["outputs"]
        n = len(serialized_examples)
        if value.shape not in ((n,), (n, 1)):
            raise InvalidArgumentError(
                f"Expected output Tensor shape to be either [{n}] or [{n},1] but got {list(value.shape)}"
            )
        return value.reshape(n)

    def _example_signature(self, name: str, method: str, kind: str) -> _Signature:
        sig = self._signatures.get(name)
        if sig is None:
            raise InvalidArgumentError(f"No signature was found with the name: {name}")
        if sig.spec.method_name != method:
            raise InvalidArgumentError(
                f"Expected {kind} signature method_name to be {method}. Was: {sig.spec.method_name}"
            )
        if len(sig.input_set) != 1:
            raise InvalidArgumentError("Expected one input Tensor.")
        if "inputs" not in sig.input_set:
            raise InvalidArgumentError(f"No {kind} inputs found in signature {name}")
        return sig

    def _run_examples(
        self, sig: _Signature, examples: Sequence[bytes], wanted: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        if len(examples) == 0:
            raise InvalidArgumentError("Input is empty.")
        batch = np.empty(len(examples), dtype=object)
        batch[:] = list(examples)
        return self.run(sig.name, {"inputs": batch}, wanted)

    def _new_runner(self, sig: _Signature, key: tuple[str, tuple[str, ...]]) -> _Runner:
        aliases = sig.outputs_for(key[1])
        runner = (aliases, self._live_backend().make(sig, aliases))
        if len(self._runners) < _MAX_CACHED_RUNNERS:
            runner = self._runners.setdefault(key, runner)  # atomic; a racing twin is dropped
        return runner

    def _live_backend(self) -> _Backend:
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


class _Backend:
    kind = ""

    def make(self, sig: _Signature, aliases: tuple[str, ...]) -> Callable[[list[np.ndarray]], Sequence[Any]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SessionBackend(_Backend):
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

    def make(self, sig: _Signature, aliases: tuple[str, ...]) -> Callable[[list[np.ndarray]], Sequence[Any]]:
        fetches = [sig.fetch_names[a] for a in aliases]
        compile_fast = getattr(self._session, "_make_callable_from_options", None)
        if compile_fast is not None:
            options = self._callable_options(feed=sig.feed_names, fetch=fetches)
            fast = compile_fast(options)
            return lambda feeds: fast(*feeds)
        slow = self._session.make_callable(fetches, sig.feed_names)
        return lambda feeds: slow(*feeds)

    def close(self) -> None:
        session = self.__dict__.pop("_session", None)
        if session is not None:
            session.close()
        self.__dict__.pop("_graph", None)


class _FunctionBackend(_Backend):
    """``tf.saved_model.load`` and its signature functions."""

    kind = "function"

    def __init__(self, tf: Any, export_dir: str, options: SavedModelOptions) -> None:
        threads = tf.config.threading
        for kind, value in (("intra", options.intra_op_parallelism), ("inter", options.inter_op_parallelism)):
            if value and getattr(threads, f"get_{kind}_op_parallelism_threads")() != value:
                try:  # process-global; only possible before the TF runtime starts
                    getattr(threads, f"set_{kind}_op_parallelism_threads")(value)
                except RuntimeError as exc:
                    _log.warning(
                        "Cannot set TensorFlow %s-op threads to %d for %s: %s", kind, value, export_dir, exc
                    )
        self._loaded = tf.saved_model.load(export_dir, tags=list(options.tags))

    def make(self, sig: _Signature, aliases: tuple[str, ...]) -> Callable[[list[np.ndarray]], Sequence[Any]]:
        function = self._loaded.signatures.get(sig.name)
        if function is None:
            raise UnimplementedError(f"Signature {sig.name} has no callable function in this SavedModel")
        names = list(sig.spec.inputs)

        def call(feeds: list[np.ndarray]) -> list[Any]:
            result = function(**dict(zip(names, feeds)))
            return [result[a].numpy() for a in aliases]

        return call

    def close(self) -> None:
        self.__dict__.pop("_loaded", None)


class SavedModelLoader(Loader):
    """Loads one SavedModel version directory. Construction only remembers the path."""

    def __init__(
        self,
        storage_path: StoragePath | str | os.PathLike[str],
        options: SavedModelOptions = SavedModelOptions(),
        servable_id: ServableId | None = None,
    ) -> None:
        if not isinstance(storage_path, StoragePath):
            storage_path = StoragePath(os.fspath(storage_path))
        self._storage_path = storage_path
        self._options = options
        self._id = servable_id
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
        servable = SavedModelServable.load(self._storage_path.path, self._options)
        _log.info(
            "Loaded SavedModel %s from %s (tags %s, %s runner, signatures: %s)",
            self._id or "", self._storage_path, ",".join(servable.meta_graph_tags),
            servable.execution, ", ".join(sorted(servable.signatures)),
        )
        self._servable = servable

    def unload(self) -> None:
        servable, self._servable = self._servable, None
        if servable is not None:
            servable.close()
            del servable
            gc.collect()  # TF graphs hold reference cycles; free them now, not later

    @property
    def servable(self) -> SavedModelServable | None:
        return self._servable

    @property
    def revision(self) -> str | None:
        return self._storage_path.revision

    @property
    def options(self) -> SavedModelOptions:
        return self._options


# -- helpers ----------------------------------------------------------------------------
def _select_meta_graph(export_dir: str, tags: tuple[str, ...]) -> Any:
    from google.protobuf import message, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary, text = Path(export_dir, "saved_model.pb"), Path(export_dir, "saved_model.pbtxt")
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise NotFoundError(
                f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}"
            )
    except (text_format.ParseError, message.DecodeError) as exc:
        raise ServingError.from_code(Code.DATA_LOSS, f"Cannot parse the SavedModel in {export_dir}: {exc}") from exc
    wanted = set(tags)
    found = []
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
        found.append("{ " + " ".join(sorted(meta_graph.meta_info_def.tags)) + " }")
    raise NotFoundError(
        f"Could not find meta graph def matching supplied tags: {{ {' '.join(sorted(wanted))} }}. "
        f"Tag sets in the SavedModel at {export_dir}: {', '.join(found) or 'none'}"
    )


def _all_named(sig_defs: Mapping[str, Any]) -> bool:
    """Whether every tensor is a plain named tensor (no sparse / composite encodings)."""
    return all(
        info.WhichOneof("encoding") == "name"
        for sig_def in sig_defs.values()
        for info in (*sig_def.inputs.values(), *sig_def.outputs.values())
    )


def _signature_spec(name: str, sig_def: Any) -> SignatureSpec | None:
    try:
        inputs = {alias: _tensor_spec(info) for alias, info in sig_def.inputs.items()}
        outputs = {alias: _tensor_spec(info) for alias, info in sig_def.outputs.items()}
    except ValueError as exc:
        _log.warning("Signature %s is not served: %s", name, exc)
        return None
    return SignatureSpec(inputs=inputs, outputs=outputs, method_name=sig_def.method_name)


def _tensor_spec(info: Any) -> TensorSpec:
    try:
        dtype = DType(info.dtype)
    except ValueError:
        raise ValueError(f"tensor {info.name or '?'} has unsupported dtype enum {info.dtype}") from None
    shape_proto = info.tensor_shape
    shape = None
    if not shape_proto.unknown_rank:
        shape = tuple(d.size if d.size >= 0 else None for d in shape_proto.dim)
    return TensorSpec(dtype=dtype, shape=shape, tensor_name=info.name)


def _numpy_dtype(dtype: DType, tf: Any) -> np.dtype:
    if dtype is DType.STRING:
        return np.dtype(object)
    return np.dtype(tf.dtypes.as_dtype(int(dtype)).as_numpy_dtype)


def _coerce(alias: str, value: Any, np_dtype: np.dtype, dtype: DType) -> np.ndarray:
    """``value`` as an ndarray of the signature's dtype; strings of any numpy kind pass."""
    array = np.asarray(value)
    if array.dtype == np_dtype or (dtype is DType.STRING and array.dtype.kind in "SU"):
        return array
    try:
        got = DType.from_numpy(array.dtype).tf_name
    except ValueError:
        got = str(array.dtype)
    raise InvalidArgumentError(f'Input "{alias}" has dtype {got} but the signature expects {dtype.tf_name}.')


def _known_dims(shape: tuple[int | None, ...] | None) -> tuple[tuple[int, int], ...]:
    """(index, size) of each known dimension of ``shape``."""
    return tuple((i, size) for i, size in enumerate(shape or ()) if size is not None)


def _raise_shape(alias: str, got: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    want = "[" + ",".join("-1" if e is None else str(e) for e in expected) + "]"
    raise InvalidArgumentError(
        f'Input "{alias}" has shape [{",".join(map(str, got))}] but the signature expects {want} (-1: any size).'
    )


def _input_set_message(sent: Any, expected: frozenset[str]) -> str:
    sent_set = set(sent)
    return (
        f"input size does not match signature: {len(sent_set)}!={len(expected)} "
        f"len({{{','.join(sorted(sent_set))}}}) != len({{{','.join(sorted(expected))}}}). "
        f"Sent extra: {{{','.join(sorted(sent_set - expected))}}}. "
        f"Missing but required: {{{','.join(sorted(expected - sent_set))}}}."
    )


def _as_array(value: Any) -> np.ndarray:
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
