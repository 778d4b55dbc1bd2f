"""Route conditions, evaluated as conductor evaluates them.

A ``when`` holding ``{{ ... }}`` is one Jinja2 expression (templates.py); any other is a Python-like
expression such as ``score < 7``, evaluated by simpleeval over conductor's flattened names: for each
mapping in the context, ``<key>_<field>`` (``workflow_input``, ``context_iteration``,
``reviewer_output``), and the fields of the routed step's own ``output`` by their bare names. Beside
conductor's names, the mappings themselves are names too (``output.approved``, ``reviewer.output.score``),
as are ``true``, ``false`` and ``null``; a flattened name always wins over these.

The evaluator is bounded like a template: every node checks the render's CPU-time clock, numbers and
texts are measured before they are built, only ``int()``, ``float()`` and ``str()`` may be called, and
f-strings are refused (their format widths build text of any length).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from simpleeval import SimpleEval

from ._values import kind_of
from .errors import TemplateFailure
from .templates import (
    MAX_OUTPUT_CHARS,
    check_power,
    check_product,
    describe,
    evaluate,
    expression_check,
    render_budget,
    require_length,
    tick,
)

# The names a bare condition may use besides the context's: JSON's and YAML's spellings of the constants.
LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
FUNCTIONS: dict[str, Any] = {"int": int, "float": float, "str": str}
# Conductor's rule for a condition's rendered text; any other non-empty text is true.
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no", ""})
MAX_DEPTH = 60
_REFUSED_NODES = (ast.JoinedStr, ast.FormattedValue, ast.Lambda, ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)


def is_jinja(when: str) -> bool:
    """Conductor's test: a condition holding both ``{{`` and ``}}`` is a template."""
    return "{{" in when and "}}" in when


def condition_check(when: str) -> str | None:
    """None if a route ``when`` string compiles, else a one-line reason."""
    if is_jinja(when):
        return expression_check(when)
    try:
        _parsed(when)
    except Exception as exc:  # every failure becomes a message for the author
        return describe(exc)
    return None


def parsed_condition(when: str) -> ast.Expression:
    """The syntax tree of a bare condition; raises SyntaxError or ValueError with the reason."""
    return _parsed(when)


def condition_holds(when: str | bool, context: Mapping[str, Any], *, where: str) -> bool:
    """Whether a route's ``when`` holds in ``context`` (which holds the routed step's ``output``)."""
    if isinstance(when, bool):
        return when
    if is_jinja(when):
        return truth(evaluate(when, context, where=where))
    try:
        with render_budget():
            value = _Evaluator(names=bare_names(context)).eval(when, previously_parsed=_parsed(when).body)
    except Exception as exc:
        raise TemplateFailure(where, describe(exc)) from exc
    return truth(value)


def truth(value: Any) -> bool:
    """Conductor judges a condition by its text: 'true', '1' and 'yes' hold, 'false', '0', 'no' and ''
    do not. A value that is not text holds when it is truthy."""
    if isinstance(value, str):
        text = value.strip().lower()
        return text in _TRUE_WORDS or (text not in _FALSE_WORDS and bool(text))
    return bool(value)


def bare_names(context: Mapping[str, Any]) -> dict[str, Any]:
    """The names a bare condition sees: conductor's flattened context, then the literals and the
    context's own top-level names where no flattened name took them."""
    flat: dict[str, Any] = {}
    for key, value in context.items():
        if key == "output":
            continue  # conductor puts the routed step's output last
        _flatten_into(flat, key, value)
    if "output" in context:
        _flatten_into(flat, "output", context["output"])
        if isinstance(context["output"], Mapping):
            flat.update(context["output"])
    for extra in (LITERALS, context):
        for key, value in extra.items():
            flat.setdefault(key, value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for field, inner in value.items():
            flat[f"{key}_{field}"] = inner
    else:
        flat[key] = value


def _depth(node: ast.AST) -> int:
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


@lru_cache(maxsize=256)
def _parsed(when: str) -> ast.Expression:
    tree = ast.parse(when.strip(), mode="eval")
    if _depth(tree) > MAX_DEPTH:  # evaluating recurses once per level: refused here, not when the run is paid for
        raise ValueError(f"the condition nests more than {MAX_DEPTH} levels deep")
    for node in ast.walk(tree):
        if isinstance(node, _REFUSED_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed in a condition")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
            raise ValueError(f"only {', '.join(f'{name}()' for name in FUNCTIONS)} may be called in a condition")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"'{node.attr}': names starting with '_' are not allowed")
    return tree


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, Mapping) else kind_of(value)


def _bounded(function: Any, check: Any) -> Any:
    def bounded(left: Any, right: Any) -> Any:
        check(left, right)
        return function(left, right)

    return bounded


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
        require_length(len(left) + len(right))


def _check_modulo(left: Any, right: Any) -> None:
    if isinstance(left, str):
        raise ValueError("'%' formatting is not allowed in a condition")


class _Evaluator(SimpleEval):
    """simpleeval with the template sandbox's limits."""

    def __init__(self, *, names: Mapping[str, Any]) -> None:
        super().__init__(functions=dict(FUNCTIONS), names=names)
        self.operators = {
            **self.operators,
            ast.Add: _bounded(operator.add, _check_sum),
            ast.Mult: _bounded(operator.mul, check_product),
            ast.Pow: _bounded(operator.pow, check_power),
            ast.Mod: _bounded(operator.mod, _check_modulo),
        }
        for refused in (ast.JoinedStr, ast.FormattedValue):
            self.nodes.pop(refused, None)

    def _eval(self, node: Any) -> Any:
        tick()
        value = super()._eval(node)
        if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_OUTPUT_CHARS:
            require_length(len(value))
        return value

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        # As in templates: an output's field wins over a dict method of the same name.
        base = self._eval(node.value)
        if isinstance(base, Mapping) and node.attr in base:
            return base[node.attr]
        raise KeyError(f"no '{node.attr}' in {_kind(base)} (has it run yet?)")
