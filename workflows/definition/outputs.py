"""An agent's `output` schema as JSON Schema for a provider, and checking an answer against it."""

from __future__ import annotations

from typing import Any

from ._values import kind_of
from .inputs import INPUT_TYPES, matches_type


def json_schema(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of an object with `fields`, in the strict form OpenAI's structured outputs
    require: every field required, no other fields."""
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
    if field.get("description"):
        schema["description"] = field["description"]
    return schema


def output_problems(value: Any, fields: dict[str, dict[str, Any]], *, path: str = "output") -> list[str]:
    """What is wrong with an answer for an agent whose output has `fields`; empty when nothing is."""
    if not isinstance(value, dict):
        return [f"{path} must be an object, not {kind_of(value)}"]
    problems = [f"{path}.{name} is missing" for name in fields if name not in value]
    for name, field in fields.items():
        if name in value:
            problems += _value_problems(value[name], field, path=f"{path}.{name}")
    return problems


def _value_problems(value: Any, field: dict[str, Any], *, path: str) -> list[str]:
    kind = field.get("type", "string")
    if not matches_type(value, kind):
        return [f"{path} must be {INPUT_TYPES[kind]}, not {kind_of(value)}"]
    if kind == "object" and field.get("properties"):
        return output_problems(value, field["properties"], path=path)
    if kind == "array" and field.get("items"):
        return [
            problem
            for index, item in enumerate(value)
            for problem in _value_problems(item, field["items"], path=f"{path}[{index}]")
        ]
    return []
