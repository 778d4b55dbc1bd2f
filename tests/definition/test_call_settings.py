"""Conductor's deadlines, as an agent or the runtime writes them: checked at upload, each at its
path, the agent's own winning over the runtime's."""

import math

import pytest

from workflows.definition import DefinitionError, WorkflowDefinition, load_definition

ROUTES = {"copilot": "openai"}


def definition(runtime: dict | None = None, **agent) -> dict:
    return {
        "workflow": {
            "name": "w",
            "entry_point": "a",
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


def test_the_deadline_is_kept_in_a_stored_version_and_a_version_stored_before_it_reads_as_none():
    loaded = load_definition(definition({"max_session_seconds": 60}, timeout_seconds=20), provider_routes=ROUTES)
    stored = loaded.to_dict()
    assert WorkflowDefinition.from_dict(stored) == loaded

    del stored["agents"][0]["timeout_seconds"]
    assert WorkflowDefinition.from_dict(stored).agent("a").timeout_seconds is None
