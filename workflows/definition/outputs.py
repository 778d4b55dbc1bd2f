"""An agent's `output` schema as JSON Schema for a provider, and checking an answer against it,
constraints included (conductor's `enum`, `pattern`, `minimum`, `maximum`, `minLength`,
`maxLength`, `required`, `nullable`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import regex

from ._values import kind_of, show
from .inputs import INPUT_TYPES, matches_type

CONSTRAINTS = ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "required", "nullable")
# The longest an answer's match against a tenant's `pattern` may take: `regex`'s own timeout, so a
# pattern that backtracks for ever costs its step a second, not a worker.
PATTERN_SECONDS = 1.0
_SCALARS = {"string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,)}


def constraint_problems(field: Mapping[str, Any], type_name: str) -> list[tuple[str, str]]:
    """(key, message) for each constraint of an output field of `type_name` that conductor would refuse."""
    problems: list[tuple[str, str]] = []
    for key in ("pattern", "minLength", "maxLength"):
        if field.get(key) is not None and type_name != "string":
            problems.append((key, "applies to a string field only"))
    for key in ("minimum", "maximum"):
        value = field.get(key)
        if value is not None and type_name not in ("number", "integer"):
            problems.append((key, "applies to a number field only"))
        elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            problems.append((key, f"must be a number, not {show(value)}"))
    for key in ("minLength", "maxLength"):
        value = field.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append((key, f"must be a whole number from 0, not {show(value)}"))
    for low, high in (("minimum", "maximum"), ("minLength", "maxLength")):
        if not problems and field.get(low) is not None and field.get(high) is not None and field[low] > field[high]:
            problems.append((low, f"is above {high}"))
    for key in ("required", "nullable"):
        if field.get(key) is not None and not isinstance(field[key], bool):
            problems.append((key, "must be true or false"))
    enum = field.get("enum")
    if enum is not None:
        if type_name in ("array", "object"):
            problems.append(("enum", "applies to a string, number or boolean field only"))
        elif not isinstance(enum, list) or not enum:
            problems.append(("enum", "must be a list of at least one value"))
        elif not all(isinstance(value, _SCALARS[type_name]) and not (type_name != "boolean" and isinstance(value, bool)) for value in enum):
            problems.append(("enum", f"must hold only {INPUT_TYPES[type_name]} values (null is 'nullable: true')"))
    pattern = field.get("pattern")
    if pattern is not None:
        try:
            regex.compile(pattern)
        except (regex.error, TypeError) as exc:
            problems.append(("pattern", f"is not a regular expression: {exc}"))
    return problems


def json_schema(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of an object with `fields`, in the strict form OpenAI's structured outputs
    require: every field required (one that may be left out may be null), no other fields. Of the
    constraints only `enum` is sent; the others are said in the description, and checked on the answer."""
    return {
        "type": "object",
        "properties": {name: _field_schema(field) for name, field in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


def _field_schema(field: dict[str, Any]) -> dict[str, Any]:
    kind = field.get("type", "string")
    if kind == "object":
        schema = json_schema(field.get("properties") or {})
    elif kind == "array":
        schema = {"type": "array", "items": _field_schema(field["items"]) if field.get("items") else {}}
    else:
        schema = {"type": kind}
        if field.get("enum") is not None:
            schema["enum"] = list(field["enum"])
    if _may_be_null(field):
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    said = [field["description"]] if field.get("description") else []
    said += [f"{key} {field[key]!r}" for key in ("pattern", "minimum", "maximum", "minLength", "maxLength") if field.get(key) is not None]
    if said:
        schema["description"] = "; ".join(said)
    return schema


def _may_be_null(field: dict[str, Any]) -> bool:
    return bool(field.get("nullable")) or field.get("required") is False


def output_problems(value: Any, fields: dict[str, dict[str, Any]], *, path: str = "output") -> list[str]:
    """What is wrong with an answer for an agent whose output has `fields`; empty when nothing is."""
    if not isinstance(value, dict):
        return [f"{path} must be an object, not {kind_of(value)}"]
    problems = [f"{path}.{name} is missing" for name, field in fields.items() if name not in value and field.get("required") is not False]
    for name, field in fields.items():
        if name in value:
            problems += _value_problems(value[name], field, path=f"{path}.{name}")
    return problems


def _value_problems(value: Any, field: dict[str, Any], *, path: str) -> list[str]:
    kind = field.get("type", "string")
    if value is None and _may_be_null(field):
        return []
    if not matches_type(value, kind):
        return [f"{path} must be {INPUT_TYPES[kind]}, not {kind_of(value)}"]
    if problem := _constraint_broken(value, field):
        return [f"{path} {problem}"]
    if kind == "object" and field.get("properties"):
        return output_problems(value, field["properties"], path=path)
    if kind == "array" and field.get("items"):
        return [
            problem
            for index, item in enumerate(value)
            for problem in _value_problems(item, field["items"], path=f"{path}[{index}]")
        ]
    return []


def _constraint_broken(value: Any, field: dict[str, Any]) -> str | None:
    """How `value`, of its field's type, breaks one of the field's constraints, or None."""
    if field.get("enum") is not None and value not in field["enum"]:
        return f"must be one of {field['enum']}, not {show(value)}"
    if field.get("minimum") is not None and value < field["minimum"]:
        return f"must be at least {field['minimum']}, not {value}"
    if field.get("maximum") is not None and value > field["maximum"]:
        return f"must be at most {field['maximum']}, not {value}"
    if field.get("minLength") is not None and len(value) < field["minLength"]:
        return f"must be at least {field['minLength']} characters, not {len(value)}"
    if field.get("maxLength") is not None and len(value) > field["maxLength"]:
        return f"must be at most {field['maxLength']} characters, not {len(value)}"
    if field.get("pattern") is not None:
        try:
            if regex.search(field["pattern"], value, timeout=PATTERN_SECONDS) is None:
                return f"does not match the pattern {field['pattern']!r}"
        except TimeoutError:
            return f"could not be matched against the pattern {field['pattern']!r} within {PATTERN_SECONDS:g} s"
    return None
