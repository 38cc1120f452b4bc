"""The tensor side of batching: which requests may share a call, concatenation and splitting.

Implementation module of :mod:`pyserving.loaders.batching` (pure numpy functions; no
TensorFlow, no state, thread-safe). TF Serving's ``BatchingSession`` rules:

* a request is batchable when every input is an array of rank >= 1 and all inputs have the
  same size of dimension 0 (its rows); others run alone;
* requests share a batch only with the same output filter and, per input, the same dtype
  and the same non-batch shape — or the same rank when ``pad_variable_length_inputs``, in
  which case every non-batch dimension is padded to the largest in the batch with the
  first element of that request's tensor (TF Serving's padding value);
* rows added to reach an allowed batch size repeat the batch's first row, and are sliced
  off the outputs again; every output must have the batch's rows in dimension 0.

Arrays handed in are never modified; outputs handed back are row slices (views) of the
batch's outputs, so the batch's arrays live as long as one caller keeps its slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

from pyserving.servable.errors import FailedPreconditionError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["batch_key", "concat_inputs", "split_outputs", "merge_outputs", "rows_of"]

Inputs = Mapping[str, "np.ndarray"]


def _dtype_key(array: np.ndarray) -> str:
    # bytes / str arrays of different item sizes concatenate fine: only the kind matters.
    kind = array.dtype.kind
    return kind if kind in "SU" else array.dtype.str


def rows_of(inputs: Mapping[str, Any]) -> int | None:
    """The common dim-0 size of ``inputs``; None when they cannot be batched."""
    import numpy as np

    rows = None
    for array in inputs.values():
        if type(array) is not np.ndarray or array.ndim == 0:
            return None
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            return None
    return rows


def batch_key(inputs: Inputs, output_filter: Sequence[str], pad_variable_length: bool) -> Hashable:
    """What must be equal for two requests to share one call (see the module docstring)."""
    layout = tuple(
        (name, _dtype_key(array), array.ndim if pad_variable_length else array.shape[1:])
        for name, array in sorted(inputs.items())
    )
    return (tuple(output_filter), layout)


def _pad_value(array: np.ndarray) -> Any:
    import numpy as np

    if array.size:
        return array.flat[0]
    return b"" if array.dtype.kind in "OS" else "" if array.dtype.kind == "U" else np.zeros((), array.dtype)[()]


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` grown to ``shape`` in its non-batch dimensions (a new array), or itself."""
    import numpy as np

    if array.shape[1:] == shape:
        return array
    padded = np.full((array.shape[0], *shape), _pad_value(array), dtype=array.dtype)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


def concat_inputs(
    parts: Sequence[tuple[Inputs, int, int]], padded_rows: int, pad_variable_length: bool
) -> dict[str, np.ndarray]:
    """One batch from ``(inputs, offset, size)`` parts: rows ``[offset, offset + size)`` of
    each, in order, then copies of the first row up to ``padded_rows`` rows."""
    import numpy as np

    names = list(parts[0][0])
    rows = sum(size for _, _, size in parts)
    batch: dict[str, np.ndarray] = {}
    for name in names:
        pieces = [inputs[name][offset : offset + size] for inputs, offset, size in parts]
        if pad_variable_length:
            shape = tuple(max(dims) for dims in zip(*(piece.shape[1:] for piece in pieces)))
            pieces = [_pad_to(piece, shape) for piece in pieces]
        if padded_rows > rows:
            first = pieces[0][:1]
            pieces.append(np.repeat(first, padded_rows - rows, axis=0))
        batch[name] = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
    return batch


def split_outputs(outputs: Mapping[str, Any], sizes: Sequence[int], padded_rows: int) -> list[dict[str, np.ndarray]]:
    """Each part's rows of a batch's ``outputs``, in order (padding rows dropped).

    FAILED_PRECONDITION (TF Serving's messages) when an output is a scalar or its dimension
    0 is not the batch's rows: such a model cannot be batched.
    """
    import numpy as np

    arrays = {}
    for alias, value in outputs.items():
        array = value if type(value) is np.ndarray else np.asarray(value)
        if array.ndim == 0:
            raise FailedPreconditionError(f"Batched output tensor has 0 dimensions (output '{alias}')")
        if array.shape[0] != padded_rows:
            raise FailedPreconditionError(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes "
                f"of the input tensors (output '{alias}': {array.shape[0]} rows, the batch has {padded_rows})"
            )
        arrays[alias] = array
    if len(sizes) == 1 and sizes[0] == padded_rows:
        return [arrays]
    result = []
    offset = 0
    for size in sizes:
        result.append({alias: array[offset : offset + size] for alias, array in arrays.items()})
        offset += size
    return result


def merge_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A split request's answer: its parts' outputs concatenated on dimension 0, in order.

    Parts that ran in differently padded batches (``pad_variable_length_inputs``) may differ
    in their non-batch dimensions; they are padded to the largest first.
    """
    import numpy as np

    merged = {}
    for alias in parts[0]:
        pieces = [part[alias] for part in parts]
        if len({piece.shape[1:] for piece in pieces}) > 1 and len({piece.ndim for piece in pieces}) == 1:
            shape = tuple(max(dims) for dims in zip(*(piece.shape[1:] for piece in pieces)))
            pieces = [_pad_to(piece, shape) for piece in pieces]
        merged[alias] = np.concatenate(pieces, axis=0)
    return merged
