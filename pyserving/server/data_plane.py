"""The transport-neutral data plane: one implementation of every TF Serving API.

The gRPC and REST front ends only parse their wire format, call a method here, and encode
the result, so the two cannot drift. Each method resolves the model spec through the
manager (name + version, label, or latest), holds a :class:`ServableHandle` for exactly
the duration of the request, and raises :class:`ServingError` with TF Serving's codes and
messages.

Threading: every method is safe to call from many threads at once; none takes a lock
that a load or unload holds. Methods block while the model runs.

Tensor decoding is passed in as a function of the resolved signature (``decode``),
because REST can only turn JSON into tensors once it knows the signature, and TF
Serving's check order (servable lookup, then signature, then tensor conversion) must hold
for both transports.

Classify and regress call the servable's optional ``classify`` / ``regress`` methods (the
extension documented on ``InferenceServable``) and check what they return with TF
Serving's output rules (:func:`check_classify_outputs`, :func:`check_regress_output`), so
:class:`ClassifyResult` and :class:`RegressResult` hold arrays the front ends only encode.
A servable whose ``classify`` returns anything but a mapping is answered INTERNAL.

Deadlines: :meth:`DataPlane.predict` takes an optional ``deadline`` (a ``time.monotonic()``
value; the gRPC servicer derives it from the RPC's deadline, REST from
``rest_api_timeout_in_ms``). A request whose deadline passed once its inputs are decoded
and checked is answered DEADLINE_EXCEEDED without running the model. Servables whose
``run`` accepts a keyword ``deadline`` (an optional extension of ``InferenceServable``;
the batching servable does) receive it, so a request that waits in a queue past its
deadline is dropped there instead of computed for nobody.

Routes: with a :class:`~pyserving.manager.router.Router`, a spec whose name is a route
is answered by the model the router chooses for it (from ``ModelSpec.headers``: header
rules, the segment key, else weights); every result names the model and version that
answered. A route picks versions itself, so a spec naming a route and a version or label
is INVALID_ARGUMENT. Predict, classify, regress and multi-inference calls of a route are
recorded in its per-arm statistics (latency from resolution to result, errors), and when
the router chose a shadow for the request, the same call is mirrored to the shadow after
the main result exists (on the router's shadow thread: it never delays or fails the
answer). Metadata and status of a route describe the model chosen for the caller.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, TypeVar

from pyserving.servable.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnimplementedError,
)
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import ServableId, ServableRequest
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    InferenceServable,
    SignatureSpec,
)
from pyserving.servable.state import ServableState
from pyserving.servable.validation import (
    check_classify_outputs,
    check_inputs,
    check_output_filter,
    check_regress_output,
)
from pyserving.server.pending_predict import PendingPredict

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from pyserving.manager.router import RouteChoice, Router
    from pyserving.server.tracing import Tracing

__all__ = [
    "ModelSpec",
    "ServingCore",
    "DataPlane",
    "PredictResult",
    "ClassifyResult",
    "RegressResult",
    "MetadataResult",
]

Decode = Callable[[SignatureSpec], Mapping[str, "np.ndarray"]]
_R = TypeVar("_R")

#: servable type -> whether it satisfies InferenceServable (checked once per type).
_RUNS_INFERENCE: dict[type, bool] = {}
#: servable type -> whether it has ``submit_run`` (checked once per type).
_SUBMITS_RUNS: dict[type, bool] = {}
#: servable type -> whether its ``run`` takes a ``deadline`` keyword (checked once per type).
_TAKES_DEADLINE: dict[type, bool] = {}


def _not_run_in_time(handle: ServableHandle[Any]) -> DeadlineExceededError:
    return DeadlineExceededError(f"The request's deadline passed before {handle.id} could run it; it was not run")


def _submits_runs(servable: object) -> bool:
    """Whether ``servable`` queues runs without waiting (``submit_run``: batching servables)."""
    kind = type(servable)
    submits = _SUBMITS_RUNS.get(kind)
    if submits is None:  # looked up on the type: a wrapper's __getattr__ must not answer
        submits = _SUBMITS_RUNS[kind] = callable(getattr(kind, "submit_run", None))
    return submits


def _takes_deadline(servable: object) -> bool:
    kind = type(servable)
    takes = _TAKES_DEADLINE.get(kind)
    if takes is None:
        try:
            parameters = inspect.signature(kind.run).parameters  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        parameter = parameters.get("deadline")
        takes = _TAKES_DEADLINE[kind] = parameter is not None and parameter.kind in (
            inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
    return takes


class ServingCore(Protocol):
    """What the data plane needs from the server core (the manager behind it)."""

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]: ...

    def version_labels(self, name: str) -> Mapping[str, int]: ...

    def version_states(self, name: str) -> list[ServableState]: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """TF Serving's ``ModelSpec``, transport-neutral. At most one of version / label.

    ``headers``: the request's REST headers or gRPC metadata (lower-case names), which a
    route's rules and segment key read; front ends fill it only for route names.
    """

    name: str
    version: int | None = None
    version_label: str | None = None
    signature_name: str = ""
    headers: Mapping[str, str] | None = None

    def request(self, labels: Callable[[str], Mapping[str, int]]) -> ServableRequest:
        if not self.name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        if self.version is not None:
            if self.version < 0:
                raise InvalidArgumentError(f"model version must be >= 0, got {self.version}")
            return ServableRequest.specific(self.name, self.version)
        if self.version_label:
            version = labels(self.name).get(self.version_label)
            if version is None:
                raise InvalidArgumentError(f"Unrecognized servable version label: {self.version_label}")
            return ServableRequest.specific(self.name, version)
        return ServableRequest.latest(self.name)


@dataclass(frozen=True, slots=True)
class PredictResult:
    """``inputs``: the decoded request tensors (kept for request logging; never modified)."""

    id: ServableId
    signature_name: str
    signature: SignatureSpec
    outputs: dict[str, Any]
    inputs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """Validated classify outputs (batch = number of examples); at most one of them is None."""

    id: ServableId
    signature_name: str
    classes: np.ndarray | None  # [batch, k] labels (object array of bytes, or str/bytes), or None
    scores: np.ndarray | None  # [batch, k] float, or None


@dataclass(frozen=True, slots=True)
class RegressResult:
    """Validated regress output (batch = number of examples)."""

    id: ServableId
    signature_name: str
    values: np.ndarray  # [batch] float


@dataclass(frozen=True, slots=True)
class MetadataResult:
    id: ServableId
    signature_def_map: Mapping[str, Any]  # name -> tensorflow SignatureDef proto


class DataPlane:
    """Predict, classify, regress, multi-inference, metadata and status over a core."""

    def __init__(
        self,
        core: ServingCore,
        router: Router | None = None,
        on_runtime: Callable[[str, str, float], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``on_runtime(model, api, seconds)``: the model call's own time of each predict,
        classify and regress (``api`` "Predict" / "Classify" / "Regress"; with batching it
        includes the wait for the batch), for ``:tensorflow:serving:runtime_latency``.
        ``tracing``: the OpenTelemetry tracing both front ends apply to every model request
        (:mod:`pyserving.server.tracing`); None: off."""
        self._core = core
        self._router = router
        self._on_runtime = on_runtime
        self._tracing = tracing

    @property
    def router(self) -> Router | None:
        return self._router

    @property
    def tracing(self) -> Tracing | None:
        """The request tracing of the front ends over this data plane (None: off)."""
        return self._tracing

    def batches(self, spec: ModelSpec) -> bool:
        """Whether ``spec`` resolves (now) to a version that queues runs (a batching servable),
        so :meth:`start_predict` applies. Cheap: one handle taken and given back; False for
        a route (its arms may differ) and for anything that does not resolve."""
        if self._router is not None and self._router.is_route(spec.name):
            return False
        try:
            with self._handle(spec) as handle:
                return _submits_runs(handle.servable)
        except ServingError:
            return False

    def is_route(self, name: str) -> bool:
        """Whether ``name`` is a route (front ends then pass the request's headers)."""
        return self._router is not None and self._router.is_route(name)

    # -- resolution -----------------------------------------------------------------

    def _handle(self, spec: ModelSpec) -> ServableHandle[Any]:
        return self._core.get_handle(spec.request(self._core.version_labels))

    def _choose(self, router: Router, spec: ModelSpec) -> RouteChoice:
        if spec.version is not None or spec.version_label:
            route = router.get_route(spec.name)
            models = ", ".join(sorted(route.model_names())) if route is not None else "its models"
            raise InvalidArgumentError(
                f"{spec.name} is a route: it chooses the model version itself; to ask for a version or "
                f"label, call one of its models ({models}) directly"
            )
        return router.choose(spec.name, spec.headers)

    def _serve(
        self,
        spec: ModelSpec,
        work: Callable[[ServableHandle[Any]], _R],
        shadow: Callable[[_R], Callable[[Any], object]] | None = None,
        counted: bool = True,
    ) -> _R:
        """``work(handle)`` on the version ``spec`` resolves to, directly or through a route
        (``counted``: statistics recorded; the shadow call ``shadow(result)`` mirrored)."""
        router = self._router
        if router is None or not router.is_route(spec.name):
            with self._handle(spec) as handle:
                return work(handle)
        choice = self._choose(router, spec)
        if not counted:
            with self._core.get_handle(choice.request) as handle:
                return work(handle)
        started = time.perf_counter()
        try:
            with self._core.get_handle(choice.request) as handle:
                result = work(handle)
        except BaseException as exc:
            router.record(choice, time.perf_counter() - started, exc)
            raise
        router.record(choice, time.perf_counter() - started)
        if choice.shadow is not None and shadow is not None:
            router.mirror(choice, shadow(result))
        return result

    @staticmethod
    def _inference(handle: ServableHandle[Any]) -> InferenceServable:
        servable = handle.servable
        kind = type(servable)
        runs = _RUNS_INFERENCE.get(kind)
        if runs is None:  # a runtime Protocol check costs microseconds: once per type
            runs = _RUNS_INFERENCE[kind] = isinstance(servable, InferenceServable)
        if not runs:
            raise FailedPreconditionError(
                f"Servable {handle.id} ({type(servable).__name__}) has no signatures to run"
            )
        return servable

    # -- predict --------------------------------------------------------------------

    def predict(
        self, spec: ModelSpec, decode: Decode, output_filter: Sequence[str] = (), deadline: float | None = None
    ) -> PredictResult:
        """Run a predict signature. ``decode(signature)`` yields the input arrays.

        ``deadline``: ``time.monotonic()`` value after which the request is not run any more
        (DEADLINE_EXCEEDED); None: no deadline. See the module docstring.
        """
        router = self._router
        if router is None or not router.is_route(spec.name):
            with self._handle(spec) as handle:
                return self._predict_on(handle, spec, decode, output_filter, deadline)
        decoded: list[Mapping[str, Any]] = []

        def keep(signature: SignatureSpec) -> Mapping[str, Any]:
            inputs = decode(signature)
            decoded.append(inputs)
            return inputs

        def shadow(result: PredictResult) -> Callable[[Any], object]:
            return lambda servable: servable.run(result.signature_name, decoded[0], tuple(output_filter))

        return self._serve(spec, lambda handle: self._predict_on(handle, spec, keep, output_filter, deadline), shadow)

    def start_predict(
        self, spec: ModelSpec, decode: Decode, output_filter: Sequence[str] = (), deadline: float | None = None
    ) -> PendingPredict | None:
        """:meth:`predict` without a waiting thread, when the version batches.

        If ``spec`` resolves to a version whose servable queues runs (``submit_run``: the
        batching servable), decode and check the request here, queue it, and return its
        :class:`PendingPredict` (answered on a batch thread). Otherwise return None at once,
        without decoding: call :meth:`predict` (on a worker thread) instead. Raises the
        request's error (resolution, decoding, checks, a full queue) at once.
        """
        router = self._router
        choice = None
        started = time.perf_counter()
        if router is not None and router.is_route(spec.name):
            choice = self._choose(router, spec)
            try:
                handle = self._core.get_handle(choice.request)
            except BaseException as exc:
                router.record(choice, time.perf_counter() - started, exc)
                raise
        else:
            handle = self._handle(spec)
        try:
            if not _submits_runs(handle.servable):
                handle.release()
                return None
            servable, name, signature, inputs = self._prepare_predict(handle, spec, decode, output_filter)
            if deadline is not None and time.monotonic() >= deadline:
                raise _not_run_in_time(handle)
            ticket = servable.submit_run(name, inputs, tuple(output_filter), deadline=deadline)  # type: ignore[attr-defined]
        except BaseException as exc:
            handle.release()
            if router is not None and choice is not None:
                router.record(choice, time.perf_counter() - started, exc)
            raise
        return PendingPredict(
            ticket, handle, name, signature, inputs, output_filter, router, choice, started, self._on_runtime
        )

    def _prepare_predict(
        self, handle: ServableHandle[Any], spec: ModelSpec, decode: Decode, output_filter: Sequence[str]
    ) -> tuple[InferenceServable, str, SignatureSpec, Mapping[str, Any]]:
        """TF Serving's order: the signature exists, then the inputs decode and match it."""
        servable = self._inference(handle)
        name = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise FailedPreconditionError(f'Serving signature key "{name}" not found.')
        inputs = decode(signature)
        check_inputs(signature, inputs)
        check_output_filter(signature, output_filter)
        return servable, name, signature, inputs

    def _predict_on(
        self,
        handle: ServableHandle[Any],
        spec: ModelSpec,
        decode: Decode,
        output_filter: Sequence[str],
        deadline: float | None,
    ) -> PredictResult:
        servable, name, signature, inputs = self._prepare_predict(handle, spec, decode, output_filter)
        on_runtime = self._on_runtime
        started = time.perf_counter() if on_runtime is not None else 0.0
        if deadline is None:
            outputs = servable.run(name, inputs, tuple(output_filter))
        elif time.monotonic() >= deadline:
            raise _not_run_in_time(handle)
        elif _takes_deadline(servable):
            outputs = servable.run(name, inputs, tuple(output_filter), deadline=deadline)  # type: ignore[call-arg]
        else:
            outputs = servable.run(name, inputs, tuple(output_filter))
        if on_runtime is not None:
            on_runtime(handle.id.name, "Predict", time.perf_counter() - started)
        return PredictResult(handle.id, name, signature, outputs, inputs)

    # -- classify / regress ------------------------------------------------------------

    def classify(self, spec: ModelSpec, examples: Sequence[bytes]) -> ClassifyResult:
        """Run a classify signature on serialized ``tf.Example`` records.

        The result's arrays passed :func:`check_classify_outputs`: ``classes`` is
        ``[len(examples), k]`` strings or None, ``scores`` ``[len(examples), k]`` float or None.
        """
        return self._serve(
            spec,
            lambda handle: self._classify(handle, self._inference(handle), spec, examples),
            lambda result: lambda servable: servable.classify(result.signature_name, list(examples)),
        )

    def regress(self, spec: ModelSpec, examples: Sequence[bytes]) -> RegressResult:
        """Run a regress signature on serialized ``tf.Example`` records.

        The result's ``values`` passed :func:`check_regress_output`: float, ``[len(examples)]``.
        """
        return self._serve(
            spec,
            lambda handle: self._regress(handle, self._inference(handle), spec, examples),
            lambda result: lambda servable: servable.regress(result.signature_name, list(examples)),
        )

    def multi_inference(
        self, tasks: Sequence[tuple[ModelSpec, str]], examples: Sequence[bytes]
    ) -> list[ClassifyResult | RegressResult]:
        """Several classify/regress signatures of one model on the same examples.

        Results come in task order, checked as :meth:`classify` and :meth:`regress` check them.
        """
        if not tasks:
            raise InvalidArgumentError("MultiInferenceRequest has no tasks")
        first = tasks[0][0]
        seen: set[str] = set()
        for spec, method in tasks:
            if spec.name != first.name:
                raise InvalidArgumentError(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            signature_name = spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in seen:
                raise InvalidArgumentError(f"Duplicate evaluation of signature: {signature_name}")
            seen.add(signature_name)
            if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise UnimplementedError(f"Unsupported signature method_name: {method}")

        def work(handle: ServableHandle[Any]) -> list[ClassifyResult | RegressResult]:
            servable = self._inference(handle)
            results: list[ClassifyResult | RegressResult] = []
            for spec, method in tasks:
                signature_name = spec.signature_name or DEFAULT_SIGNATURE
                if signature_name not in servable.signatures:
                    raise InvalidArgumentError(f"Requested signature not found in model graph: {signature_name}")
                if method == CLASSIFY_METHOD:
                    results.append(self._classify(handle, servable, spec, examples))
                else:
                    results.append(self._regress(handle, servable, spec, examples))
            return results

        def shadow(results: list[ClassifyResult | RegressResult]) -> Callable[[Any], object]:
            def mirror(servable: Any) -> None:
                for result in results:
                    method = servable.classify if isinstance(result, ClassifyResult) else servable.regress
                    method(result.signature_name, list(examples))

            return mirror

        return self._serve(first, work, shadow)

    def _classify(
        self, handle: ServableHandle[Any], servable: InferenceServable, spec: ModelSpec, examples: Sequence[bytes]
    ) -> ClassifyResult:
        name, classify = self._example_method(handle, servable, spec, examples, CLASSIFY_METHOD)
        started = time.perf_counter()
        outputs = classify(name, list(examples))
        if self._on_runtime is not None:
            self._on_runtime(handle.id.name, "Classify", time.perf_counter() - started)
        if not isinstance(outputs, Mapping):
            raise InternalError(
                f"Servable {handle.id} classify() returned {type(outputs).__name__}; "
                "expected a dict with 'classes' and/or 'scores'"
            )
        classes, scores = check_classify_outputs(outputs.get("classes"), outputs.get("scores"), len(examples))
        return ClassifyResult(handle.id, name, classes, scores)

    def _regress(
        self, handle: ServableHandle[Any], servable: InferenceServable, spec: ModelSpec, examples: Sequence[bytes]
    ) -> RegressResult:
        name, regress = self._example_method(handle, servable, spec, examples, REGRESS_METHOD)
        started = time.perf_counter()
        raw = regress(name, list(examples))
        if self._on_runtime is not None:
            self._on_runtime(handle.id.name, "Regress", time.perf_counter() - started)
        values = check_regress_output(raw, len(examples))
        return RegressResult(handle.id, name, values)

    @staticmethod
    def _example_method(
        handle: ServableHandle[Any],
        servable: InferenceServable,
        spec: ModelSpec,
        examples: Sequence[bytes],
        method: str,
    ) -> tuple[str, Callable[[str, list[bytes]], Any]]:
        """The resolved signature name and the servable's classify/regress method, after
        TF Serving's checks in its order: signature exists, method matches, input not empty."""
        name = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise InvalidArgumentError(f"No signature was found with the name: {name}")
        if signature.method_name != method:
            kind = "classification" if method == CLASSIFY_METHOD else "regression"
            raise InvalidArgumentError(
                f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
            )
        if not examples:
            raise InvalidArgumentError("Input is empty.")
        runner = getattr(servable, "classify" if method == CLASSIFY_METHOD else "regress", None)
        if runner is None:
            raise UnimplementedError(f"Servable {handle.id} does not support {method}")
        return name, runner

    # -- metadata and status ------------------------------------------------------------

    def metadata(self, spec: ModelSpec, fields: Sequence[str] = ("signature_def",)) -> MetadataResult:
        """The signature defs of the resolved version (``metadata_field`` = signature_def)."""
        if not fields:
            raise InvalidArgumentError("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != "signature_def":
                raise InvalidArgumentError(f"Metadata field {field} is not supported")
        return self._serve(spec, self._metadata_of, counted=False)

    def _metadata_of(self, handle: ServableHandle[Any]) -> MetadataResult:
        servable = handle.servable
        signature_defs = getattr(servable, "signature_def_map", None)
        if callable(signature_defs):
            defs = signature_defs()
        else:
            from pyserving.server.signature_defs import signature_defs_from_specs

            defs = signature_defs_from_specs(self._inference(handle).signatures)
        return MetadataResult(handle.id, defs)

    def status(self, spec: ModelSpec) -> list[ServableState]:
        """Every known version of the model, highest first (the label is ignored, as in TF Serving)."""
        if not spec.name:
            raise InvalidArgumentError("ModelSpec has no name specified.")
        router = self._router
        if router is not None and router.is_route(spec.name):
            request = self._choose(router, spec).request
            version = request.version
            if request.version_label:
                version = self._core.version_labels(request.name).get(request.version_label)
            spec = ModelSpec(request.name, version)
        states = self._core.version_states(spec.name)
        if spec.version is not None:
            states = [s for s in states if s.id.version == spec.version]
            if not states:
                raise NotFoundError(f"Could not find version {spec.version} of model {spec.name}")
        elif not states:
            raise NotFoundError(f"Could not find any versions of model {spec.name}")
        return sorted(states, key=lambda s: s.id.version, reverse=True)
