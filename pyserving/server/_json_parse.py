"""The fallback JSON parser for bodies orjson refuses (private to :mod:`rest_json`).

:func:`tolerant_loads` runs only after orjson rejected a body. It accepts what
rapidjson accepts with ``kParseNanAndInfFlag``: ``NaN``, ``Inf``, ``Infinity`` and their
negative forms, invalid UTF-8 (kept as surrogate escapes, so the raw bytes come back
when re-encoded), and integers up to 2**64-1 (larger ones become doubles). Errors are
reworded as rapidjson's (``JSON Parse error: Invalid value. at offset: 0``); offsets
are the stdlib parser's, a few bytes from rapidjson's for some errors.

Contract: a pure function, safe from any thread. A malformed document raises
:class:`InvalidArgumentError` (HTTP 400), never a parser exception; an integer literal
beyond a double's range is "Number too big to be stored in double", as in rapidjson.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyserving.servable.errors import InvalidArgumentError

__all__ = ["tolerant_loads"]

_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_NONSTANDARD = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|Inf|NaN)', re.DOTALL)


def tolerant_loads(body: bytes | str) -> Any:
    """The JSON document of ``body``, parsed as rapidjson would (see the module doc)."""
    text = body if isinstance(body, str) else bytes(body).decode("utf-8", "surrogateescape")
    shifts: list[tuple[int, int]] = []  # (position in rewritten text, growth so far)

    def token(match: re.Match[str]) -> str:
        word = match.group()
        if word[0] == '"':
            return word
        new = "NaN" if word.endswith("NaN") else ("-Infinity" if word[0] == "-" else "Infinity")
        grown = (shifts[-1][1] if shifts else 0) + len(new) - len(word)
        shifts.append((match.end() + grown, grown))
        return new

    rewritten = _NONSTANDARD.sub(token, text) if ("Inf" in text or "-NaN" in text) else text
    try:
        return json.loads(rewritten, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        pos = exc.pos - max((g for end, g in shifts if end <= exc.pos), default=0)
        if exc.msg.startswith("Unterminated string"):
            pos = len(text)  # rapidjson reports where the input ran out
        offset = len(text[:pos].encode("utf-8", "surrogateescape"))
        raise InvalidArgumentError(f"JSON Parse error: {_rapidjson_message(exc.msg, text, pos)} at offset: {offset}") from None
    except _NumberTooBig as exc:
        raise InvalidArgumentError(
            f"JSON Parse error: Number too big to be stored in double. at offset: {text.find(str(exc))}"
        ) from None
    except RecursionError:
        raise InvalidArgumentError("JSON Parse error: the document is nested too deeply") from None


class _NumberTooBig(ValueError):
    pass


def _parse_int(text: str) -> int | float:
    if len(text) > 400:  # far beyond any double; int() itself refuses over 4300 digits
        raise _NumberTooBig(text)
    value = int(text)
    if -(1 << 63) <= value < (1 << 64):
        return value
    try:
        return float(value)  # rapidjson: double
    except OverflowError:
        raise _NumberTooBig(text) from None


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NumberTooBig(text)
    return value


def _rapidjson_message(message: str, text: str, pos: int) -> str:
    if message == "Expecting value" and not text.strip():
        return "The document is empty."
    if message == "Expecting ',' delimiter":
        depth: list[str] = []
        for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text[:pos]):
            char = match.group()
            if char in "[{":
                depth.append(char)
            elif char in "]}" and depth:
                depth.pop()
        inside_array = bool(depth) and depth[-1] == "["
        return "Missing a comma or ']' after an array element." if inside_array else (
            "Missing a comma or '}' after an object member."
        )
    return _RAPIDJSON_MESSAGES.get(message, "Invalid value.")
