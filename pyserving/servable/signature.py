"""What a model servable offers to the servers: signatures of named, typed tensors.

The servers (gRPC and REST alike) serve any servable that satisfies
:class:`InferenceServable` — the TensorFlow SavedModel servable does, and so can a user's
own Python servable. Tensors cross this boundary as numpy arrays (string tensors as
``object`` arrays of ``bytes``); nothing here imports numpy or TensorFlow at import time.

:class:`DType` values equal TensorFlow's ``DataType`` enum numbers, so the servers convert
to and from ``TensorProto.dtype`` without importing TensorFlow.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "DType",
    "TensorSpec",
    "SignatureSpec",
    "InferenceServable",
    "PREDICT_METHOD",
    "CLASSIFY_METHOD",
    "REGRESS_METHOD",
    "DEFAULT_SIGNATURE",
]

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"


class DType(enum.IntEnum):
    """Tensor element types; values are TensorFlow's ``DataType`` numbers."""

    FLOAT = 1
    DOUBLE = 2
    INT32 = 3
    UINT8 = 4
    INT16 = 5
    INT8 = 6
    STRING = 7
    COMPLEX64 = 8
    INT64 = 9
    BOOL = 10
    BFLOAT16 = 14
    UINT16 = 17
    COMPLEX128 = 18
    HALF = 19
    UINT32 = 22
    UINT64 = 23

    @property
    def tf_name(self) -> str:
        """``DT_FLOAT``-style name used in metadata and error messages."""
        return "DT_" + self.name

    @property
    def numpy_name(self) -> str:
        """The numpy dtype name (``object`` for strings, ``bfloat16`` needs ml_dtypes)."""
        return _NUMPY_NAMES[self]

    @classmethod
    def from_numpy(cls, dtype: Any) -> DType:
        """The DType of a numpy dtype (``object``/bytes/str kinds map to STRING)."""
        cached = _FROM_NUMPY.get(dtype)
        if cached is not None:
            return cached
        import numpy as np

        dt = np.dtype(dtype)
        if dt.kind in ("O", "S", "U"):
            member = cls.STRING
        else:
            for member, name in _NUMPY_NAMES.items():
                if name == dt.name:
                    break
            else:
                raise ValueError(f"no tensor type for numpy dtype {dt}")
        try:
            _FROM_NUMPY[dtype] = member
        except TypeError:  # an unhashable dtype spec: just do not cache it
            pass
        return member


#: numpy dtype (or dtype spec) -> DType, filled on first use; the request path hits it per tensor.
_FROM_NUMPY: dict[object, DType] = {}

_NUMPY_NAMES: dict[DType, str] = {
    DType.FLOAT: "float32",
    DType.DOUBLE: "float64",
    DType.INT32: "int32",
    DType.UINT8: "uint8",
    DType.INT16: "int16",
    DType.INT8: "int8",
    DType.STRING: "object",
    DType.COMPLEX64: "complex64",
    DType.INT64: "int64",
    DType.BOOL: "bool",
    DType.BFLOAT16: "bfloat16",
    DType.UINT16: "uint16",
    DType.COMPLEX128: "complex128",
    DType.HALF: "float16",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature.

    ``shape`` is ``None`` for unknown rank; a ``None``/``-1`` dimension is unknown (the
    batch dimension usually is). ``tensor_name`` is the graph tensor name (``x:0``) shown
    in metadata; empty when the servable has none.
    """

    dtype: DType
    shape: tuple[int | None, ...] | None = None
    tensor_name: str = ""


@dataclass(frozen=True, slots=True)
class SignatureSpec:
    """A named computation: its method name and its named inputs and outputs."""

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = PREDICT_METHOD
    defaults: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class InferenceServable(Protocol):
    """What the servers need from a servable to answer predict / classify / regress.

    ``run`` is called concurrently from many request threads and must be thread-safe. It
    receives arrays whose dtypes and shapes the server already checked against
    ``signatures[signature_name].inputs`` and returns one array per requested output
    (all outputs when ``output_filter`` is empty). It raises ``ServingError`` for bad
    input it detects itself; any other exception is reported as INTERNAL.

    Optional extension (not part of the protocol check): servables that support the
    classify / regress APIs implement, with the same threading and error rules as ``run``,

    * ``classify(signature_name, serialized_examples) -> {"classes": ..., "scores": ...}``:
      a dict with either key or both (a missing key = the signature has no such output),
      ``classes`` ``[N, K]`` string labels and ``scores`` ``[N, K]`` floats, where N is
      ``len(serialized_examples)``;
    * ``regress(signature_name, serialized_examples) -> array``: ``[N]`` (or ``[N, 1]``)
      floats.

    ``serialized_examples`` is a non-empty list of serialized ``tf.Example`` records and
    ``signature_name`` names a signature whose ``method_name`` is ``CLASSIFY_METHOD`` /
    ``REGRESS_METHOD``; the server has checked both. The server checks the returned
    shapes and types with ``pyserving.servable.validation.check_classify_outputs`` /
    ``check_regress_output``.
    """

    @property
    def signatures(self) -> Mapping[str, SignatureSpec]: ...

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]: ...
