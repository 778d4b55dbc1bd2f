"""Route conditions as conductor evaluates them: `{{ }}` templates and bare simpleeval expressions over
conductor's flattened names, bounded like templates; route `output` transforms and the run's output."""

import time

import pytest

from workflows.definition import (
    END,
    Complete,
    GoTo,
    TemplateFailure,
    load_definition,
    next_move,
    parsed_text,
    template_context,
)
from workflows.definition.conditions import condition_check, condition_holds
from workflows.definition.templates import DEFAULT_RENDER_SECONDS, configure_render_budget

OUTPUT = {"score": 5, "approved": False, "category": "technical", "items": []}


def context(**extra):
    base = template_context(
        inputs={"topic": "tides"}, outputs={"judge": OUTPUT}, workflow_name="wf", iteration=3
    )
    return {**base, "output": OUTPUT, **extra}


@pytest.mark.parametrize(
    ("when", "holds"),
    [
        ("{{ output.approved }}", False),
        ("{{ not output.approved }}", True),
        ("{{ output.category == 'technical' }}", True),
        ("{{ context.iteration < 3 }}", False),
        ("{{ workflow.name == 'wf' }}", True),
        ("score < 7", True),  # conductor: the output's fields by their bare names
        ("output_score >= 5 and context_iteration == 3", True),  # and <key>_<field>
        ("workflow_input['topic'] == 'tides'", True),
        ("judge_output.score == 5", True),
        ("output.approved == true", False),
        ("output.approved == false", True),
        ("category == 'technical' or score > 100", True),
        ("items", False),  # the field `items`, not the dict method
        ("int('7') > score", True),
    ],
)
def test_conditions_see_the_steps_own_output_its_progress_and_the_workflow(when, holds):
    assert condition_check(when) is None
    assert condition_holds(when, context(), where="w") is holds


@pytest.mark.parametrize(("text", "holds"), [("yes", True), ("No", False), ("0", False), ("", False), ("maybe", True)])
def test_a_template_condition_that_yields_text_is_judged_by_conductors_words(text, holds):
    assert condition_holds("{{ output.word }}", context(output={"word": text}), where="w") is holds


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("f'{score:>999999999}'", "JoinedStr is not allowed"),
        ("'x'.ljust(10 ** 9)", "only int(), float(), str() may be called"),
        ("output.__class__", "names starting with '_' are not allowed"),
        ("score <", "SyntaxError"),
    ],
)
def test_a_bare_condition_that_could_escape_or_build_without_bound_is_refused_at_upload(when, reason):
    assert reason in condition_check(when)


@pytest.mark.parametrize(
    "when",
    ["9 ** 9 ** 9", "10 ** 5000 * 10 ** 5000", "'x' * 10 ** 7", "str(score) * 2000000", "'%s' % score"],
)
def test_a_bare_condition_is_bounded_like_a_template(when):
    started = time.process_time()
    with pytest.raises(TemplateFailure):
        condition_holds(when, context(), where="agent 'judge' routes[0].when")
    assert time.process_time() - started < 1


@pytest.fixture
def short_render_budget():
    configure_render_budget(seconds=0.02)
    yield
    configure_render_budget(seconds=DEFAULT_RENDER_SECONDS)


def test_a_bare_condition_has_the_render_time_budget(short_render_budget):
    long = " and ".join(["(score < 7)"] * 20_000)
    assert condition_check(long) is None
    with pytest.raises(TemplateFailure, match="TEMPLATE_RENDER_SECONDS"):
        condition_holds(long, context(), where="w")


def test_a_condition_nested_deeper_than_evaluation_can_follow_is_refused_at_upload():
    assert "nests more than 60 levels" in condition_check("-" * 200 + "score < 7")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("True", True),
        ("None", None),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("[1, 2]", [1, 2]),
        ("null", None),
        ("42", 42),
        ("4.5", 4.5),
        ("1e5", "1e5"),  # conductor tries float only for text with a point
        ("[not json", "[not json"),
        ("9" * 400 + ".0", "9" * 400 + ".0"),  # infinity cannot be stored: the text stays
        ("[" * 100_000, "[" * 100_000),
        ("plain words", "plain words"),
    ],
)
def test_output_text_is_read_back_as_conductor_reads_it(text, value):
    assert parsed_text(text) == value


ROUTED = """
workflow:
  name: routed
  entry_point: judge
  runtime: {provider: fake, default_model: m}
agents:
  - name: judge
    prompt: Judge.
    output: {score: {type: number}, notes: {type: array}}
    routes:
      - {to: judge, when: "score < 3", output: {ignored: "{{ output.score }}"}}
      - to: $end
        output: {verdict: "{{ output | json }}", passed: "{{ output.score >= 3 }}", note: "{{ output.notes | join(',') }}"}
output:
  score: "{{ judge.output.score }}"
  verdict: overwritten by the route
  steps: "{{ context.iteration }}"
"""


def test_an_end_routes_output_is_laid_over_the_workflows_output_and_parsed():
    definition = load_definition(ROUTED)
    judge = definition.agent("judge")
    low = template_context(inputs={}, outputs={"judge": {"score": 1, "notes": []}}, iteration=1)
    high = template_context(inputs={}, outputs={"judge": {"score": 4, "notes": ["a", "b"]}}, iteration=2)

    assert next_move(definition, judge, low) == GoTo("judge")
    assert next_move(definition, judge, high) == Complete(
        {"score": 4, "verdict": {"score": 4, "notes": ["a", "b"]}, "steps": 2, "passed": True, "note": "a,b"}
    )
    assert judge.routes[0].to != END and judge.routes[0].output == {"ignored": "{{ output.score }}"}
