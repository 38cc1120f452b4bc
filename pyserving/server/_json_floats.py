"""TF Serving's JSON text for float32 / float64 numbers (private to :mod:`rest_json`).

The text is TF's ``WriteDecimal``: ``%g`` when that reads back to exactly the same value
(as a float32 for float32 tensors), else 9 (float) / 17 (double) significant digits;
``.0`` appended to whole numbers; bare ``NaN`` / ``Infinity`` / ``-Infinity``.
:func:`write_decimal` formats one number; :func:`float_texts` formats whole arrays with
the same result, vectorized for arrays over :data:`SMALL` values.

Contract: pure functions over their arguments, safe from any thread; the arrays passed
in are read, never modified or kept. Nothing here raises for any float input (callers
pass only float32 or native-byte-order float64 arrays to :func:`float_texts`).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

__all__ = ["FLT_MAX", "SMALL", "is_float32", "write_decimal", "float_texts", "float_tokens"]

#: The largest finite float32.
FLT_MAX = float(np.finfo(np.float32).max)
#: Tensors up to this many values skip the vectorized paths (fixed cost ~10 us); shared
#: by the JSON -> numpy conversion in ``_json_values``.
SMALL = 16
_FLOAT32 = struct.Struct("f")


def is_float32(value: float) -> bool:
    """Whether ``value`` is exactly representable as a float32 (NaN: False)."""
    return abs(value) <= FLT_MAX and _FLOAT32.unpack(_FLOAT32.pack(value))[0] == value


def write_decimal(value: float, single: bool) -> str:
    """TF's WriteDecimal for one float (``single``: the value is a float32)."""
    if not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    text = "%g" % value
    if not _reads_back(text, value, single):
        text = ("%.9g" if single else "%.17g") % value
    return text if "." in text or "e" in text else text + ".0"


def _reads_back(text: str, value: float, single: bool) -> bool:
    back = float(text)
    if single:
        if abs(back) > FLT_MAX:
            return False
        back = _FLOAT32.unpack(_FLOAT32.pack(back))[0]
    return back == value


_SPECS = {
    np.dtype(np.float32): np.array(["%g", "%g.0", "%.9g", "%.9g.0", "%.0sNaN", "%.0sInfinity", "%.0s-Infinity"]),
    np.dtype(np.float64): np.array(["%g", "%g.0", "%.17g", "%.17g.0", "%.0sNaN", "%.0sInfinity", "%.0s-Infinity"]),
}


def _float_specs(flat: np.ndarray) -> np.ndarray:
    """Per element, the printf spec giving TF's WriteDecimal text (see the module doc)."""
    digits_limit = 1e9 if flat.dtype == np.float32 else 1e17
    with np.errstate(all="ignore"):
        magnitude = np.abs(flat).astype(np.float64)
        exponent = np.floor(np.log10(magnitude))
        shift = 5.0 - exponent  # scale to six integer digits, in exact powers of ten
        power = 10.0 ** np.abs(shift)
        up = shift >= 0
        rounded = np.round(np.where(up, magnitude * power, magnitude / power))
        back = np.where(up, rounded / power, rounded * power).astype(flat.dtype)
        six = (back == np.abs(flat)) | (magnitude == 0)
        whole = flat == np.trunc(flat)
        code = np.where(six, 0, 2) + (whole & (magnitude < np.where(six, 1e6, digits_limit)))
        finite = np.isfinite(flat)
        unsure = finite & (magnitude != 0) & (np.abs(shift) > 22)  # inexact powers: check exactly
    for index in np.flatnonzero(unsure):
        value = float(flat[index])
        same = _reads_back("%g" % value, value, flat.dtype == np.float32)
        code[index] = (0 if same else 2) + (value.is_integer() and abs(value) < (1e6 if same else digits_limit))
    if not finite.all():
        code[np.isnan(flat)] = 4
        code[flat == np.inf] = 5
        code[flat == -np.inf] = 6
    return _SPECS[flat.dtype][code]


def _nest(node: Any) -> str:
    if type(node) is str:
        return node
    if node and type(node[0]) is str:
        return "[" + ",".join(node) + "]"
    return "[" + ",".join(map(_nest, node)) + "]"


def float_texts(array: np.ndarray, depth: int) -> list[str]:
    """JSON texts of the sub-arrays ``array[i, j, ...]`` indexed ``depth`` levels deep."""
    flat = array.ravel()
    small = flat.size <= SMALL
    if small:  # the numbers' texts themselves
        atoms = np.empty(flat.size, dtype=object)
        atoms[:] = [write_decimal(v, flat.dtype == np.float32) for v in flat.tolist()]
    else:  # printf specs, filled in by one % below
        atoms = _float_specs(flat)
    nodes = atoms.reshape((-1, *array.shape[depth:]) if depth else array.shape).tolist()
    pieces = [_nest(node) for node in nodes] if depth else [_nest(nodes)]
    if small or not pieces:
        return pieces
    return ("\x00".join(pieces) % tuple(flat.tolist())).split("\x00")


def float_tokens(flat: np.ndarray) -> list[str]:
    """One JSON text per value of the 1-D ``flat``."""
    return float_texts(flat, 1) if flat.size else []
