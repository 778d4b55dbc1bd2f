import tracemalloc

import pytest

from workflows.definition import (
    TemplateFailure,
    compile_check,
    evaluate,
    expression_check,
    render,
    render_value,
    template_context,
)

CONTEXT = template_context(
    inputs={"topic": "tides"},
    outputs={"a": {"ok": True, "n": 3, "items": ["x", "y"]}, "b": {"ok": False}},
)


def test_template_context_exposes_inputs_and_outputs_of_agents_that_ran():
    assert CONTEXT == {
        "workflow": {"input": {"topic": "tides"}},
        "a": {"output": {"ok": True, "n": 3, "items": ["x", "y"]}},
        "b": {"output": {"ok": False}},
    }


def test_an_agent_output_can_never_shadow_workflow_inputs():
    context = template_context(inputs={"topic": "tides"}, outputs={"workflow": "sneaky"})

    assert context["workflow"] == {"input": {"topic": "tides"}}


def test_render_fills_in_inputs_and_outputs():
    source = "{{ workflow.input.topic }}: {% for item in a.output.items %}{{ item }};{% endfor %}"

    assert render(source, CONTEXT, where="agent 'w' prompt") == "tides: x;y;"


def test_output_fields_win_over_dict_methods():
    context = template_context(inputs={}, outputs={"a": {"keys": [1], "values": "v"}})

    assert render("{{ a.output.keys }} {{ a.output.values }}", context, where="t") == "[1] v"


def test_the_json_filter_matches_conductor():
    assert render("{{ a.output.items | json }}", CONTEXT, where="t") == '[\n  "x",\n  "y"\n]'


def test_an_undefined_name_fails_with_the_template_named():
    with pytest.raises(TemplateFailure) as info:
        render("Hello {{ missing }}", CONTEXT, where="agents[0].prompt")

    assert str(info.value) == "template agents[0].prompt failed: 'missing' is undefined"
    assert (info.value.where, info.value.reason) == ("agents[0].prompt", "'missing' is undefined")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        ("{{ 'a' * 10**9 }}", "repetition"),
        ("{{ 10**9 * [0] }}", "repetition"),
        ("{{ 2 ** 100000 }}", "exponent"),
        ("{{ (2 ** 1000) ** 1000 }}", "bits"),
        ("{{ 99 ** 999 * 99 ** 999 * 99 ** 999 * 99 ** 999 * 99 ** 999 }}", "bits"),
        ("{{ 'x' | center(2000000) }}", "longer than 1,000,000 characters"),
        ("{% for i in range(100000) %}{{ 'abcdefghijk' }}{% endfor %}", "longer than 1,000,000 characters"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ],
)
def test_the_sandbox_refuses_escapes_and_huge_results(source, reason):
    with pytest.raises(TemplateFailure) as info:
        render(source, CONTEXT, where="output.x")

    assert reason in info.value.reason
    assert "Traceback" not in str(info.value)


def test_compiling_never_evaluates_the_template():
    tracemalloc.start()
    try:
        assert compile_check("{{ 'x' | center(999999999) }}") is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 50_000_000


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ x", "unexpected end of template, expected 'end of print statement'. (line 1)"),
        ("ok\n{% if x %}", "(line 2)"),
        ("{{ x | no_such_filter }}", "No filter named 'no_such_filter'"),
    ],
)
def test_compile_check_explains_with_a_line_number(source, reason):
    assert reason in compile_check(source)


def test_compile_check_accepts_valid_templates():
    assert compile_check("{% if a %}{{ a.output | json }}{% endif %}") is None


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("{{ false }}", False),
        ("false", False),
        ("{{ a.output.ok }}", True),
        ("a.output.ok and not b.output.ok", True),
        ("{{- a.output.n -}}", 3),
        ("a.output.n > 5", False),
        ("{{ {'k': a.output.n} }}", {"k": 3}),
        (True, True),
        (False, False),
    ],
)
def test_evaluate_returns_the_value_not_its_text(expression, value):
    assert evaluate(expression, CONTEXT, where="when") == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("{{ a.output.missing }}", "has no attribute 'missing'"),
        ("c.output.ok", "'c' is undefined"),
        ("{{ a.output.ok }} and {{ b.output.ok }}", "must be one expression"),
        ("a.__class__", "unsafe"),
    ],
)
def test_evaluate_failures_are_template_failures(expression, reason):
    with pytest.raises(TemplateFailure) as info:
        evaluate(expression, CONTEXT, where="agent 'a' routes[0].when")

    assert info.value.where == "agent 'a' routes[0].when"
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("expression", "ok"),
    [("{{ a.output.ok }}", True), ("a.output.n >= 2", True), ("{{ a.output. }}", False), ("", False)],
)
def test_expression_check(expression, ok):
    assert (expression_check(expression) is None) is ok


@pytest.mark.parametrize(
    "source,expected",
    [
        ("{{ a.output.ok }}", True),
        ("{{ a.output.count + 1 }}", 3),
        ("{{ a.output }}", {"ok": True, "count": 2}),
        ("ok={{ a.output.ok }}", "ok=True"),
        ("{{ range(2) }}", "range(0, 2)"),
    ],
)
def test_render_value_keeps_the_type_of_a_single_expression(source, expected):
    context = template_context(inputs={}, outputs={"a": {"ok": True, "count": 2}})
    assert render_value(source, context, where="output 'x'") == expected
