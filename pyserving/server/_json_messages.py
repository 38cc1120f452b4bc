"""TF Serving's wording for REST JSON errors (private to :mod:`rest_json`).

:func:`dump` prints a JSON value the way rapidjson's pretty writer does (4-space indent,
TF's float text), cut at 256 characters with ``...``, for use inside messages; the other
functions build TF's exact message texts and error objects.

Contract: pure functions, safe from any thread; values passed in are read, never kept.
The ``*_error`` functions return an :class:`InvalidArgumentError` for the caller to
raise; nothing here raises.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from pyserving.servable.errors import InvalidArgumentError, ServingError
from pyserving.servable.signature import DType
from pyserving.server._json_floats import is_float32, write_decimal

__all__ = ["dump", "json_type", "type_error", "lossy_error", "status_text", "shape_text"]

_DUMP_LIMIT = 256
_JSON_TYPE = {type(None): "Null", dict: "Object", list: "Array", str: "String", int: "Number", float: "Number"}


class _DumpFull(Exception):
    pass


def dump(value: Any) -> str:
    """rapidjson's pretty print of a value (for messages), cut at 256 characters."""
    parts: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > _DUMP_LIMIT:
            raise _DumpFull

    def walk(node: Any, indent: int) -> None:
        if type(node) is float:
            return emit(write_decimal(node, is_float32(node)))
        if not isinstance(node, (list, dict)) or not node:
            return emit(json.dumps(node, ensure_ascii=False))
        emit("[\n" if type(node) is list else "{\n")
        pad = " " * (indent + 4)
        for i, item in enumerate(node.items() if type(node) is dict else node):
            emit(",\n" + pad if i else pad)
            if type(node) is dict:
                emit(json.dumps(item[0], ensure_ascii=False) + ": ")
                item = item[1]
            walk(item, indent + 4)
        emit("\n" + " " * indent + ("]" if type(node) is list else "}"))

    try:
        walk(value, 0)
    except _DumpFull:
        return "".join(parts)[:_DUMP_LIMIT] + "..."
    return "".join(parts)


def json_type(value: Any) -> str:
    """rapidjson's name of the value's JSON type (``True``/``False`` for booleans)."""
    if type(value) is bool:
        return "True" if value else "False"
    return _JSON_TYPE.get(type(value), "Object")


def type_error(value: Any, dtype: DType) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"JSON Value: {dump(value)} Type: {json_type(value)} is not of expected type: {dtype.name.lower()}"
    )


def lossy_error(value: Any, target: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"Cannot convert JSON value: {dump(value)} to {target} without loss of precision.")


def status_text(error: ServingError) -> str:
    """An error as TF's ``Status::ToString`` prints it (``CODE: message``)."""
    return f"{error.code.name}: {error.message}"


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
