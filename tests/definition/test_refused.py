"""What conductor's format has and this service does not run is refused at upload, at its path, with
its reason; the few keys that cannot change a run's output, cost or course are checked and ignored."""

import pytest

from workflows.definition import DefinitionError, Problem, load_definition
from workflows.definition._section import Section

ROUTES = {"copilot": "openai"}


def definition(**edits) -> dict:
    """A one-agent workflow; `edits` maps a dotted location to a value, as in `workflow__runtime__x`."""
    document = {
        "workflow": {"name": "w", "entry_point": "a", "runtime": {"default_model": "gpt-4o"}},
        "agents": [{"name": "a", "prompt": "hi", "routes": [{"to": "$end"}], "output": {"x": {"type": "string"}}}],
    }
    for location, value in edits.items():
        *parents, last = location.split("__")
        node = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
    return document


def problems(document) -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(document, provider_routes=ROUTES)
    return caught.value.problems


@pytest.mark.parametrize(
    ("location", "value", "path", "reason"),
    [
        # keys of a coding-agent runtime
        ("workflow__runtime__skills", ["conductor"], "workflow.runtime.skills", "system_prompt"),
        ("workflow__runtime__skill_injection", {"max_bytes": 1}, "workflow.runtime.skill_injection", "skills are not supported"),
        ("workflow__runtime__skill_discovery", {"sources": ["personal"]}, "workflow.runtime.skill_discovery", "worker's files"),
        ("workflow__runtime__plugins", ["prs"], "workflow.runtime.plugins", "coding-agent runtime"),
        ("workflow__runtime__plugin_sources", {"acme": "acme/p"}, "workflow.runtime.plugin_sources", "plugins are not supported"),
        ("workflow__runtime__working_dir", ".", "workflow.runtime.working_dir", "worker's files"),
        ("workflow__instructions", ["Answer in English."], "workflow.instructions", "system_prompt"),
        ("agents__0__skills", ["./skills"], "agents[0].skills", "system_prompt"),
        ("agents__0__plugins", ["prs"], "agents[0].plugins", "coding-agent runtime"),
        ("agents__0__working_dir", "/repo", "agents[0].working_dir", "worker's files"),
        ("agents__0__sandbox", {"working_dir": "/workspace"}, "agents[0].sandbox", "'aca'"),
        # what has another mechanism here
        ("workflow__runtime__timeout", 60, "workflow.runtime.timeout", "PROVIDER_TIMEOUT_SECONDS"),
        ("agents__0__retry", {"max_attempts": 3}, "agents[0].retry", "PROVIDER_MAX_RETRIES"),
        ("workflow__hooks", {"on_start": "x"}, "workflow.hooks", "webhook"),
        # not there yet
        ("workflow__context", {"mode": "explicit", "trim_strategy": "summarize"}, "workflow.context.trim_strategy", "trimming the context"),
        ("agents__0__output_mode", "raw", "agents[0].output_mode", "text"),
        # another step kind's field on an agent
        ("agents__0__command", "ls", "agents[0].command", "conductor's 'script' steps"),
        ("agents__0__duration", "5s", "agents[0].duration", "conductor's 'wait' steps"),
        ("agents__0__input_mapping", {}, "agents[0].input_mapping", "conductor's 'workflow' steps"),
    ],
)
def test_a_conductor_key_this_service_does_not_run_is_refused_with_its_reason(location, value, path, reason):
    [problem] = problems(definition(**{location: value}))

    key = path.rsplit(".", 1)[-1]
    assert problem.path == path
    assert problem.message.startswith(f"'{key}' is not supported: ")
    assert reason in problem.message


@pytest.mark.parametrize("location", ["tools", "agents__0__tools"])
def test_tools_written_as_none_leave_agents_without_tools(location):
    """Conductor's `tools: []` is "no tools": with or without MCP servers, the agent makes one call."""
    servers = {"search": {"type": "http", "url": "https://search.example/mcp"}}
    with_no_tools = load_definition(
        definition(**{location: [], "workflow__runtime__mcp_servers": servers}), provider_routes=ROUTES
    )

    if location == "tools":
        # An empty top-level list chooses nothing: the agents see every tool, as in conductor.
        assert with_no_tools.agent("a").tool_servers == ("search",)
    else:
        assert (with_no_tools.agent("a").tool_servers, with_no_tools.agent("a").tools) == ((), ())
        assert not with_no_tools.agent("a").uses_tools


@pytest.mark.parametrize("value", ["web_search", {"web_search": True}])
def test_tools_that_are_not_a_list_are_refused_as_such(value):
    [problem] = problems(definition(agents__0__tools=value))

    assert (problem.path, problem.message) == ("agents[0].tools", "must be a list, not " + ("a string" if isinstance(value, str) else "a mapping"))


def test_a_subworkflow_the_team_does_not_have_is_one_problem_not_one_per_field():
    document = definition()
    document["agents"].append({"name": "sub", "type": "workflow", "workflow": "./child.yaml", "input_mapping": {"a": "b"}})

    [problem] = problems(document)

    assert problem.path == "agents[1].workflow"
    assert "no workflow named 'child'" in problem.message


@pytest.mark.parametrize(
    ("location", "value"),
    [
        ("agents__0__prompt", "Summarise ${REPO} for me."),
        ("workflow__runtime__default_model", "${MODEL:-gpt-4o}"),
        ("workflow__input", {"topic": {"type": "string", "default": "${TOPIC:-budgets}"}}),
    ],
)
def test_environment_interpolation_is_refused_and_never_reads_the_environment(monkeypatch, location, value):
    monkeypatch.setenv("REPO", "secret-repo")
    monkeypatch.setenv("MODEL", "secret-model")
    monkeypatch.setenv("TOPIC", "secret-topic")

    [problem] = problems(definition(**{location: value}))

    assert problem.path == {
        "agents__0__prompt": "agents[0].prompt",
        "workflow__runtime__default_model": "workflow.runtime.default_model",
        "workflow__input": "workflow.input.topic.default",
    }[location]
    assert "environment variable" in problem.message
    assert "workflow input" in problem.message
    assert "secret" not in problem.message


def test_an_interpolation_default_is_offered_as_the_value_to_write():
    [problem] = problems(definition(workflow__runtime__default_model="${MODEL:-gpt-4o}"))

    assert problem.message.startswith("'${MODEL:-gpt-4o}' would read the environment variable 'MODEL'")
    assert "its default here is 'gpt-4o'" in problem.message


def test_a_key_refused_for_itself_is_not_refused_again_for_its_interpolation():
    document = definition(workflow__runtime__provider={"name": "copilot", "headers": "${GATEWAY_HEADERS}"})

    [problem] = problems(document)

    assert problem.path == "workflow.runtime.provider.headers"
    assert "team's provider credentials" in problem.message


def test_a_file_include_is_refused_at_its_path():
    source = """
workflow:
  name: w
  entry_point: a
  runtime: {default_model: gpt-4o}
agents:
  - name: a
    prompt: !file prompts/a.md
"""
    [problem] = problems(source)

    assert problem.path == "agents[0].prompt"
    assert problem.message.startswith("'!file' includes are not supported")


def test_keys_that_change_no_output_cost_or_course_are_accepted():
    document = definition(
        workflow__metadata={"team": "docs", "ticket": 42},
        workflow__cost={"show_per_agent": False, "show_summary": True},
        workflow__runtime__max_agent_iterations=50,
        workflow__runtime__checkpoint={"every_agent": True, "every_seconds": 60, "keep_last": 3},
        workflow__runtime__tool_output={"enabled": True, "max_chars": 20000, "spill_to_file": False, "spill_dir": "/tmp"},
        agents__0__max_agent_iterations=5,
    )

    loaded = load_definition(document, provider_routes=ROUTES)

    assert loaded.agent("a").prompt == "hi"
    assert "metadata" not in loaded.to_dict()


@pytest.mark.parametrize(
    ("location", "value", "path", "message"),
    [
        ("workflow__metadata", "docs", "workflow.metadata", "must be a mapping"),
        ("workflow__cost", {"show_summary": "yes"}, "workflow.cost.show_summary", "true or false"),
        ("workflow__runtime__max_agent_iterations", 0, "workflow.runtime.max_agent_iterations", "0"),
        ("agents__0__max_agent_iterations", 501, "agents[0].max_agent_iterations", "501"),
        ("workflow__runtime__checkpoint", {"keep_last": 500}, "workflow.runtime.checkpoint.keep_last", "500"),
        ("workflow__runtime__checkpoint", {"every_agents": True}, "workflow.runtime.checkpoint.every_agents", "unknown key"),
        ("workflow__runtime__tool_output", {"max_chars": 10}, "workflow.runtime.tool_output.max_chars", "10"),
    ],
)
def test_an_ignored_key_is_still_checked(location, value, path, message):
    [problem] = problems(definition(**{location: value}))

    assert problem.path == path
    assert message in problem.message


def test_a_key_a_section_implements_wins_over_a_refusal_written_for_it():
    found: list[Problem] = []

    Section({"reasoning": {"effort": "high"}, "retry": 3}, "agents[0]", found, keys=("reasoning",), unsupported={"reasoning": "no", "retry": "no"})

    assert found == [Problem("agents[0].retry", "'retry' is not supported: no")]
