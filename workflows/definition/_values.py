"""Describing user-supplied values in problem messages."""

from __future__ import annotations

import math
from collections.abc import Mapping

_MAX_SHOWN_CHARS = 60


def kind_of(value: object) -> str:
    """The YAML/JSON name of a value's type, as an author would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def show(value: object) -> str:
    """A short repr, so one bad value cannot flood an error message."""
    try:
        text = repr(value)
    except ValueError:  # ints beyond Python's str-conversion digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


def whole_number(value: object, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an int within bounds, else ValueError with a message for the author."""
    # bool is an int subclass but never a sensible count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"must be a whole number, not {kind_of(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"must be {bounds}, not {show(value)}")
    return value


def non_json_kind(value: object) -> str | None:
    """None if ``value`` is plain JSON data (dicts with string keys, lists, scalars), else what is not."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return "a mapping key that is not a string"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not _is_json_scalar(item):
            return kind_of(item)
    return None


def _is_json_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


def unstorable_json(value: object) -> str | None:
    """What in JSON data no database can store, or None: a NUL character, which PostgreSQL's jsonb and
    text refuse; a lone surrogate, which is no Unicode at all; or NaN or an infinity, which Python's
    JSON parser accepts and neither jsonb nor SQLite's JSON_VALID does."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return f"the number {item}"
        elif isinstance(item, str):
            if "\x00" in item:
                return "a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a lone surrogate"
    return None
