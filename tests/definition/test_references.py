"""Every name a template or condition uses is resolved at upload, with its path: what the run could
never supply is refused before it spends anything."""

import pytest

from workflows.definition import DefinitionError, Problem, load_definition

BASE = """
workflow:
  name: refs
  entry_point: writer
  runtime: {provider: fake, default_model: m}
  input:
    topic: {type: string}
agents:
  - name: writer
    prompt: "{{ workflow.input.topic }} {{ workflow.name }} pass {{ context.iteration }}"
    output: {draft: {type: string}, meta: {type: object, properties: {words: {type: integer}}}}
    routes: [{to: reviewer}]
  - name: reviewer
    prompt: "{{ writer.output.draft }} {{ writer.output.meta.words }} {% if reviewer is defined %}again{% endif %}"
    output: {approved: {type: boolean}, score: {type: number}}
    routes:
      - {to: $end, when: "{{ output.approved }}"}
      - {to: writer, when: "score < 7 and reviewer_output.approved == false"}
      - {to: $end}
output:
  draft: "{{ writer.output.draft }}"
"""


def problems(source: str) -> list[Problem]:
    with pytest.raises(DefinitionError) as refused:
        load_definition(source)
    return refused.value.problems


def test_names_that_can_exist_where_they_are_rendered_upload():
    definition = load_definition(BASE)
    assert (definition.reads_budget, definition.reads_team_budget) == (False, False)


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            "{{ writer.output.draft }} {{",
            "{{ reviewr.output.draft }} {{",
            "agents[1].prompt",
            "unknown name 'reviewr' in template (did you mean 'reviewer'?)",
        ),
        (
            "{{ workflow.input.topic }}",
            "{{ workflow.input.subject }}",
            "agents[0].prompt",
            "'workflow.input' has no 'subject' (the workflow's input has topic)",
        ),
        (
            '"{{ output.approved }}"',
            '"{{ output.aproved }}"',
            "agents[1].routes[0].when",
            "'output' has no 'aproved' (the output of agent 'reviewer' has approved, score)",
        ),
        ("score < 7 and", "scor < 7 and", "agents[1].routes[1].when", "unknown name 'scor' in condition (did you mean 'score'?)"),
        ("{{ writer.output.meta.words }}", "{{ writer.output.meta.pages }}", "agents[1].prompt", "'writer.output.meta' has no 'pages' (the object has words)"),
        ("{{ context.iteration }}", "{{ context.history }}", "agents[0].prompt", "'context.history': context.history (the agents run so far, in order) is not supported; use context.iteration"),
        ("{{ workflow.name }}", "{{ workflow.dir }}", "agents[0].prompt", "'workflow.dir': conductor's workflow.dir is the folder of its YAML file; a run of this service has no files"),
        ("{{ workflow.name }}", "{{ budget.left }}", "agents[0].prompt", "'budget' has no 'left' (budget has budget_usd, spent_usd, remaining_usd, mode, team_remaining_usd)"),
        ('draft: "{{ writer.output.draft }}"', 'draft: "{{ output.approved }}"', "output.draft", "'output' (a step's own output) is only seen by its routes' 'when' and 'output'"),
    ],
)
def test_a_name_that_cannot_exist_where_it_renders_is_refused_with_its_path(old, new, path, message):
    assert old in BASE
    assert problems(BASE.replace(old, new, 1)) == [Problem(path, message)]


def test_an_agent_that_cannot_have_run_before_is_refused_and_one_that_may_have_is_not():
    looped = BASE.replace("{{ workflow.name }}", "{% if reviewer is defined %}{{ reviewer.output.score }}{% endif %}")
    assert load_definition(looped)  # reviewer loops back to writer: on a second pass it has run
    straight = looped.replace("{to: writer, when:", "{to: $end, when:")
    never = "'reviewer' cannot have run before this is rendered: no path of routes from the entry point passes through it first"
    # Without the loop, neither the writer nor the reviewer itself can ever see the reviewer's output.
    assert problems(straight) == [Problem("agents[0].prompt", never), Problem("agents[1].prompt", never)]


def test_reading_the_budget_is_known_from_the_definition():
    prompt = "{{ budget.remaining_usd }}"
    definition = load_definition(BASE.replace("{{ workflow.name }}", prompt))
    assert (definition.reads_budget, definition.reads_team_budget) == (True, False)
    definition = load_definition(BASE.replace("score < 7", "budget_team_remaining_usd > 1"))
    assert (definition.reads_budget, definition.reads_team_budget) == (True, True)


@pytest.mark.parametrize("name", ["context", "budget", "output"])
def test_the_names_templates_see_are_reserved(name):
    source = BASE.replace("name: reviewer", f"name: {name}").replace("to: reviewer", f"to: {name}")
    source = source.replace("reviewer is defined", "writer is defined").replace("reviewer_output.approved", "approved")
    assert any(p.path == "agents[1].name" and "is reserved" in p.message for p in problems(source))


GATED = """
workflow: {name: gated, entry_point: draft, runtime: {provider: fake, default_model: m}}
agents:
  - {name: draft, prompt: Draft., output: {text: {type: string}}, routes: [{to: approval}]}
  - name: approval
    type: human_gate
    prompt: "Publish {{ draft.output.text }}?"
    options:
      - {label: Publish, value: go, route: publish}
      - {label: Stop, value: stop, route: $end}
  - {name: publish, prompt: "Publish {{ draft.output.text }} ({{ approval.output.selected }}) {{ later.output.x }}", routes: [{to: later}]}
  - {name: later, prompt: Later., output: {x: {type: string}}}
"""


def test_an_agent_reached_through_a_gates_option_sees_what_ran_before_the_gate_and_not_after():
    # `publish` follows the gate through an option, not a route: what it reads is checked all the same.
    [problem] = problems(GATED)

    assert problem.path == "agents[2].prompt"
    assert "'later' cannot have run before this is rendered" in problem.message


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ("{name: s, type: set, value: '{{ nosuch.output.x }}'}", "agents[1].value"),
        ("{name: s, type: set, values: {a: '{{ workflow.input.nope }}'}}", "agents[1].values.a"),
        ("{name: s, type: terminate, status: success, reason: '{{ nosuch.output }}'}", "agents[1].reason"),
        ("{name: s, type: terminate, status: failed, reason: r, output_template: {o: '{{ first.output.nope }}'}}", "agents[1].output_template.o"),
        ("{name: s, type: human_gate, prompt: '{{ nosuch }}', options: [{label: A, value: a, route: $end}]}", "agents[1].prompt"),
        ("{name: s, type: questions, source: nosuch.output.qs}", "agents[1].source"),
        ("{name: s, type: questions, questions: [{text: '{{ nosuch }}'}]}", "agents[1].questions[0].text"),
        ("{name: s, type: wait, duration: '{{ nosuch }}s'}", "agents[1].duration"),
    ],
)
def test_the_templates_of_other_kinds_of_step_are_resolved_at_upload_too(step, path):
    source = f"""
workflow: {{name: w, entry_point: first, input: {{topic: {{type: string}}}}, runtime: {{provider: fake, default_model: m}}}}
agents:
  - {{name: first, prompt: hi, output: {{x: {{type: string}}}}, routes: [{{to: s}}]}}
  - {step}
"""
    assert path in [problem.path for problem in problems(source)]


def test_a_set_value_with_no_template_must_be_of_its_output_type():
    source = "workflow: {name: w, entry_point: s, runtime: {provider: fake}}\nagents: [{name: s, type: set, value: abc, output_type: integer}]\n"
    assert [(p.path, p.message.split(":")[0]) for p in problems(source)] == [("agents[0].value", "does not read as output_type integer")]


def test_a_terminate_steps_output_template_reads_its_own_output():
    source = """
workflow: {name: w, entry_point: stop, runtime: {provider: fake}}
agents:
  - {name: stop, type: terminate, status: failed, reason: "gave up", output_template: {why: "{{ stop.output.reason }}"}}
"""
    assert load_definition(source).steps["stop"].params["output_template"] == {"why": "{{ stop.output.reason }}"}
