"""One JSON object -> a ``tf.Example`` proto, with TF Serving's rules (private to :mod:`rest_json`).

Follows ``json_tensor.cc``'s ``FillClassificationRequestFromJson``: every member of the
object is a feature whose value is one element or a list of elements of a single kind:
``bool`` / integers -> ``int64_list`` (integers above int64's maximum are refused), floats ->
``float_list`` (beyond float32's range is refused), strings and ``{"b64": ...}``
objects -> ``bytes_list``. An empty list gives a feature with no kind set.

Contract: :func:`fill_example` is safe from any thread for distinct ``example``
objects; it fills the proto the caller passes (and owns) and reads ``value`` without
keeping it. TensorFlow is not imported here: the caller supplies the proto. Errors are
:class:`InvalidArgumentError` (HTTP 400); on an error the proto is partly filled and
should be dropped.
"""

from __future__ import annotations

import math
from typing import Any

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server._json_floats import FLT_MAX
from pyserving.server._json_messages import json_type, lossy_error
from pyserving.server._json_values import b64decode, is_b64, utf8

__all__ = ["fill_example"]


def fill_example(value: Any, example: Any) -> Any:
    """Fill the empty ``tf.Example`` proto ``example`` from the JSON object ``value``; returns ``example``."""
    if type(value) is not dict:
        raise InvalidArgumentError(f"Example must be JSON object but got JSON {json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        kind, values = None, []
        for item in content if type(content) is list else (content,):
            item_kind = _feature_kind(name, item)
            if kind is not None and item_kind != kind:
                raise InvalidArgumentError(f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = item_kind
            values.append(_feature_value(name, item))
        feature = features[name]
        if kind is not None:
            getattr(feature, kind + "_list").value.extend(values)
    return example


def _feature_kind(name: str, item: Any) -> str:
    kind = type(item)
    if kind is bool or kind is int:
        return "int64"
    if kind is float:
        return "float"
    if kind is str or is_b64(item):
        return "bytes"
    raise InvalidArgumentError(f"Feature: {name} has element with unexpected JSON type: {json_type(item)}")


def _feature_value(name: str, item: Any) -> Any:
    kind = type(item)
    if kind is int and item > (1 << 63) - 1:
        raise InvalidArgumentError(f"Feature: {name} has uint64 element. Only int64 is supported.")
    if kind is float and math.isfinite(item) and abs(item) > FLT_MAX:
        raise lossy_error(item, "float")
    if kind is str:
        return utf8(item)
    if kind is dict:
        return b64decode(item)
    return int(item) if kind is bool else item
