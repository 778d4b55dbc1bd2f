"""Sandboxed Jinja2 rendering of prompts, outputs and route conditions."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, pass_eval_context
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TemplateFailure

MAX_OUTPUT_CHARS = 1_000_000
MAX_REPEAT_ITEMS = 100_000
MAX_EXPONENT = 1000
MAX_INT_BITS = 10_000
_MAX_REASON_CHARS = 300
_CACHE_SIZE = 256

# "{{ expr }}" (optionally with whitespace control) and nothing else around it.
_WHOLE_BLOCK = re.compile(r"\s*\{\{-?(?P<body>.*?)-?\}\}\s*", re.DOTALL)


class _GuardedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox blocks unsafe attribute access; this also refuses results too big to compute."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Outputs are JSON objects: `a.output.items` means the field, never the dict method.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)


def _check_product(left: Any, right: Any) -> None:
    for sequence, times in ((left, right), (right, left)):
        if _is_repeatable(sequence) and _is_int(times) and len(sequence) * times > MAX_REPEAT_ITEMS:
            raise SecurityError(f"repetition would produce more than {MAX_REPEAT_ITEMS:,} items")
    if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"product would be larger than {MAX_INT_BITS:,} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if not _is_int(exponent):
        return  # float and Decimal powers overflow with an error instead of growing without bound
    if abs(exponent) > MAX_EXPONENT:
        raise SecurityError(f"exponent {exponent} is larger than {MAX_EXPONENT}")
    if _is_int(base) and base.bit_length() * exponent > MAX_INT_BITS:
        raise SecurityError(f"power would be larger than {MAX_INT_BITS:,} bits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_repeatable(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    # A context-taking finalize stops Jinja evaluating constant output at compile time, so
    # `{{ 'x'|center(999999999) }}` costs nothing until render() runs it under its limits.
    return value


def _to_json(value: Any) -> str:
    """Conductor's ``json`` filter."""
    return json.dumps(value, indent=2, default=str)


# optimized=False: constant folding would also run filters while merely compiling a definition.
_ENV = _GuardedSandbox(undefined=StrictUndefined, autoescape=False, optimized=False, finalize=_finalize)
_ENV.filters["json"] = _to_json
del _ENV.globals["lipsum"]  # lipsum(10**8) would build gigabytes of text before any output limit applies


@lru_cache(maxsize=_CACHE_SIZE)
def _template(source: str) -> Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=_CACHE_SIZE)
def _expression(expression: str) -> TemplateExpression:
    body = _unwrap(expression)
    if "{{" in body:
        raise TemplateSyntaxError("a condition must be one expression, like 'a.output.ok' or '{{ a.output.ok }}'", 1)
    return _ENV.compile_expression(body, undefined_to_none=False)


def compile_check(source: str) -> str | None:
    """None if ``source`` compiles as a template, else a one-line reason."""
    try:
        _template(source)
    except Exception as exc:  # every failure becomes a message for the author
        return _describe(exc)
    return None


def expression_check(expression: str) -> str | None:
    """None if a route ``when`` string compiles as an expression, else a one-line reason."""
    try:
        _expression(expression)
    except Exception as exc:
        return _describe(exc)
    return None


def render(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """Render a template; any failure becomes a TemplateFailure naming ``where``."""
    parts: list[str] = []
    size = 0
    try:
        for part in _template(source).generate(context):
            size += len(part)
            if size > MAX_OUTPUT_CHARS:
                break
            parts.append(part)
    except Exception as exc:
        raise TemplateFailure(where, _describe(exc)) from exc
    if size > MAX_OUTPUT_CHARS:
        raise TemplateFailure(where, f"output is longer than {MAX_OUTPUT_CHARS:,} characters")
    return "".join(parts)


def render_value(source: str, context: Mapping[str, Any], *, where: str) -> Any:
    """A template that is one ``{{ expression }}`` keeps its value's JSON type; any other renders to text."""
    if _unwrap(source) is source:
        return render(source, context, where=where)
    value = evaluate(source, context, where=where)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return render(source, context, where=where)
    return value


def evaluate(expression: str | bool, context: Mapping[str, Any], *, where: str) -> Any:
    """The value of a route condition, written either as ``a.ok`` or ``{{ a.ok }}``."""
    if isinstance(expression, bool):
        return expression
    try:
        value = _expression(expression)(context)
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
    except Exception as exc:
        raise TemplateFailure(where, _describe(exc)) from exc
    return value


def template_context(
    *, inputs: Mapping[str, Any], outputs: Mapping[str, Any], groups: Collection[str] = ()
) -> dict[str, Any]:
    """What templates see: ``workflow.input.*``, ``<agent>.output`` for each agent that has run, and
    for each group in ``groups`` that has ended, its result as it is (``<group>.outputs``, ...)."""
    context: dict[str, Any] = {
        name: output if name in groups else {"output": output} for name, output in outputs.items()
    }
    context["workflow"] = {"input": dict(inputs)}  # set last: an agent can never shadow it
    return context


def resolve_reference(reference: str, context: Mapping[str, Any], *, where: str) -> Any:
    """The value at a dotted reference like ``finder.output.items``; a digit part indexes a list."""
    value: Any = context
    for part in reference.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateFailure(where, f"'{reference}' has no '{part}' (has it run yet?)")
    return value


def _unwrap(expression: str) -> str:
    match = _WHOLE_BLOCK.fullmatch(expression)
    if match and "{{" not in match["body"]:
        return match["body"]
    return expression


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        reason = f"{exc.message} (line {exc.lineno})"
    elif isinstance(exc, TemplateError) and exc.message:
        reason = exc.message
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return " ".join(reason.split())[:_MAX_REASON_CHARS]
