import time
import tracemalloc

import pytest

from workflows.definition import (
    TemplateFailure,
    compile_check,
    configure_render_budget,
    evaluate,
    expression_check,
    render,
    render_budget,
    output_value,
    template_context,
)
from workflows.definition.templates import DEFAULT_RENDER_SECONDS

CONTEXT = template_context(
    inputs={"topic": "tides"},
    outputs={"a": {"ok": True, "n": 3, "items": ["x", "y"]}, "b": {"ok": False}},
)


def test_template_context_exposes_inputs_and_outputs_of_agents_that_ran():
    assert CONTEXT == {
        "workflow": {"input": {"topic": "tides"}, "name": ""},
        "context": {"iteration": 0},
        "a": {"output": {"ok": True, "n": 3, "items": ["x", "y"]}},
        "b": {"output": {"ok": False}},
    }


def test_an_agent_output_can_never_shadow_workflow_inputs():
    context = template_context(inputs={"topic": "tides"}, outputs={"workflow": "sneaky"})

    assert context["workflow"] == {"input": {"topic": "tides"}, "name": ""}


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
def test_an_output_value_keeps_the_type_of_a_single_expression(source, expected):
    context = template_context(inputs={}, outputs={"a": {"ok": True, "count": 2}})
    assert output_value(source, context, where="output 'x'") == expected


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'x' | center(10**9) }}", "a width of 1,000,000,000 would be longer than 1,000,000 characters"),
        ("{{ 'x'.ljust(10**9) }}", "a width of 1,000,000,000"),
        ("{{ 'x'.rjust(10**9) }}", "a width of 1,000,000,000"),
        ("{{ 'x'.zfill(10**9) }}", "a width of 1,000,000,000"),
        ("{{ 'x' | indent(10**9) }}", "a width of 1,000,000,000"),
        ("{{ ('a\n' * 50000) | indent('b' * 1000) }}", "indented text would be longer"),
        ("{{ ('\t' * 100000).expandtabs(100000) }}", "expanded text would be longer"),
        ("{{ ('x' * 100000).replace('', 'y' * 100000) }}", "replaced text would be longer"),
        ("{{ ('x' * 100000) | replace('x', 'y' * 100000) }}", "replaced text would be longer"),
        ("{{ (['a' * 100000] * 100000) | join }}", "joined text would be longer"),
        ("{{ ''.join(['a' * 100000] * 100000) }}", "joined text would be longer"),
        ("{{ (range(100000) | list) | map('center', 100000) | join }}", "joined text would be longer"),
        ("{{ '%999999999d' | format(1) }}", "a width of 999,999,999"),
        ("{{ '%999999999d' % 1 }}", "a width of 999,999,999"),
        ("{{ '%*d' % (10**9, 1) }}", "'*' width or precision is not allowed"),
        ("{{ ('%s' * 20) | format(*(['x' * 100000] * 20)) }}", "formatted text would be longer"),
        ("{{ '{:999999999}'.format(1) }}", "a width of 999,999,999"),
        ("{{ '{0:{1}}'.format('x', 10**9) }}", "nested field"),
        ("{{ ('{0}' * 20).format('x' * 100000) }}", "formatted text would be longer"),
        ("{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format_map({'0': 'x' * 100000}) }}", "formatted text would be longer"),
        ("{{ [1] | batch(10**9, 'x') | list }}", "a batch size of 1,000,000,000"),
        ("{{ [1] | slice(10**9) | list }}", "a slice count of 1,000,000,000"),
        ("{{ ([[1] * 100000] * 1000) | sum(start=[]) }}", "would be longer than 1,000,000"),
        ("{{ ['a'] | tojson(indent=10**9) }}", "JSON indent above 16"),
        ("{{ ('a b ' * 25000) | urlize(target='t' * 99999) }}", "linked text would be longer"),
        ("{{ ('x y ' * 20000) | wordwrap(1, wrapstring='y' * 100) }}", "wrapped text would be longer"),
        ("{{ 'abc'.translate({97: 'x' * 100000}) }}", "'translate' is not allowed"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "joined text would be longer",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "would be longer than 1,000,000",
        ),
        (
            "{% set ns = namespace(s=[0]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "would be longer than 1,000,000",
        ),
        (
            "{% set x %}{% for i in range(100000) %}{{ 'a' * 100000 }}{% endfor %}{% endset %}",
            "built more than 10,000,000 characters",
        ),
        ("{% for i in range(10**9) %}{% endfor %}", "Range too big"),
    ],
)
def test_a_huge_result_is_refused_before_it_is_built(source, reason):
    tracemalloc.start()
    try:
        with pytest.raises(TemplateFailure) as info:
            render(source, CONTEXT, where="agent 'a' prompt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert reason in info.value.reason
    assert peak < 50_000_000


@pytest.fixture
def short_render_budget():
    configure_render_budget(seconds=0.2)
    yield 0.2
    configure_render_budget(seconds=DEFAULT_RENDER_SECONDS)


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in a.output.items * 50000 %}{% for j in a.output.items * 50000 %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% for i in range(100000) %}{{ (range(1000) | list | sort | first) }}{% endfor %}" * 20,
    ],
)
def test_a_render_that_runs_past_its_cpu_budget_fails(short_render_budget, source):
    started = time.process_time()
    with pytest.raises(TemplateFailure) as info:
        render(source, CONTEXT, where="agent 'a' prompt")

    assert time.process_time() - started < short_render_budget + 0.5
    assert info.value.reason == "rendering took more than 0.2 s of CPU time (the TEMPLATE_RENDER_SECONDS limit)"


def test_route_conditions_and_outputs_have_the_same_budget(short_render_budget):
    slow = "(range(100000) | map('string') | map('center', 9) | list | length) * 0 + (range(100000) | list | sum)"
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

    with pytest.raises(TemplateFailure, match="TEMPLATE_RENDER_SECONDS"):
        evaluate(" + ".join([f"({slow})"] * 8), CONTEXT, where="when")
    with pytest.raises(TemplateFailure, match="TEMPLATE_RENDER_SECONDS"):
        output_value(loop, CONTEXT, where="output 'x'")


def test_the_guards_leave_ordinary_templates_alone():
    source = (
        "{% macro tag(x) %}<{{ x }}>{% endmacro %}{% for i in a.output.items %}{{ tag(i) ~ loop.index }}{% endfor %}"
        "|{{ a.output.items | join(', ') }}|{{ '%s-%03d' | format('n', a.output.n) }}|{{ 'a{}b'.format(1) }}"
        "|{{ 'abc'.replace('b', 'x') }}|{{ {'k': 1} | tojson }}|{{ [1, 2] | sum }}|{{ 'ab'.center(6, '*') }}"
        "|{% set y %}s{{ 1 }}{% endset %}{{ y }}|{% filter upper %}q{% endfilter %}|{{ 'x' * 3 + 'y' }}"
    )

    assert render(source, CONTEXT, where="t") == '<x>1<y>2|x, y|n-003|a1b|axc|{"k": 1}|3|**ab**|s1|Q|xxxy'


def test_renders_inside_one_render_budget_share_it(short_render_budget):
    small = "{% for j in range(100000) %}{% endfor %}ok"  # a few milliseconds each
    assert all(render(small, CONTEXT, where="t") == "ok" for _ in range(60))  # each alone is within budget

    with pytest.raises(TemplateFailure, match="TEMPLATE_RENDER_SECONDS"):
        with render_budget():
            for _ in range(1000):
                render(small, CONTEXT, where="t")
