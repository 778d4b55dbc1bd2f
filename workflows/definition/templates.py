"""Sandboxed Jinja2 rendering of prompts, outputs and route conditions.

A render is bounded in time and in memory, whatever the template: every call, attribute, operator,
loop item and output piece checks a CPU-time deadline, and every value the template builds is
measured before it is built (a padding width, a repetition, a join, a replace, a format), so
`{{ 'x'|center(10**9) }}` is refused without allocating anything.
"""

from __future__ import annotations

import json
import re
import threading
import time
import types
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache, wraps
from string import Formatter
from typing import Any

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import htmlsafe_json_dumps

from .errors import TemplateFailure

MAX_OUTPUT_CHARS = 1_000_000
MAX_REPEAT_ITEMS = 100_000
MAX_EXPONENT = 1000
MAX_INT_BITS = 10_000
MAX_JSON_INDENT = 16
# Text that blocks, macros and `{% set %}` bodies may render in one render, kept or not.
MAX_BUFFERED_CHARS = 10 * MAX_OUTPUT_CHARS
DEFAULT_RENDER_SECONDS = 2.0
_MAX_REASON_CHARS = 300
_CACHE_SIZE = 256
_ITEMS_PER_CLOCK_CHECK = 256
# What one formatted field may add beyond the longest argument's repr (a float's digits, a sign).
_FIELD_SLACK = 400

# "{{ expr }}" (optionally with whitespace control) and nothing else around it.
_WHOLE_BLOCK = re.compile(r"\s*\{\{-?(?P<body>.*?)-?\}\}\s*", re.DOTALL)
# A printf-style conversion: its flags, width and precision.
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[a-zA-Z%]")


class RenderBudgetExceeded(SecurityError):
    """A render used more CPU time than its budget allows."""


class _Budget(threading.local):
    """The CPU-time budget of the render running on this thread: its length, and its deadline in
    `time.thread_time()` seconds while a render runs."""

    seconds: float = DEFAULT_RENDER_SECONDS
    deadline: float | None = None
    buffered: int = 0


_budget = _Budget()
_configured_seconds = DEFAULT_RENDER_SECONDS


def configure_render_budget(*, seconds: float) -> None:
    """The CPU seconds one render may take, for every thread (the TEMPLATE_RENDER_SECONDS setting)."""
    global _configured_seconds
    if not seconds > 0:
        raise ValueError("a render budget must be above 0 seconds")
    _configured_seconds = seconds


@contextmanager
def render_budget() -> Iterator[None]:
    """One CPU-time budget for every render inside: a caller that renders several templates for one
    decision (a step's prompts, a run's routes and outputs) bounds them together, not each."""
    if _budget.deadline is not None:  # a budget within a budget keeps the outer deadline
        yield
        return
    seconds = _configured_seconds
    _budget.seconds = seconds
    _budget.deadline = time.thread_time() + seconds
    _budget.buffered = 0
    try:
        yield
    finally:
        _budget.deadline = None


def tick() -> None:
    deadline = _budget.deadline
    if deadline is not None and time.thread_time() > deadline:
        raise RenderBudgetExceeded(
            f"rendering took more than {_budget.seconds:g} s of CPU time (the TEMPLATE_RENDER_SECONDS limit)"
        )


def _too_long(what: str = "result") -> SecurityError:
    return SecurityError(f"{what} would be longer than {MAX_OUTPUT_CHARS:,} characters")


def require_length(length: int, what: str = "result") -> None:
    if length > MAX_OUTPUT_CHARS:
        raise _too_long(what)


def _checked(value: Any) -> Any:
    """`value`, if it is not longer than any value a template may build."""
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_OUTPUT_CHARS:
        raise _too_long()
    return value


def _require_width(width: Any, what: str = "width") -> None:
    if _is_int(width) and width > MAX_OUTPUT_CHARS:
        raise _too_long(f"a {what} of {width:,}")


def _longest_text(values: Iterable[Any]) -> int:
    return max((len(repr(value)) for value in values), default=0)


def _check_percent_format(template: str, arguments: Any) -> None:
    """Refuse a `template % arguments` that could produce too long a text."""
    if isinstance(arguments, tuple):
        longest = _longest_text(arguments)
    elif isinstance(arguments, Mapping):  # `%(name)s` takes a value, `%s` the whole mapping
        longest = _longest_text([arguments, *arguments.values()])
    else:
        longest = _longest_text([arguments])
    length = len(template)
    for match in _PERCENT_FIELD.finditer(template):
        length += longest + _FIELD_SLACK
        for number in (match["width"], match["precision"]):
            if number == "*":
                raise SecurityError("a '*' width or precision is not allowed in a template")
            if number is not None:
                _require_width(int(number))
                length += int(number)
    require_length(length, "formatted text")


def _check_brace_format(template: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Refuse a `template.format(...)` that could produce too long a text."""
    longest = _longest_text([*args, *kwargs.values()])
    length = len(template)
    for _, field, spec, _ in Formatter().parse(template):
        if field is None:
            continue
        length += longest + _FIELD_SLACK
        if spec and "{" in spec:
            raise SecurityError("a format width must be written as a number, not a nested field")
        for number in re.findall(r"\d+", spec or ""):
            _require_width(int(number))
            length += int(number)
    require_length(length, "formatted text")


def _replaced_length(text: str | bytes, old: str | bytes, new: str | bytes, count: int = -1) -> int:
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


def _bounded_join(separator: str | bytes, items: Iterable[Any], *, as_text: bool = True) -> Any:
    parts = []
    length = 0
    for index, item in enumerate(items):
        if index % _ITEMS_PER_CLOCK_CHECK == 0:
            tick()
        part = str(item) if as_text and not isinstance(item, str) else item
        if isinstance(part, (str, bytes)):  # anything else makes the join itself fail, as it would
            length += len(part)
        length += len(separator) if index else 0
        require_length(length, "joined text")
        parts.append(part)
    return separator.join(parts)


def _bounded_text_method(method: types.BuiltinMethodType, args: tuple, kwargs: dict) -> Any:
    """Call a str or bytes method, having first measured what it would build."""
    text = method.__self__
    name = method.__name__
    if name in ("ljust", "rjust", "center", "zfill") and args:
        _require_width(args[0])
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(tabsize):
            require_length(len(text) * max(tabsize, 1), "expanded text")
    elif name == "replace" and len(args) >= 2:
        require_length(_replaced_length(text, *args[:3], **kwargs), "replaced text")
    elif name == "join" and args:
        return _bounded_join(text, args[0], as_text=False)
    elif name in ("translate", "maketrans"):
        raise SecurityError(f"'{name}' is not allowed in a template")
    return method(*args, **kwargs)


class _Buffer(list):
    """Where a block, a macro or a `{% set %}` body collects its pieces, counted as they come."""

    def append(self, piece: Any) -> None:
        tick()
        _budget.buffered += len(piece) + 1 if isinstance(piece, str) else 1
        if _budget.buffered > MAX_BUFFERED_CHARS:
            raise SecurityError(f"the template built more than {MAX_BUFFERED_CHARS:,} characters of text")
        super().append(piece)

    def extend(self, pieces: Iterable[Any]) -> None:
        for piece in pieces:
            self.append(piece)


class _GuardedCodeGenerator(CodeGenerator):
    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.new_buffer()")


class _GuardedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox blocks unsafe attribute access; this also keeps a render inside its CPU-time
    budget and refuses values too big to build, before building them."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator
    new_buffer = _Buffer

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False):
        _guard_tree(source, self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    @staticmethod
    def concat(pieces: Iterable[Any]) -> str:
        """Joins what a block, a macro or `{% set %}...{% endset %}` rendered (Jinja's `concat`)."""
        return _bounded_join("", pieces, as_text=False)

    @staticmethod
    def guarded_iter(iterable: Any) -> Iterator[Any]:
        """What a `{% for %}` loop iterates: the items, with the clock checked as they go."""
        for index, item in enumerate(iterable):
            if index % _ITEMS_PER_CLOCK_CHECK == 0:
                tick()
            yield item

    @staticmethod
    def guarded_concat(*parts: Any) -> str:
        """The `~` operator."""
        return _bounded_join("", parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        # Outputs are JSON objects: `a.output.items` means the field, never the dict method.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        tick()
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, (str, bytes)):
            if not __self.is_safe_callable(__obj):
                raise SecurityError(f"{__obj!r} is not safely callable")
            return _checked(_bounded_text_method(__obj, args, kwargs))
        return _checked(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "*":
            check_product(left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "+" and _is_repeatable(left) and _is_repeatable(right):
            require_length(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left, right)
        return _checked(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__
        is_format_map = value.__name__ == "format_map"

        @wraps(wrapper)
        def measured(*args: Any, **kwargs: Any) -> str:
            if is_format_map and args and isinstance(args[0], Mapping):
                _check_brace_format(template, (), args[0])
            else:
                _check_brace_format(template, args, kwargs)
            return wrapper(*args, **kwargs)

        return measured


def _guard_tree(tree: nodes.Template, environment: _GuardedSandbox) -> None:
    """Route every loop's items and every `~` through the environment's measured versions."""
    for node in list(tree.find_all(nodes.Node)):
        for field in node.fields:
            value = getattr(node, field, None)
            if isinstance(value, list):
                value[:] = [_guarded(child, environment) for child in value]
            elif isinstance(value, nodes.Node):
                setattr(node, field, _guarded(value, environment))
        if isinstance(node, nodes.For):
            node.iter = _environment_call("guarded_iter", [node.iter], node, environment)


def _guarded(node: Any, environment: _GuardedSandbox) -> Any:
    if isinstance(node, nodes.Concat):
        return _environment_call("guarded_concat", node.nodes, node, environment)
    return node


def _environment_call(name: str, args: list, near: nodes.Node, environment: _GuardedSandbox) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), args, [], None, None)
    call.set_lineno(near.lineno)
    call.set_environment(environment)
    return call


def check_product(left: Any, right: Any) -> None:
    for sequence, times in ((left, right), (right, left)):
        if _is_repeatable(sequence) and _is_int(times) and len(sequence) * times > MAX_REPEAT_ITEMS:
            raise SecurityError(f"repetition would produce more than {MAX_REPEAT_ITEMS:,} items")
    if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"product would be larger than {MAX_INT_BITS:,} bits")


def check_power(base: Any, exponent: Any) -> None:
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


def json_text(value: Any, *, indent: int | None = None, **options: Any) -> str:
    """json.dumps, built piece by piece under the length limit and the clock."""
    if _is_int(indent) and indent > MAX_JSON_INDENT:
        raise SecurityError(f"a JSON indent above {MAX_JSON_INDENT} is not allowed in a template")
    # iterencode() yields as it goes; dumps() would build the whole text first.
    return _bounded_join("", json.JSONEncoder(indent=indent, **options).iterencode(value), as_text=False)


def _measured(original: Any, check: Any) -> Any:
    """A Jinja filter that runs `check` on its arguments before `original` builds anything."""

    @wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        check(*_without_context(original, args), **kwargs)
        return original(*args, **kwargs)

    return filter_


def _without_context(original: Any, args: tuple) -> tuple:
    return args[1:] if getattr(original, "jinja_pass_arg", None) is not None else args


def _check_center(value: Any, width: Any = 80) -> None:
    _require_width(width)


def _check_indent(text: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    _require_width(width)
    prefix = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    text = str(text)
    require_length(len(text) + (text.count("\n") + 1) * prefix, "indented text")


def _check_wordwrap(
    text: Any, width: int = 79, break_long_words: bool = True, wrapstring: Any = None, **_: Any
) -> None:
    text = str(text)
    lines = min(len(text), len(text) // max(width if _is_int(width) else 1, 1) + len(text.split())) + 1
    require_length(len(text) + lines * len(str(wrapstring or "\n")), "wrapped text")


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    require_length(_replaced_length(str(text), str(old), str(new), count if _is_int(count) else -1), "replaced text")


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_percent_format(str(value), kwargs or args)


def _check_batch(value: Any, linecount: Any, fill_with: Any = None) -> None:
    _require_width(linecount, "batch size")


def _check_slice(value: Any, slices: Any, fill_with: Any = None) -> None:
    _require_width(slices, "slice count")


def _check_urlize(
    text: Any, trim_url_limit: Any = None, nofollow: bool = False, target: Any = None, rel: Any = None, **_: Any
) -> None:
    text = str(text)
    links = len(text) // 3 + 1
    require_length(3 * len(text) + links * (len(str(target or "")) + len(str(rel or "")) + 60), "linked text")


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> str:
    """Jinja's `join`, measured as it goes."""
    if attribute is not None:
        getter = make_attrgetter(eval_ctx.environment, attribute)
        value = map(getter, value)
    return _bounded_join(str(d), value)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's `sum`; adding up lists or texts is measured as it goes."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for index, item in enumerate(iterable):
        if index % _ITEMS_PER_CLOCK_CHECK == 0:
            tick()
        if _is_repeatable(total) and _is_repeatable(item):
            require_length(len(total) + len(item))
        total = total + item
    return total


def _tojson(value: Any, indent: int | None = None) -> str:
    """Jinja's `tojson`, built under the limits."""
    return htmlsafe_json_dumps(value, dumps=json_text, indent=indent, sort_keys=True)


def _to_json(value: Any) -> str:
    """Conductor's ``json`` filter."""
    return json_text(value, indent=2, default=str)


def _timed(original: Any) -> Any:
    """A Jinja filter that checks the clock before it runs and the length of what it made."""

    @wraps(original)
    def filter_(*args: Any, **kwargs: Any) -> Any:
        tick()
        return _checked(original(*args, **kwargs))

    return filter_


_PRECHECKS = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "format": _check_format,
    "batch": _check_batch,
    "slice": _check_slice,
    "urlize": _check_urlize,
}
_REPLACEMENTS = {"join": _join, "sum": _sum, "tojson": _tojson, "json": _to_json}


def _guarded_filters() -> dict[str, Any]:
    filters = {name: _measured(filter_, _PRECHECKS[name]) for name, filter_ in FILTERS.items() if name in _PRECHECKS}
    filters = {**FILTERS, **filters}
    filters.update(_REPLACEMENTS)
    return {name: _timed(filter_) for name, filter_ in filters.items()}


# optimized=False: constant folding would also run filters while merely compiling a definition.
_ENV = _GuardedSandbox(undefined=StrictUndefined, autoescape=False, optimized=False, finalize=_finalize)
_ENV.filters = _guarded_filters()
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


def parsed_template(source: str) -> nodes.Template:
    """The syntax tree of a template that compiles."""
    return _ENV.parse(source)


def jinja_globals() -> tuple[str, ...]:
    """The names every template sees beside its context: Jinja's globals (``range``, ``namespace``, ...)."""
    return tuple(_ENV.globals)


def compile_check(source: str) -> str | None:
    """None if ``source`` compiles as a template, else a one-line reason."""
    try:
        _template(source)
    except Exception as exc:  # every failure becomes a message for the author
        return describe(exc)
    return None


def expression_check(expression: str) -> str | None:
    """None if a route ``when`` string compiles as an expression, else a one-line reason."""
    try:
        _expression(expression)
    except Exception as exc:
        return describe(exc)
    return None


def render(source: str, context: Mapping[str, Any], *, where: str) -> str:
    """Render a template within the CPU-time budget and the length limit; any failure becomes a
    TemplateFailure naming ``where``."""
    parts: list[str] = []
    size = 0
    try:
        with render_budget():
            for part in _template(source).generate(context):
                tick()
                size += len(part)
                if size > MAX_OUTPUT_CHARS:
                    break
                parts.append(part)
    except Exception as exc:
        raise TemplateFailure(where, describe(exc)) from exc
    if size > MAX_OUTPUT_CHARS:
        raise TemplateFailure(where, f"output is longer than {MAX_OUTPUT_CHARS:,} characters")
    return "".join(parts)


def is_one_expression(source: str) -> bool:
    """Whether a template is one ``{{ expression }}`` and nothing else."""
    return _unwrap(source) is not source


def evaluate(expression: str | bool, context: Mapping[str, Any], *, where: str) -> Any:
    """The value of a route condition, written either as ``a.ok`` or ``{{ a.ok }}``, within the
    CPU-time budget."""
    if isinstance(expression, bool):
        return expression
    try:
        with render_budget():
            value = _checked(_expression(expression)(context))
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
    except Exception as exc:
        raise TemplateFailure(where, describe(exc)) from exc
    return value


def template_context(
    *,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    groups: Collection[str] = (),
    workflow_name: str = "",
    iteration: int = 0,
    budget: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What templates see: ``workflow.input.*`` and ``workflow.name``, ``context.iteration`` (the steps
    the run has executed), ``budget.*`` when given, ``<agent>.output`` for each agent that has run,
    and for each group in ``groups`` that has ended, its result as it is (``<group>.outputs``, ...)."""
    context: dict[str, Any] = {"context": {"iteration": iteration}}
    if budget is not None:
        context["budget"] = dict(budget)
    # An agent stored under a name that later became reserved (`context`, `budget`) keeps it.
    context.update({name: output if name in groups else {"output": output} for name, output in outputs.items()})
    context["workflow"] = {"input": dict(inputs), "name": workflow_name}  # set last: an agent can never shadow it
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


def describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        reason = f"{exc.message} (line {exc.lineno})"
    elif isinstance(exc, TemplateError) and exc.message:
        reason = exc.message
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return " ".join(reason.split())[:_MAX_REASON_CHARS]
