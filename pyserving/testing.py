"""Test helpers for pyserving and for users' own tests.

* :class:`FakeLoader`, :class:`FakeSource` (with :class:`FakeServable`): drive a manager.
* :class:`StaticServingCore`: the ``ServingCore`` a ``pyserving.server.data_plane.DataPlane``
  needs, over a fixed set of servables and without a manager; it counts the handles it
  hands out so a test can check that every request released its handle.
* :class:`HalfPlusTwoServable`: TF Serving's ``half_plus_two`` test model
  (``y = 0.5 * x + 2``) as a numpy ``InferenceServable``, extensible with test signatures.

All are real implementations of the public interfaces, with knobs for the situations a
test needs (a load that fails, a slow load, counting live instances); no mocks.

Importing this module imports neither TensorFlow, gRPC nor the servers (numpy and
TensorFlow's ``tf.Example`` proto are imported inside the methods that need them), and it
does not import ``pyserving.server``: :class:`StaticServingCore` satisfies the server's
``ServingCore`` protocol structurally.
"""

from __future__ import annotations

import functools
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pyserving.loaders.loader import Loader, Resources
from pyserving.servable.data import ServableData
from pyserving.servable.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ServingError,
    UnimplementedError,
)
from pyserving.servable.handle import ServableHandle
from pyserving.servable.ids import RequestKind, ServableId, ServableRequest
from pyserving.servable.signature import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    DType,
    SignatureSpec,
    TensorSpec,
)
from pyserving.servable.state import ManagerState, ServableState
from pyserving.sources.source import AspiredVersionsCallback, Source

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["FakeLoader", "FakeSource", "FakeServable", "StaticServingCore", "HalfPlusTwoServable"]


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


class StaticServingCore:
    """A ``ServingCore`` for ``pyserving.server.data_plane.DataPlane`` without a manager.

    * ``servables``: ``{ServableId: servable}``, fixed at construction; every id is
      handed out as if AVAILABLE.
    * ``labels``: ``{name: {label: version}}``. A label may name a version that is not in
      ``servables`` (a request through it is then NOT_FOUND, as with a stale label).
    * ``states``: ``{name: [ServableState, ...]}``, returned verbatim (as a new list) by
      :meth:`version_states`; a name absent here reports one AVAILABLE state per version
      in ``servables``, lowest version first.

    :meth:`get_handle` resolves like the manager: ``Latest`` = highest version,
    ``Earliest`` = lowest, ``Specific`` = exactly that version, ``Label`` = the version the
    label names; a miss raises ``NotFoundError("Servable not found for request: <request>")``
    and an unknown label ``InvalidArgumentError("Unrecognized servable version label: <label>")``.

    Handles: the core keeps a reference to every handle it handed out until that handle
    is released, so a forgotten handle cannot be quietly released by garbage collection
    before the test looks; :meth:`held_handles` lists those not yet released and
    :meth:`handles_handed_out` counts all of them.

    Threading: every method may be called from many threads at once (the servers do).
    """

    def __init__(
        self,
        servables: Mapping[ServableId, Any],
        *,
        labels: Mapping[str, Mapping[str, int]] | None = None,
        states: Mapping[str, Sequence[ServableState]] | None = None,
    ) -> None:
        for servable_id in servables:
            if not isinstance(servable_id, ServableId):
                raise InvalidArgumentError(f"servables keys must be ServableId, got {servable_id!r}")
        for name, name_states in (states or {}).items():
            for state in name_states:
                if not isinstance(state, ServableState) or state.id.name != name:
                    raise InvalidArgumentError(f"states[{name!r}] must hold ServableStates of {name!r}, got {state!r}")
        self._servables: Mapping[ServableId, Any] = MappingProxyType(dict(servables))
        versions: dict[str, list[int]] = {}
        for servable_id in sorted(self._servables):
            versions.setdefault(servable_id.name, []).append(servable_id.version)
        self._versions = {name: tuple(found) for name, found in versions.items()}
        self._labels = {name: dict(name_labels) for name, name_labels in (labels or {}).items()}
        self._states = {name: tuple(name_states) for name, name_states in (states or {}).items()}
        self._lock = threading.Lock()  # guards _held and _handed_out
        self._held: dict[object, ServableHandle[Any]] = {}
        self._handed_out = 0

    @property
    def servables(self) -> Mapping[ServableId, Any]:
        return self._servables  # read-only

    def servable(self, name: str, version: int) -> Any:
        """The servable object of ``name`` version ``version`` (``KeyError`` if absent)."""
        return self._servables[ServableId(name, version)]

    # -- ServingCore -------------------------------------------------------------------

    def get_handle(self, request: ServableRequest) -> ServableHandle[Any]:
        versions = self._versions.get(request.name, ())
        if request.kind is RequestKind.LATEST:
            version: int | None = versions[-1] if versions else None
        elif request.kind is RequestKind.EARLIEST:
            version = versions[0] if versions else None
        elif request.kind is RequestKind.SPECIFIC:
            version = request.version if request.version in versions else None
        else:
            labelled = self._labels.get(request.name, {}).get(request.version_label or "")
            if labelled is None:
                raise InvalidArgumentError(f"Unrecognized servable version label: {request.version_label}")
            version = labelled if labelled in versions else None
        if version is None:
            raise NotFoundError(f"Servable not found for request: {request}")
        servable_id = ServableId(request.name, version)
        token = object()
        handle = ServableHandle(servable_id, self._servables[servable_id], functools.partial(self._release, token))
        with self._lock:
            self._held[token] = handle
            self._handed_out += 1
        return handle

    def version_labels(self, name: str) -> Mapping[str, int]:
        return dict(self._labels.get(name, {}))

    def version_states(self, name: str) -> list[ServableState]:
        if name in self._states:
            return list(self._states[name])
        return [ServableState(ServableId(name, v), ManagerState.AVAILABLE) for v in self._versions.get(name, ())]

    # -- handle accounting -------------------------------------------------------------

    def _release(self, token: object) -> None:
        with self._lock:
            self._held.pop(token, None)

    def held_handles(self) -> list[ServableHandle[Any]]:
        """The handles handed out and not yet released, oldest first (a snapshot)."""
        with self._lock:
            return list(self._held.values())

    def handles_handed_out(self) -> int:
        """How many handles :meth:`get_handle` has returned in total."""
        with self._lock:
            return self._handed_out


#: The input of every classify / regress signature: a vector of serialized tf.Examples.
_EXAMPLE_INPUTS = {"inputs": TensorSpec(DType.STRING, (None,))}


class HalfPlusTwoServable:
    """``y = 0.5 * x + offset`` in numpy: TF Serving's ``half_plus_two`` test model (offset 2;
    offset 3 is its ``half_plus_three``), an ``InferenceServable`` that needs no SavedModel.

    Signatures (float tensors named ``x:0`` / ``y:0`` as in the SavedModel)::

        serving_default             predict   {"x": [N]} -> {"y": [N]}
        classify_x_to_y             classify  tf.Examples -> scores [N, 1] = y of feature "x"
        regress_x_to_y              regress   tf.Examples -> [N] = y of feature "x"
        tensorflow/serving/regress  regress   the same as regress_x_to_y

    ``x_shape`` is the shape of ``x`` and ``y`` in ``serving_default`` (``None`` = unknown
    rank, so any shape is served). ``calls`` lists the signature names :meth:`run` was
    called with, in call order.

    Extending: pass ``extra_signatures`` and override :meth:`compute` (predict),
    :meth:`classify` or :meth:`regress` for those names, deferring to ``super()`` for the
    others; :meth:`run` applies the output filter to whatever :meth:`compute` returns.

    Threading: ``run``, ``classify`` and ``regress`` are safe to call from many threads.
    Errors: a signature this class declares but does not compute raises ``UnimplementedError``;
    an example without feature ``x`` raises ``InvalidArgumentError``. Classify and regress
    import TensorFlow's ``tf.Example`` proto on first use.
    """

    def __init__(
        self,
        offset: float = 2.0,
        *,
        x_shape: tuple[int | None, ...] | None = (None,),
        extra_signatures: Mapping[str, SignatureSpec] | None = None,
    ) -> None:
        self.offset = offset
        vector = TensorSpec(DType.FLOAT, (None,))
        self._signatures: dict[str, SignatureSpec] = {
            DEFAULT_SIGNATURE: SignatureSpec(
                {"x": TensorSpec(DType.FLOAT, x_shape, "x:0")}, {"y": TensorSpec(DType.FLOAT, x_shape, "y:0")}
            ),
            "classify_x_to_y": SignatureSpec(
                _EXAMPLE_INPUTS, {"scores": TensorSpec(DType.FLOAT, (None, 1))}, method_name=CLASSIFY_METHOD
            ),
            "regress_x_to_y": SignatureSpec(_EXAMPLE_INPUTS, {"outputs": vector}, method_name=REGRESS_METHOD),
            REGRESS_METHOD: SignatureSpec(_EXAMPLE_INPUTS, {"outputs": vector}, method_name=REGRESS_METHOD),
        }
        self._signatures.update(extra_signatures or {})
        self._lock = threading.Lock()  # guards calls
        self.calls: list[str] = []

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]:
        return self._signatures

    def half_plus(self, x: np.ndarray) -> np.ndarray:
        """``0.5 * x + offset`` as float32."""
        return (0.5 * x + self.offset).astype("float32")

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append(signature_name)
        outputs = self.compute(signature_name, inputs)
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}

    def compute(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output of predict signature ``signature_name`` (``run`` filters them)."""
        if signature_name == DEFAULT_SIGNATURE:
            return {"y": self.half_plus(inputs["x"])}
        raise UnimplementedError(f"HalfPlusTwoServable does not compute predict signature {signature_name!r}")

    def classify(self, signature_name: str, examples: Sequence[bytes]) -> dict[str, np.ndarray]:
        if signature_name == "classify_x_to_y":
            return {"scores": self.half_plus(self.feature_values(examples, "x")).reshape(-1, 1)}
        raise UnimplementedError(f"HalfPlusTwoServable does not compute classify signature {signature_name!r}")

    def regress(self, signature_name: str, examples: Sequence[bytes]) -> np.ndarray:
        if signature_name in ("regress_x_to_y", REGRESS_METHOD):
            return self.half_plus(self.feature_values(examples, "x"))
        raise UnimplementedError(f"HalfPlusTwoServable does not compute regress signature {signature_name!r}")

    @staticmethod
    def feature_values(examples: Sequence[bytes], name: str, default: float | None = None) -> np.ndarray:
        """The first value of feature ``name`` (float or int64 list) of each serialized
        ``tf.Example``, as float32 ``[len(examples)]``; ``default`` where it is missing."""
        import numpy as np
        from tensorflow.core.example import example_pb2

        values: list[float] = []
        for index, record in enumerate(examples):
            feature = example_pb2.Example.FromString(record).features.feature.get(name)
            found = (feature.float_list.value or feature.int64_list.value) if feature is not None else None
            if found:
                values.append(float(found[0]))
            elif default is not None:
                values.append(default)
            else:
                raise InvalidArgumentError(f"example {index} has no feature {name!r} and no default was given")
        return np.array(values, dtype=np.float32)
