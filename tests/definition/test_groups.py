"""Parsing and validating `parallel:` and `for_each:` groups."""

import copy
from typing import Any

import pytest
import yaml

from workflows.definition import (
    DefinitionError,
    ForEachSpec,
    ParallelSpec,
    Problem,
    WorkflowDefinition,
    load_definition,
    resolve_reference,
    template_context,
)
from workflows.definition.errors import TemplateFailure

GROUPS_YAML = """
workflow:
  name: groups
  entry_point: planner
  runtime: {provider: fake, default_model: sim}
  input:
    topics: {type: array, default: [a, b]}
agents:
  - name: planner
    prompt: Plan.
    routes: [{to: reviews}]
  - name: security
    prompt: "Review security of {{ planner.output }}"
  - name: style
    prompt: Review style.
  - name: summary
    prompt: "{{ reviews.outputs.security }} {{ analyses.outputs | length }} of {{ analyses.count }}"
parallel:
  - name: reviews
    description: Two reviews at once
    agents: [security, style]
    failure_mode: continue_on_error
    routes: [{to: analyses}]
for_each:
  - name: analyses
    type: for_each
    source: workflow.input.topics
    as: topic
    max_concurrent: 3
    failure_mode: all_or_nothing
    agent:
      prompt: "Analyse {{ topic }} ({{ _index }}, {{ _key }})"
    routes: [{to: summary}]
"""


def document() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(GROUPS_YAML))


def problems_of(data: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_definition(data)
    return info.value.problems


def test_groups_are_read_with_conductor_defaults():
    data = document()
    del data["for_each"][0]["max_concurrent"]
    del data["for_each"][0]["as"]
    data["for_each"][0]["agent"]["prompt"] = "Analyse {{ item }}"  # `item` is what `as` defaults to
    del data["parallel"][0]["failure_mode"]
    definition = load_definition(data)

    assert definition.parallel["reviews"] == ParallelSpec(
        name="reviews",
        description="Two reviews at once",
        agents=("security", "style"),
        failure_mode="fail_fast",
        routes=definition.parallel["reviews"].routes,
    )
    analyses = definition.for_each["analyses"]
    assert (analyses.max_concurrent, analyses.as_name, analyses.failure_mode) == (10, "item", "all_or_nothing")
    # The inline agent carries the group's name, and runtime defaults apply to it as to any agent.
    assert analyses.agent.name == "analyses" and analyses.agent.model == "sim"
    assert definition.agent("analyses") is analyses.agent
    assert definition.group_names == {"reviews", "analyses"}


def test_entry_point_may_name_a_group():
    data = document()
    data["workflow"]["entry_point"] = "analyses"
    data["agents"][3]["prompt"] = "{{ analyses.count }}"  # `reviews` no longer runs before `summary`

    assert load_definition(data).entry_point == "analyses"


def test_a_definition_with_groups_survives_its_stored_form():
    definition = load_definition(GROUPS_YAML)
    data = definition.to_dict()

    assert WorkflowDefinition.from_dict(data) == definition
    assert isinstance(WorkflowDefinition.from_dict(data).for_each["analyses"], ForEachSpec)


def test_a_version_stored_before_groups_existed_still_loads():
    data = load_definition(GROUPS_YAML).to_dict()
    del data["parallel"], data["for_each"]

    assert WorkflowDefinition.from_dict(data).group_names == frozenset()


def test_inline_agent_models_must_be_priced_under_an_enforce_budget():
    data = document()
    data["workflow"]["limits"] = {"budget_usd": 1, "budget_mode": "enforce"}
    data["workflow"]["cost"] = {"pricing": {"sim": {"input_per_mtok": 1, "output_per_mtok": 1}}}
    data["for_each"][0]["agent"]["model"] = "unpriced"

    assert problems_of(data) == [Problem("for_each[0].agent.model", problems_of(data)[0].message)]
    assert "'unpriced' has no price" in problems_of(data)[0].message
    assert "unpriced" in load_definition(GROUPS_YAML).models() | {"unpriced"}


@pytest.mark.parametrize(
    ("location", "value", "path", "message"),
    [
        (("parallel", 0, "colour"), "red", "parallel[0].colour", "unknown key 'colour'"),
        (("for_each", 0, "key_by"), "item.id", "for_each[0].key_by", "'key_by' is not supported"),
        (("parallel", 0, "agents"), ["security"], "parallel[0].agents", "at least two agents"),
        (("parallel", 0, "agents"), ["security", "ghost"], "parallel[0].agents[1]", "no agent named 'ghost'"),
        (("parallel", 0, "agents"), ["security", "analyses"], "parallel[0].agents[1]", "groups cannot be nested"),
        (("parallel", 0, "agents"), ["style", "style", "security"], "parallel[0].agents[1]", "listed twice"),
        (("parallel", 0, "agents"), ["planner", "style"], "parallel[0].agents[0]", "has routes"),
        (("parallel", 0, "failure_mode"), "sometimes", "parallel[0].failure_mode", "must be one of fail_fast"),
        (("parallel", 0, "routes", 0, "to"), "nowhere", "parallel[0].routes[0].to", "no agent or group named"),
        (("parallel", 0, "name"), "planner", "parallel[0].name", "duplicate group name 'planner' (first used at agents[0])"),
        (("for_each", 0, "name"), "reviews", "for_each[0].name", "duplicate group name 'reviews' (first used at parallel[0])"),
        (("for_each", 0, "max_concurrent"), 0, "for_each[0].max_concurrent", "between 1 and 100"),
        (("for_each", 0, "max_concurrent"), 101, "for_each[0].max_concurrent", "between 1 and 100"),
        (("for_each", 0, "max_concurrent"), "many", "for_each[0].max_concurrent", "whole number"),
        (("for_each", 0, "source"), "topics", "for_each[0].source", "must be a reference like"),
        (("for_each", 0, "source"), "{{ planner.output }}", "for_each[0].source", "must be a reference like"),
        (("for_each", 0, "source"), "workflow.input.nope", "for_each[0].source", "no workflow input named 'nope'"),
        (("for_each", 0, "source"), "ghost.output.items", "for_each[0].source", "no agent named 'ghost'"),
        (("for_each", 0, "source"), "ghosts.outputs", "for_each[0].source", "no group named 'ghosts'"),
        (("for_each", 0, "source"), "analyses.outputs", "for_each[0].source", "its own outputs"),
        (("for_each", 0, "as"), "_index", "for_each[0].as", "'_index' is reserved"),
        (("for_each", 0, "as"), "planner", "for_each[0].as", "name of an agent or group"),
        (("for_each", 0, "as"), "two words", "for_each[0].as", "must be an identifier"),
        (("for_each", 0, "type"), "parallel", "for_each[0].type", "must be 'for_each'"),
        (("for_each", 0, "agent", "routes"), [{"to": "summary"}], "for_each[0].agent.routes", "takes no routes"),
        (("for_each", 0, "agent", "prompt"), "{{ oops", "for_each[0].agent.prompt", "does not compile"),
        (("for_each", 0, "agent", "name"), "style", "for_each[0].agent.name", "duplicate agent name 'style'"),
        (("agents", 0, "routes", 0, "to"), "reveiws", "agents[0].routes[0].to", "did you mean 'reviews'?"),
        (("workflow", "entry_point"), "nobody", "workflow.entry_point", "no agent or group named 'nobody'"),
        (("agents", 3, "input"), ["reviews.outputs.security"], None, None),
        (("agents", 3, "input"), ["reviewz.outputs"], "agents[3].input[0]", "no group named 'reviewz'"),
    ],
)
def test_each_group_mistake_is_reported_at_its_path(location, value, path, message):
    data = document()
    node = data
    for part in location[:-1]:
        node = node[part]
    node[location[-1]] = value
    if path is None:
        load_definition(data)
        return
    problems = problems_of(data)
    # Renaming a group also leaves its routes dangling; that is reported too.
    assert any(problem.path == path and message in problem.message for problem in problems), problems


def test_every_problem_of_a_group_is_reported_at_once():
    data = document()
    data["for_each"][0].update(source="nope", max_concurrent=-1, failure_mode="never", agent={"name": 3})
    data["parallel"][0]["agents"] = ["ghost", "style"]

    paths = {problem.path for problem in problems_of(data)}

    assert {
        "parallel[0].agents[0]",
        "for_each[0].source",
        "for_each[0].max_concurrent",
        "for_each[0].failure_mode",
        "for_each[0].agent.name",
        "for_each[0].agent.prompt",
    } <= paths


def test_a_group_without_a_name_or_agents_is_reported():
    data = document()
    data["parallel"].append({"routes": []})
    data["for_each"].append({"name": "bare", "source": "workflow.input.topics"})

    paths = {problem.path for problem in problems_of(data)}

    assert paths == {"parallel[1].name", "parallel[1].agents", "for_each[1].agent"}


def test_templates_see_group_results_as_they_are_and_agent_outputs_under_output():
    context = template_context(
        inputs={"x": 1},
        outputs={"planner": {"plan": "p"}, "reviews": {"outputs": {"style": "ok"}, "errors": {}}},
        groups={"reviews"},
    )

    assert context["planner"] == {"output": {"plan": "p"}}
    assert context["reviews"]["outputs"]["style"] == "ok"
    assert resolve_reference("reviews.outputs.style", context, where="source") == "ok"
    assert resolve_reference("planner.output.plan", context, where="source") == "p"
    with pytest.raises(TemplateFailure, match="has no 'missing'"):
        resolve_reference("planner.output.missing", context, where="source")


def test_a_parallel_group_runs_agents_only():
    source = """
workflow: {name: w, entry_point: g, runtime: {provider: fake, default_model: m}}
agents:
  - {name: a, prompt: hi}
  - {name: pause, type: wait, duration: 5}
parallel:
  - {name: g, agents: [a, pause]}
"""
    with pytest.raises(DefinitionError) as refused:
        load_definition(source)
    assert [(p.path, p.message) for p in refused.value.problems] == [
        ("parallel[0].agents[1]", "'pause' is a wait step; a parallel group runs agents")
    ]


def test_a_group_inside_a_subworkflow_is_found_by_its_path_and_counted_in_its_paths():
    from pathlib import Path

    from workflows.definition.subworkflows import longest_path

    here = Path(__file__).parent.parent / "conductor"
    quotes_source = (here / "supplier_quotes.yaml").read_text()

    def brief_running(quotes):
        return load_definition(
            (here / "supplier_brief.yaml").read_text(),
            workflows=lambda name: quotes if name == "supplier-quotes" else None,
        )

    quotes = load_definition(quotes_source)
    brief = brief_running(quotes)

    assert brief.group("scan/quotes") is quotes.for_each["quotes"]
    assert brief.group("scan/checks") is quotes.parallel["checks"]
    assert brief.group("scan/risk") is None  # an agent, not a group
    assert brief.group("brief/quotes") is None  # not a sub-workflow's step
    assert brief.group("quotes") is None  # the caller has no group of that name
    assert WorkflowDefinition.from_dict(brief.to_dict()).group("scan/quotes") == quotes.for_each["quotes"]
    assert longest_path(brief) == len("scan/pricing")
    long_agent = load_definition(quotes_source.replace("name: quoter", "name: quoter_of_each_supplier"))
    assert longest_path(brief_running(long_agent)) == len("scan/quoter_of_each_supplier")
    renamed = quotes_source.replace("name: checks", "name: checks_of_all_quotes")
    renamed = renamed.replace("to: checks", "to: checks_of_all_quotes").replace("checks.outputs", "checks_of_all_quotes.outputs")
    long_group = load_definition(renamed)
    assert longest_path(brief_running(long_group)) == len("scan/checks_of_all_quotes")
