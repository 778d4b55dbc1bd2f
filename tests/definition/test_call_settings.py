"""Conductor's reasoning effort, context tier and deadlines, as an agent or the runtime writes them:
checked at upload, each at its path, the agent's own winning over the runtime's."""

import math

import pytest

from workflows.definition import DefinitionError, WorkflowDefinition, load_definition

ROUTES = {"copilot": "openai"}


def definition(runtime: dict | None = None, **agent) -> dict:
    return {
        "workflow": {
            "name": "w",
            "entry_point": "a",
            "input": {"depth": {"type": "string", "required": False, "default": "high"}},
            "runtime": {"default_model": "gpt-5.2", **(runtime or {})},
        },
        "agents": [{"name": "a", "prompt": "Think.", **agent}],
    }


def agent(runtime: dict | None = None, **fields):
    return load_definition(definition(runtime, **fields), provider_routes=ROUTES).agent("a")


def problems(runtime: dict | None = None, **fields) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(definition(runtime, **fields), provider_routes=ROUTES)
    return {problem.path: problem.message for problem in caught.value.problems}


# --- reasoning effort ----------------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", "max"])
def test_each_of_conductors_efforts_is_taken_on_the_agent_and_as_the_runtimes_default(effort):
    assert agent(reasoning={"effort": effort}).reasoning_effort == effort
    assert agent({"default_reasoning_effort": effort}).reasoning_effort == effort


def test_the_agents_effort_wins_over_the_runtimes_and_none_means_no_reasoning():
    assert agent({"default_reasoning_effort": "low"}, reasoning={"effort": "max"}).reasoning_effort == "max"
    assert agent({"default_reasoning_effort": "low"}, reasoning=None).reasoning_effort == "low"
    assert agent().reasoning_effort is None


def test_an_agents_effort_may_be_a_template_whose_names_are_resolved_at_upload():
    template = "{{ workflow.input.depth }}"
    assert agent(reasoning={"effort": template}).reasoning_effort == template

    found = problems(reasoning={"effort": "{{ workflow.input.dpeth }}"})
    assert list(found) == ["agents[0].reasoning.effort"] and "dpeth" in found["agents[0].reasoning.effort"]
    found = problems(reasoning={"effort": "{{ workflow.input.depth "})
    assert "does not compile" in found["agents[0].reasoning.effort"]


@pytest.mark.parametrize(
    ("runtime", "fields", "path", "message"),
    [
        ({}, {"reasoning": {"effort": "ultra"}}, "agents[0].reasoning.effort", "one of low, medium, high, xhigh, max or a '{{ ... }}' template, not 'ultra'"),
        ({}, {"reasoning": {"effort": "High"}}, "agents[0].reasoning.effort", "not 'High'"),
        ({}, {"reasoning": {"effort": 3}}, "agents[0].reasoning.effort", "must be a string"),
        ({}, {"reasoning": {}}, "agents[0].reasoning.effort", "is required"),
        ({}, {"reasoning": "high"}, "agents[0].reasoning", "must be a mapping"),
        ({}, {"reasoning": {"effort": "high", "budget": 9}}, "agents[0].reasoning.budget", "unknown key"),
        # As in conductor, the runtime's default is a level, never a template.
        ({"default_reasoning_effort": "{{ workflow.input.depth }}"}, {}, "workflow.runtime.default_reasoning_effort", "one of low, medium, high, xhigh, max, not"),
        ({"default_reasoning_effort": ""}, {}, "workflow.runtime.default_reasoning_effort", "not ''"),
    ],
)  # fmt: skip
def test_an_effort_that_is_none_of_conductors_levels_is_refused_at_its_path(runtime, fields, path, message):
    found = problems(runtime, **fields)

    assert list(found) == [path]
    assert message in found[path]


def test_an_agent_that_reasons_needs_room_in_max_tokens_for_thinking_and_an_answer():
    found = problems(reasoning={"effort": "low"}, max_tokens=2047)
    assert list(found) == ["agents[0].max_tokens"]
    assert found["agents[0].max_tokens"].startswith("2047 is too small for agent 'a', which reasons")
    assert "at least 2048" in found["agents[0].max_tokens"]
    # The runtime's cap and default effort: refused where the cap is written. Templated or not, the
    # least is the same, so a template is judged at upload too.
    found = problems({"max_tokens": 1000, "default_reasoning_effort": "high"})
    assert list(found) == ["workflow.runtime.max_tokens"]
    assert "agents[0].max_tokens" in problems({"max_tokens": 4096}, reasoning={"effort": "{{ workflow.input.depth }}"}, max_tokens=100)

    assert agent(reasoning={"effort": "max"}, max_tokens=2048).max_tokens == 2048
    assert agent({"max_tokens": 1000}).max_tokens == 1000  # no reasoning: any cap


def test_only_an_agent_reasons_a_step_of_another_kind_may_not():
    document = definition()
    document["agents"].append({"name": "s", "type": "set", "value": "x", "reasoning": {"effort": "high"}})

    with pytest.raises(DefinitionError) as caught:
        load_definition(document, provider_routes=ROUTES)
    assert [problem.path for problem in caught.value.problems] == ["agents[1].reasoning"]


# --- context tier --------------------------------------------------------------------------------


def test_a_context_tier_is_checked_as_conductor_checks_it():
    assert agent(context_tier="long_context").context_tier == "long_context"
    assert agent({"default_context_tier": "default"}).context_tier == "default"
    assert agent({"default_context_tier": "default"}, context_tier="long_context").context_tier == "long_context"
    assert agent(context_tier="{{ workflow.input.depth }}").context_tier == "{{ workflow.input.depth }}"

    assert "not '1m'" in problems(context_tier="1m")["agents[0].context_tier"]
    assert "dpeth" in problems(context_tier="{{ workflow.input.dpeth }}")["agents[0].context_tier"]
    runtime = problems({"default_context_tier": "{{ workflow.input.depth }}"})
    assert "must be one of default, long_context, not" in runtime["workflow.runtime.default_context_tier"]


# --- deadlines -----------------------------------------------------------------------------------


def test_an_agents_deadline_is_the_least_of_its_timeout_and_its_session_which_falls_back_to_the_runtimes():
    assert agent().timeout_seconds is None
    assert agent({"max_session_seconds": 60}).timeout_seconds == 60
    assert agent({"max_session_seconds": 60}, max_session_seconds=90).timeout_seconds == 90  # the agent's wins
    assert agent({"max_session_seconds": 60}, timeout_seconds=30).timeout_seconds == 30
    assert agent({"max_session_seconds": 60}, timeout_seconds=120).timeout_seconds == 60
    assert agent(timeout_seconds=1.5).timeout_seconds == 1.5


@pytest.mark.parametrize("value", [0, 0.5, -1, True, "60", "60s", math.inf, math.nan, 366 * 24 * 3600 + 1])
@pytest.mark.parametrize("where", ["workflow.runtime.max_session_seconds", "agents[0].timeout_seconds", "agents[0].max_session_seconds"])
def test_a_deadline_is_a_number_of_seconds_from_1_to_the_longest_run(where, value):
    key = where.rsplit(".", 1)[-1]
    found = problems({key: value}) if where.startswith("workflow") else problems(**{key: value})

    assert list(found) == [where]


def test_only_an_agent_has_a_deadline_a_step_of_another_kind_may_not():
    document = definition()
    document["agents"].append({"name": "g", "type": "human_gate", "prompt": "Go?", "options": [{"label": "y", "value": "y", "route": "$end"}], "timeout_seconds": 5})

    with pytest.raises(DefinitionError) as caught:
        load_definition(document, provider_routes=ROUTES)
    assert [problem.path for problem in caught.value.problems] == ["agents[1].timeout_seconds"]


# --- stored versions -----------------------------------------------------------------------------


def test_the_settings_are_kept_in_a_stored_version_and_a_version_stored_before_them_reads_as_none():
    loaded = load_definition(
        definition(
            {"max_session_seconds": 60},
            reasoning={"effort": "{{ workflow.input.depth }}"},
            context_tier="long_context",
            timeout_seconds=20,
        ),
        provider_routes=ROUTES,
    )
    stored = loaded.to_dict()
    assert WorkflowDefinition.from_dict(stored) == loaded

    for key in ("reasoning_effort", "context_tier", "timeout_seconds"):
        del stored["agents"][0][key]
    old = WorkflowDefinition.from_dict(stored).agent("a")
    assert (old.reasoning_effort, old.context_tier, old.timeout_seconds) == (None, None, None)
