"""The run's output: the workflow's top-level ``output`` and the ``output`` of the ``$end`` route taken,
rendered and read back as conductor reads them.

Conductor renders each value to text and then parses it: ``True``, ``False`` and ``None`` (what Jinja
prints for Python's constants), JSON objects, lists, strings and ``true``/``false``/``null``, and
numbers; any other text stays text. Here a value written as one ``{{ expression }}`` whose value is
not text keeps its value as it is (conductor would print a list of strings or an object as Python's
repr, which no JSON reader reads back); money (``budget.*``) stays the decimal string the API writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from jinja2.exceptions import SecurityError

from ._values import unstorable_json
from .templates import evaluate, is_one_expression, json_text, render

_PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}
_JSON_STARTS = ("{", "[", '"')
_JSON_CONSTANTS = ("true", "false", "null")


def output_value(template: str, context: Mapping[str, Any], *, where: str) -> Any:
    """One value of the run's output, from its template."""
    if not is_one_expression(template):
        return parsed_text(render(template, context, where=where))
    value = evaluate(template, context, where=where)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, str):
        return parsed_text(value)
    try:
        json_text(value)  # JSON data within the length limit, kept as it is
    except (TypeError, ValueError, SecurityError):
        return parsed_text(render(template, context, where=where))
    return value


def parsed_text(text: str) -> Any:
    """Rendered text read back as conductor reads it; text that reads as nothing else stays as it was."""
    stripped = text.strip()
    if stripped in _PYTHON_CONSTANTS:
        return _PYTHON_CONSTANTS[stripped]
    if stripped.startswith(_JSON_STARTS) or stripped in _JSON_CONSTANTS:
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            pass
        else:
            if unstorable_json(value) is None:  # 1e999 reads as infinity, which JSON cannot store
                return value
    try:
        number = float(stripped) if "." in stripped else int(stripped)
    except ValueError:  # also an integer of more digits than Python converts
        return text
    return number if not isinstance(number, float) or math.isfinite(number) else text
