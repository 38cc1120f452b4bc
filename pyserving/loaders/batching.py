"""Batching for servables: :class:`BatchingServable`, :class:`BatchingLoader`, :class:`BatchingConfig`.

:class:`BatchingServable` wraps any ``InferenceServable`` (a SavedModel, a user's Python
servable) and is one itself: concurrent ``run`` calls of one signature are queued on a
:class:`~pyserving.servable.batcher.BatchScheduler`, concatenated on dimension 0, computed
by ONE ``inner.run`` call and split back, so every caller gets exactly its own rows, in
order. The tensor rules (who may share a call, padding) are
:mod:`~pyserving.loaders.batching_tensors`'; the queueing rules (release, refusals,
deadlines, failure) are :mod:`~pyserving.servable.batcher`'s. Requests that cannot be
batched (scalar inputs, inputs whose dimension 0 differ, non-array inputs) still go through
the queue, alone, so the batch threads bound the model calls; so do all requests of a
signature that declares a fixed size for dimension 0 or a scalar input. With ``batch_examples``,
classify / regress of signatures that take serialized ``tf.Example`` s as ``inputs`` are
batched the same way (SavedModels); otherwise they go to the inner servable unbatched.

Threading: ``run``/``classify``/``regress`` are called from many request threads and
block until their answer (``submit_run`` queues a run and returns its ticket at once, for
callers that wait without a thread: the REST server's event loop); ``inner.run`` is called on scheduler threads, at most
``num_batch_threads`` at once over all models sharing the scheduler, so the inner servable
must be thread-safe (``InferenceServable`` requires it). ``close`` drains: queued requests
still run (their callers hold handles, so the version is still loaded), then the queues
leave the scheduler; later calls are answered UNAVAILABLE.

Failure: an exception from ``inner.run`` fails exactly the requests of that batch with it
(a ServingError keeps its code; anything else is INTERNAL). A request is validated against
its signature before it is queued, so one bad request never fails the others of its batch.

:class:`BatchingLoader` wraps another :class:`Loader` (the tensorflow platform wraps the
SavedModel loader when the server runs with ``--enable_batching``): ``load`` resolves the
parameters (:meth:`BatchingConfig.parameters_for`: the per-model ``batching_params.pbtxt``
is read first, so a bad file fails the load before TensorFlow does any work), loads the
inner loader and wraps its servable; ``unload`` closes the queues, then unloads the inner.

Why one scheduler shared by every model (TF Serving's design) rather than threads per
model: the batch threads are what bounds concurrent model calls; on a small CPU box (2
cores) per-model pools would multiply that bound by the number of models and oversubscribe
the cores, while one pool of about one thread per core keeps them busy without thrashing.
Queues are served round-robin, so a busy model cannot starve another's queue; a model's
batches may still run on every thread at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

from pyserving.loaders.batching_params import PER_MODEL_FILENAME, BatchingParameters, read_batching_parameters
from pyserving.loaders.batching_tensors import batch_key, concat_inputs, merge_outputs, rows_of, split_outputs
from pyserving.loaders.loader import Loader, Resources
from pyserving.servable.batcher import Batch, BatchQueue, BatchScheduler, QueueStatistics, Ticket
from pyserving.servable.errors import FailedPreconditionError, UnimplementedError
from pyserving.servable.ids import ServableId
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, DType, SignatureSpec
from pyserving.servable.validation import (
    check_classify_outputs,
    check_inputs,
    check_output_filter,
    check_regress_output,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["BatchingServable", "BatchingLoader", "BatchingConfig"]

_log = logging.getLogger(__name__)


class _Request(NamedTuple):
    inputs: Mapping[str, Any]
    output_filter: tuple[str, ...]


class BatchingServable:
    """An ``InferenceServable`` that batches ``inner``'s ``run`` calls; see the module docstring.

    ``name`` (e.g. the servable id) names the queues in statistics and messages;
    ``close_inner``: ``close()`` also closes ``inner`` (when nothing else owns it).
    Other attributes (``signature_def_map``, ...) are read from ``inner``.
    """

    def __init__(
        self,
        inner: Any,
        scheduler: BatchScheduler,
        parameters: BatchingParameters | None = None,
        *,
        name: str = "",
        batch_examples: bool = False,
        close_inner: bool = False,
    ) -> None:
        self._inner = inner
        self._parameters = parameters if parameters is not None else BatchingParameters()
        self._name = name or type(inner).__name__
        self._batch_examples = batch_examples
        self._close_inner = close_inner
        self._pad = self._parameters.pad_variable_length_inputs
        options = self._parameters.queue_options()
        queues: dict[str, BatchQueue[_Request, dict[str, Any]]] = {}
        try:
            for signature_name in inner.signatures:
                queues[signature_name] = scheduler.add_queue(
                    f"{self._name} {signature_name}",
                    options,
                    lambda batch, signature_name=signature_name: self._process(signature_name, batch),
                    merge=merge_outputs,
                )
        except BaseException:
            for queue in queues.values():
                queue.close()
            raise
        self._queues = queues
        #: Signatures whose every input may grow in dimension 0 (the others run request by request).
        self._batchable = frozenset(name for name, spec in inner.signatures.items() if _grows_in_dim0(spec))

    @property
    def inner(self) -> Any:
        return self._inner

    @property
    def parameters(self) -> BatchingParameters:
        return self._parameters

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._inner.signatures  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    # -- requests ----------------------------------------------------------------------------

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Batched ``inner.run``. ``deadline``: a ``time.monotonic()`` value after which the
        request is answered DEADLINE_EXCEEDED instead of run (None: no deadline)."""
        queue = self._queues.get(signature_name)
        if queue is None:  # unknown signature: the inner servable answers with its own error
            return self._inner.run(signature_name, inputs, output_filter)  # type: ignore[no-any-return]
        request = _Request(inputs, tuple(output_filter))
        rows = rows_of(inputs) if signature_name in self._batchable else None
        if rows is None:
            return queue.run(request, 1, solo=True, deadline=deadline)
        signature = self.signatures[signature_name]
        check_inputs(signature, inputs)
        check_output_filter(signature, output_filter)
        key = batch_key(inputs, request.output_filter, self._pad)
        return queue.run(request, rows, key=key, deadline=deadline)

    def submit_run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        deadline: float | None = None,
    ) -> Ticket[dict[str, np.ndarray]]:
        """:meth:`run` without waiting: queue the request and return its :class:`Ticket`
        (``add_done_callback`` / ``result``). Never runs the model on this thread, so an
        event loop may call it. Refusals (full queue, too large, unknown signature) raise
        here, at once; a request that cannot be batched is queued alone."""
        queue = self._queues.get(signature_name)
        if queue is None:
            raise FailedPreconditionError(f'Serving signature key "{signature_name}" not found.')
        request = _Request(inputs, tuple(output_filter))
        rows = rows_of(inputs) if signature_name in self._batchable else None
        if rows is None:
            return queue.submit(request, 1, solo=True, deadline=deadline)
        signature = self.signatures[signature_name]
        check_inputs(signature, inputs)
        check_output_filter(signature, output_filter)
        return queue.submit(request, rows, key=batch_key(inputs, request.output_filter, self._pad), deadline=deadline)

    def _process(self, signature_name: str, batch: Batch[_Request]) -> list[dict[str, Any]]:
        """One model call for a whole batch (on a scheduler thread)."""
        tasks = batch.tasks
        first = tasks[0].payload
        if batch.solo:
            return [self._inner.run(signature_name, first.inputs, first.output_filter)]
        parts = [(task.payload.inputs, task.offset, task.size) for task in tasks]
        inputs = concat_inputs(parts, batch.padded_size, self._pad)
        outputs = self._inner.run(signature_name, inputs, first.output_filter)
        return split_outputs(outputs, [task.size for task in tasks], batch.padded_size)

    def classify(self, signature_name: str, serialized_examples: Sequence[bytes]) -> dict[str, np.ndarray]:
        """The classify extension of ``InferenceServable``, batched when ``batch_examples``."""
        classify = self._inner_method("classify", CLASSIFY_METHOD)
        signature = self._example_signature(signature_name, serialized_examples, CLASSIFY_METHOD)
        wanted = tuple(a for a in ("classes", "scores") if signature is not None and a in signature.outputs)
        if not wanted:
            return classify(signature_name, serialized_examples)  # type: ignore[no-any-return]
        outputs = self.run(signature_name, {"inputs": _examples(serialized_examples)}, wanted)
        classes, scores = check_classify_outputs(outputs.get("classes"), outputs.get("scores"), len(serialized_examples))
        checked = {"classes": classes, "scores": scores}
        return {alias: checked[alias] for alias in wanted}  # type: ignore[misc]

    def regress(self, signature_name: str, serialized_examples: Sequence[bytes]) -> np.ndarray:
        """The regress extension of ``InferenceServable``, batched when ``batch_examples``."""
        regress = self._inner_method("regress", REGRESS_METHOD)
        signature = self._example_signature(signature_name, serialized_examples, REGRESS_METHOD)
        if signature is None or "outputs" not in signature.outputs:
            return regress(signature_name, serialized_examples)  # type: ignore[no-any-return]
        value = self.run(signature_name, {"inputs": _examples(serialized_examples)}, ("outputs",))["outputs"]
        return check_regress_output(value, len(serialized_examples))

    def _inner_method(self, attribute: str, method: str) -> Any:
        function = getattr(self._inner, attribute, None)
        if function is None:
            raise UnimplementedError(f"Servable {self._name} does not support {method}")
        return function

    def _example_signature(self, name: str, examples: Sequence[bytes], method: str) -> SignatureSpec | None:
        """The signature when the request can be batched as a run on serialized examples;
        None sends it to the inner servable, which also reports every error in its words."""
        signature = self.signatures.get(name)
        if not self._batch_examples or not examples or signature is None or signature.method_name != method:
            return None
        spec = signature.inputs.get("inputs")
        if len(signature.inputs) != 1 or spec is None or spec.dtype is not DType.STRING:
            return None
        return signature

    # -- observability and life cycle ------------------------------------------------------------

    def statistics(self) -> QueueStatistics:
        """The queues of every signature combined (named after the servable)."""
        return QueueStatistics.combine(self._name, (queue.statistics() for queue in self._queues.values()))

    def signature_statistics(self) -> dict[str, QueueStatistics]:
        return {name: queue.statistics() for name, queue in self._queues.items()}

    def close(self) -> None:
        """Drain and close the queues (see the module docstring); then ``inner.close()`` if
        ``close_inner``. Idempotent. Never call it from a batch thread."""
        for queue in self._queues.values():
            queue.close()
        if self._close_inner:
            close = getattr(self._inner, "close", None)
            if callable(close):
                close()


def _grows_in_dim0(signature: SignatureSpec) -> bool:
    """True when no input declares rank 0 or a fixed dimension 0 (unknown rank is fine)."""
    for spec in signature.inputs.values():
        if spec.shape is None:
            continue
        if len(spec.shape) == 0 or (spec.shape[0] is not None and spec.shape[0] >= 0):
            return False
    return True


def _examples(serialized: Sequence[bytes]) -> np.ndarray:
    import numpy as np

    array = np.empty(len(serialized), dtype=object)
    array[:] = list(serialized)
    return array


@dataclass(frozen=True)
class BatchingConfig:
    """How a platform batches: the ``"batching"`` option of the tensorflow platform.

    ``scheduler``: the thread pool shared by every model. ``parameters``: every model's
    batching parameters, unless ``per_model``; then each version directory's
    ``batching_params.pbtxt`` gives them (fields it omits take TF Serving's defaults) and a
    version without the file is not batched (TF Serving's rule); the scheduler's threads
    still come from the global parameters.
    """

    scheduler: BatchScheduler
    parameters: BatchingParameters
    per_model: bool = False

    def parameters_for(self, version_dir: str | Path) -> BatchingParameters | None:
        """The parameters for one version directory; None: do not batch it."""
        if not self.per_model:
            return self.parameters
        path = Path(version_dir) / PER_MODEL_FILENAME
        if not path.is_file():
            return None
        return read_batching_parameters(path)


class BatchingLoader(Loader):
    """Wraps ``inner``'s servable in a :class:`BatchingServable`; see the module docstring."""

    def __init__(
        self, inner: Loader, config: BatchingConfig, version_dir: str | Path, servable_id: ServableId | None = None
    ) -> None:
        self._inner = inner
        self._config = config
        self._version_dir = Path(version_dir)
        self._id = servable_id
        self._batching: BatchingServable | None = None
        self._servable: Any = None

    @property
    def inner(self) -> Loader:
        return self._inner

    def estimate_resources(self) -> Resources:
        return self._inner.estimate_resources()

    def load(self) -> None:
        parameters = self._config.parameters_for(self._version_dir)
        self._inner.load()
        name = str(self._id) if self._id is not None else str(self._version_dir)
        if parameters is None:
            _log.info("%s is not batched: no %s in %s", name, PER_MODEL_FILENAME, self._version_dir)
            self._servable = self._inner.servable
            return
        try:
            self._batching = BatchingServable(
                self._inner.servable, self._config.scheduler, parameters, name=name, batch_examples=True
            )
        except BaseException:
            self._inner.unload()
            raise
        self._servable = self._batching
        _log.info("%s is batched: %s", name, parameters.describe())

    def unload(self) -> None:
        batching, self._batching, self._servable = self._batching, None, None
        try:
            if batching is not None:
                batching.close()
                stats = batching.statistics()
                _log.info(
                    "%s batching: %d tasks in %d batches (%.1f rows per batch, queue delay mean %.2f ms, "
                    "max %.2f ms); refused: %d queue full, %d too large, %d past their deadline",
                    stats.name, stats.tasks, stats.batches, stats.mean_batch_size, stats.mean_queue_delay_s * 1e3,
                    stats.queue_delay_s_max * 1e3, stats.rejected_full, stats.rejected_too_large, stats.expired,
                )
        finally:
            self._inner.unload()

    @property
    def servable(self) -> Any:
        return self._servable

    @property
    def revision(self) -> str | None:
        return self._inner.revision
