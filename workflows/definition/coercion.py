"""Typing rendered text as conductor's `set` step does: read as YAML, or as the type named."""

from __future__ import annotations

import datetime
import math
from typing import Any

from ._source import read_source
from ._values import non_json_kind
from .errors import DefinitionError

OUTPUT_TYPES = ("auto", "string", "number", "integer", "boolean", "list", "dict")
# Text longer than this is kept as text by `auto`, and refused as a list or a dict: reading it as
# YAML could take longer than the render that made it.
MAX_COERCED_BYTES = 256 * 1024

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


def coerce_rendered(text: str, output_type: str) -> Any:
    """The value `text` stands for as `output_type`; ValueError saying why it stands for none."""
    stripped = text.strip()
    if output_type == "string":
        return text
    if output_type == "auto":
        if not stripped:
            return ""
        try:
            return _json_safe(_as_yaml(text))
        except ValueError:
            return text
    if output_type == "integer":
        return int(stripped)
    if output_type == "number":
        try:
            return int(stripped)
        except ValueError:
            number = float(stripped)
        if not math.isfinite(number):
            raise ValueError(f"{stripped!r} is not a finite number")
        return number
    if output_type == "boolean":
        if stripped.lower() in _TRUE | _FALSE:
            return stripped.lower() in _TRUE
        raise ValueError(f"{stripped[:40]!r} is not true, false, yes, no, 1 or 0")
    expected = list if output_type == "list" else dict
    value = _json_safe(_as_yaml(text))
    if not isinstance(value, expected):
        raise ValueError(f"the text is not a YAML {output_type}")
    return value


def _as_yaml(text: str) -> Any:
    try:
        return read_source(text, max_bytes=MAX_COERCED_BYTES, max_expanded_bytes=MAX_COERCED_BYTES)
    except DefinitionError as exc:
        raise ValueError(exc.problems[0].message) from None


def _json_safe(value: Any) -> Any:
    """Dates as ISO text, as conductor keeps them; ValueError for anything else JSON cannot hold."""
    value = _dates_as_text(value)
    if problem := non_json_kind(value):
        raise ValueError(f"it holds {problem}")
    return value


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return [_dates_as_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _dates_as_text(item) for key, item in value.items()}
    return value
