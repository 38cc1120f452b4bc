"""From input columns to a signature's tensors, row by row validated: :func:`resolve_columns`,
:func:`to_tensors`.

Column mapping (``--columns``)
    None: every signature input reads the column of its own name. ``"col"``: the
    signature's only input reads ``col`` (refused when it has several). ``{"input": "col"}``
    (CLI ``input=col,input2=col2``): those inputs read those columns, the others their own
    name. Classify/regress signatures take serialized ``tf.Example``s: their one logical
    input is ``inputs`` (a TFRecord file's records, or a binary column of that name).

Conversion rules (one block of rows; every rule is applied per row, so one bad row never
spoils the others)
    * a row's value must be present (not null) and convertible to the input's dtype:
      numbers to any float type; integers, and floats holding whole numbers, to integer types
      within range; booleans only to bool; text/bytes only to DT_STRING (text is UTF-8
      encoded). Text in a numeric input is parsed (``"1.5"``, or a JSON list ``"[1, 2]"``):
      that is how CSV cells hold vectors;
    * its shape must match the input's shape without the batch dimension (a ``None``/-1
      dimension takes the first good row's size, so the rows of one call share a shape);
    * the input needs a batch dimension (rank >= 1) or an unknown rank.
    A row breaking a rule is *bad*: it is left out of the model call and reported with
    ``reason`` (``"input 'x': expected shape [784], got [783]"``).

Fast paths (no per-row Python): numpy arrays, Arrow numeric columns, Arrow lists / fixed-size
lists of numbers (one level) and Arrow binary/string columns for DT_STRING. Anything else
(nested lists, text to parse, JSON-parsed Python values) goes row by row.

Pure functions; safe from any thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pyserving.servable.errors import InvalidArgumentError
from pyserving.servable.signature import CLASSIFY_METHOD, REGRESS_METHOD, DType, SignatureSpec, TensorSpec
from pyserving.servable.validation import format_shape

__all__ = ["EXAMPLES_INPUT", "resolve_columns", "uses_examples", "Tensors", "to_tensors", "convert_column"]

#: The input name of classify/regress signatures (serialized tf.Examples).
EXAMPLES_INPUT = "inputs"


def uses_examples(method: str) -> bool:
    """True when the signature takes serialized tf.Examples (classify / regress)."""
    return method in (CLASSIFY_METHOD, REGRESS_METHOD)


def resolve_columns(signature: SignatureSpec, method: str, columns: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{signature input: input column}`` for ``columns`` (see the module docstring)."""
    names = [EXAMPLES_INPUT] if uses_examples(method) else list(signature.inputs)
    if not names:
        raise InvalidArgumentError("the signature has no inputs; there is nothing to feed from the input columns")
    if columns is None:
        mapping = {n: n for n in names}
    elif isinstance(columns, str):
        if len(names) != 1:
            raise InvalidArgumentError(
                f"--columns {columns!r} names one column, but the signature has {len(names)} inputs "
                f"({', '.join(names)}); use --columns input=column,... "
            )
        mapping = {names[0]: columns}
    else:
        unknown = [k for k in columns if k not in names]
        if unknown:
            raise InvalidArgumentError(
                f"--columns maps {', '.join(map(repr, unknown))}, which the signature does not take; its inputs: "
                f"{', '.join(names)}"
            )
        mapping = {n: columns.get(n, n) for n in names}
    if not uses_examples(method):
        for name in names:
            shape = signature.inputs[name].shape
            if shape is not None and len(shape) == 0:
                raise InvalidArgumentError(
                    f"input {name!r} is a scalar (shape []): batch scoring needs a batch dimension on every input"
                )
    return mapping


@dataclass
class Tensors:
    """One block converted: ``arrays`` holds only the good rows (input order kept); ``good``
    is the row mask over the block; ``reasons`` maps a bad row's offset in the block to why."""

    arrays: dict[str, np.ndarray]
    good: np.ndarray
    reasons: dict[int, str]


def to_tensors(columns: Mapping[str, Any], mapping: Mapping[str, str], specs: Mapping[str, TensorSpec],
               num_rows: int) -> Tensors:
    """Convert the mapped columns of one block (each a pyarrow Array, numpy array or list)."""
    good = np.ones(num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    full: dict[str, np.ndarray] = {}
    for name, column in mapping.items():
        values = columns.get(column)
        if values is None:
            for row in range(num_rows):
                reasons.setdefault(row, f"input {name!r}: the row has no column {column!r}")
            good[:] = False
            continue
        array, bad = convert_column(values, specs[name], name)
        for row, reason in bad.items():
            reasons.setdefault(row, reason)
            good[row] = False
        full[name] = array
    if good.all():
        return Tensors(full, good, reasons)
    return Tensors({n: a[good] for n, a in full.items()}, good, reasons)


def _target(spec: TensorSpec, name: str) -> np.dtype:
    try:
        return np.dtype(spec.dtype.numpy_name)
    except TypeError as exc:
        raise InvalidArgumentError(f"input {name!r} has dtype {spec.dtype.tf_name}, which batch scoring "
                                   "cannot build from columns") from exc


def _row_shape(spec: TensorSpec) -> tuple[int | None, ...] | None:
    if spec.shape is None:
        return None
    return tuple(None if d is None or d < 0 else d for d in spec.shape[1:])


def convert_column(values: Any, spec: TensorSpec, name: str) -> tuple[np.ndarray, dict[int, str]]:
    """``(array of every row, {bad row: reason})``; bad rows hold zeros in the array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    target = _target(spec, name)
    want = _row_shape(spec)
    if isinstance(values, np.ndarray):
        return _from_numpy(values, target, want, name)
    if isinstance(values, pa.Array):
        fast = _from_arrow(values, target, want, name)
        if fast is not None:
            return fast
        values = values.to_pylist()
    return _row_by_row(list(values), target, want, name)


def _shape_error(name: str, want: tuple[int | None, ...] | None, got: tuple[int, ...]) -> str | None:
    if want is None:
        return None
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
        return f"input {name!r}: expected shape {format_shape(want)} per row, got {format_shape(got)}"
    return None


def _cast(array: np.ndarray, target: np.dtype, name: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(cast array, mask of bad rows or None, reason)``; rows on axis 0."""
    kind = array.dtype.kind
    if target.kind == "O":
        if kind not in "OSU":
            return array, np.ones(len(array), bool), f"input {name!r}: expected text/bytes, got {array.dtype}"
        out = np.empty(array.shape, dtype=object)
        flat_in, flat_out = array.reshape(-1), out.reshape(-1)
        bad = np.zeros(array.size, dtype=bool)
        for i, v in enumerate(flat_in):
            if isinstance(v, str):
                flat_out[i] = v.encode("utf-8")
            elif isinstance(v, (bytes, np.bytes_)):
                flat_out[i] = bytes(v)
            else:
                bad[i] = True
        rows = bad.reshape(array.shape).reshape(len(array), -1).any(axis=1) if array.size else None
        return out, rows if rows is not None and rows.any() else None, f"input {name!r}: expected text/bytes"
    if kind in "OSU":
        return array, np.ones(len(array), bool), f"input {name!r}: expected numbers, got text"
    if target.kind == "b":
        if kind != "b":
            return array, np.ones(len(array), bool), f"input {name!r}: expected booleans, got {array.dtype}"
        return array, None, ""
    if kind not in "biuf":
        return array, np.ones(len(array), bool), f"input {name!r}: expected numbers, got {array.dtype}"
    if target.kind == "f" or kind == "b" or (kind in "iu" and np.can_cast(array.dtype, target)):
        return array.astype(target, copy=False), None, ""
    info = np.iinfo(target)
    flat = array.reshape(len(array), -1)
    with np.errstate(invalid="ignore"):
        ok = (flat >= info.min) & (flat <= info.max)
        if kind == "f":
            ok &= np.isfinite(flat) & (np.floor(flat) == flat)
    rows = ~ok.all(axis=1) if flat.size else np.zeros(len(array), bool)
    safe = np.where(ok, flat, 0).reshape(array.shape)
    reason = f"input {name!r}: value is not a whole number within the range of {target}"
    return safe.astype(target), rows if rows.any() else None, reason


def _from_numpy(array: np.ndarray, target: np.dtype, want: tuple[int | None, ...] | None,
                name: str) -> tuple[np.ndarray, dict[int, str]]:
    n = len(array)
    error = _shape_error(name, want, tuple(array.shape[1:]))
    if error is not None:
        return np.zeros((n,), target), {i: error for i in range(n)}
    out, bad, reason = _cast(array, target, name)
    return out, ({} if bad is None else {int(i): reason for i in np.flatnonzero(bad)})


_NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)


def _is_numeric(type_: pa.DataType) -> bool:
    return any(check(type_) for check in _NUMERIC)


def _from_arrow(array: pa.Array, target: np.dtype, want: tuple[int | None, ...] | None,
                name: str) -> tuple[np.ndarray, dict[int, str]] | None:
    """The vectorized conversion, or None when the column needs the row-by-row path."""
    type_, n = array.type, len(array)
    if (pa.types.is_string(type_) or pa.types.is_large_string(type_)) and target.kind in "iuf" and want in (None, ()):
        try:  # CSV cells read as text: one vectorized parse, row by row only when it fails
            array, type_ = pc.cast(array, pa.float64() if target.kind == "f" else pa.int64()), pa.float64()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    nulls = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
    if _is_numeric(type_) or ((pa.types.is_string(type_) or pa.types.is_binary(type_)
                               or pa.types.is_large_string(type_) or pa.types.is_large_binary(type_))
                              and target.kind == "O"):
        if want not in (None, ()):
            return None  # a scalar column for a vector input: row by row says which rows
        filled = array.fill_null(False if pa.types.is_boolean(type_) else (0 if _is_numeric(type_) else b""))
        out, bad = _from_numpy(filled.to_numpy(zero_copy_only=False), target, (), name)
        return out, _with_nulls(bad, nulls, name)
    is_list = pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_)
    if not is_list or not _is_numeric(type_.value_type) or (want is not None and len(want) != 1):
        return None
    lengths = pc.list_value_length(array).fill_null(-1).to_numpy(zero_copy_only=False)
    ok = lengths >= 0
    size = want[0] if want is not None else None
    if size is None:
        present = lengths[ok]
        size = int(present[0]) if len(present) else 0
    ok &= lengths == size
    chosen = array if ok.all() else array.filter(pa.array(ok))
    flat = chosen.flatten()
    if flat.null_count:
        return None
    values = flat.to_numpy(zero_copy_only=False).reshape(len(chosen), size)
    converted, bad_cast, reason = _cast(values, target, name)
    if ok.all():
        out = converted
    else:
        out = np.zeros((n, size), dtype=converted.dtype)
        out[ok] = converted
    bad: dict[int, str] = {}
    for i in np.flatnonzero(~ok):
        bad[int(i)] = (f"input {name!r}: value is missing (null)" if lengths[i] < 0 else
                       f"input {name!r}: expected shape {format_shape((size,))} per row, got [{int(lengths[i])}]")
    if bad_cast is not None:
        for i in np.flatnonzero(ok)[bad_cast]:
            bad[int(i)] = reason
    return out, bad


def _with_nulls(bad: dict[int, str], nulls: np.ndarray | None, name: str) -> dict[int, str]:
    if nulls is not None:
        for i in np.flatnonzero(nulls):
            bad[int(i)] = f"input {name!r}: value is missing (null)"
    return bad


def _parse_text(value: str) -> Any:
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return float(text) if any(c in text for c in ".eEnN") else int(text)


def _row_by_row(values: list[Any], target: np.dtype, want: tuple[int | None, ...] | None,
                name: str) -> tuple[np.ndarray, dict[int, str]]:
    bad: dict[int, str] = {}
    rows: list[np.ndarray | None] = []
    shape: tuple[int, ...] | None = None
    for i, value in enumerate(values):
        try:
            if value is None:
                raise ValueError("value is missing (null)")
            if isinstance(value, str) and target.kind != "O":
                try:
                    value = _parse_text(value)
                except ValueError as exc:
                    raise ValueError(f"cannot parse {value[:40]!r} as a number or a JSON list") from exc
            row = np.asarray(value, dtype=object if target.kind == "O" else None)
            if row.dtype.kind == "O" and target.kind != "O":
                raise ValueError("value is not a regular (rectangular) array of numbers")
        except (ValueError, TypeError) as exc:
            bad[i] = f"input {name!r}: {exc}"
            rows.append(None)
            continue
        expected = want if want is not None and all(d is not None for d in want) else (shape or want)
        error = _shape_error(name, expected, row.shape)
        if error is None:
            cast, row_bad, reason = _cast(row[None, ...], target, name)
            if row_bad is not None:
                error = reason
        if error is not None:
            bad[i] = error
            rows.append(None)
            continue
        shape = shape or row.shape
        rows.append(cast[0])
    row_shape = shape if shape is not None else tuple(d or 0 for d in (want or ()))
    out = np.zeros((len(values), *row_shape), dtype=target)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return out, bad


def example_spec() -> TensorSpec:
    """The spec of a serialized tf.Example column (``DT_STRING [-1]``)."""
    return TensorSpec(DType.STRING, (None,))
