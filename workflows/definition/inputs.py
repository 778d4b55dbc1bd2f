"""Checking a run's inputs against a workflow's declared inputs."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any

from ._values import kind_of
from .errors import Problem
from .model import InputSpec

INPUT_TYPES: dict[str, str] = {  # type name -> how a message names it
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "array": "an array (list)",
    "object": "an object (mapping)",
}


def matches_type(value: object, type_name: str) -> bool:
    """Whether ``value`` is a JSON value of the declared input type."""
    return _TYPE_TESTS[type_name](value)


def check_inputs(
    spec: Mapping[str, InputSpec], given: Mapping[str, Any], *, read: Collection[str] = ()
) -> tuple[dict[str, Any], list[Problem]]:
    """The run's inputs with defaults applied, plus every problem; a null value counts as not given.

    With no input declared, as in conductor, any inputs are taken as they are; `read` are those the
    workflow's templates read, which must be given."""
    if not isinstance(given, Mapping):
        return {}, [Problem("inputs", f"must be a mapping, not {kind_of(given)}")]
    if not spec:
        taken = {name: copy.deepcopy(value) for name, value in given.items() if value is not None}
        missing = [name for name in read if name not in taken]
        return taken, [
            Problem(f"inputs.{name}", f"input '{name}' is missing: the workflow reads workflow.input.{name}")
            for name in missing
        ]
    problems = [
        Problem(f"inputs.{name}", f"unknown input '{name}' (declared: {', '.join(spec) or 'none'})")
        for name in given
        if name not in spec
    ]
    values: dict[str, Any] = {}
    for name, input_spec in spec.items():
        value = given.get(name)
        if value is not None:
            if matches_type(value, input_spec.type):
                values[name] = value
            else:
                expected = INPUT_TYPES[input_spec.type]
                problems.append(Problem(f"inputs.{name}", f"must be {expected}, not {kind_of(value)}"))
        elif input_spec.has_default:
            values[name] = copy.deepcopy(input_spec.default)  # runs must never share a mutable default
        elif input_spec.required:
            problems.append(Problem(f"inputs.{name}", f"required input '{name}' is missing"))
        else:
            values[name] = zero_value(input_spec.type)
    return values, problems


def zero_value(type_name: str) -> Any:
    """What an optional input with no default is, as in conductor: its type's empty value, which renders
    as nothing (not "None") and is false in `{% if workflow.input.x %}`."""
    return {"string": "", "number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}[type_name]


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_TESTS: dict[str, Callable[[object], bool]] = {
    "string": lambda value: isinstance(value, str),
    "number": _is_number,
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}
