"""Provider names as conductor writes them: conductor's default, the object form, per-agent
providers, and the routes that give a runtime name (copilot, claude-agent-sdk, hermes) a backend."""

import pytest

from workflows.definition import (
    BACKENDS,
    DefinitionError,
    backend_of,
    load_definition,
    model_for_backend,
    route_problems,
)
from workflows.providers import get_provider


def workflow(runtime: dict | None = None, **agent_fields) -> dict:
    header = {"name": "w", "entry_point": "a"}
    if runtime is not None:
        header["runtime"] = runtime
    return {"workflow": header, "agents": [{"name": "a", "model": "m", "prompt": "hi", **agent_fields}]}


def problems(definition: dict, **options) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(definition, **options)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_a_workflow_that_names_no_provider_takes_conductors_default_and_needs_its_route():
    refused = problems(workflow())

    assert list(refused) == ["workflow.runtime.provider"]
    message = refused["workflow.runtime.provider"]
    assert "conductor's default" in message and "'copilot' is not routed" in message
    assert "PUT /api/v1/team/provider-routes" in message and "admin" in message

    routed = load_definition(workflow(), provider_routes={"copilot": "anthropic"})
    assert routed.agent("a").provider == "copilot"
    assert backend_of("copilot", {"copilot": "anthropic"}) == "anthropic"


@pytest.mark.parametrize(("name", "backend"), [("openai", "openai"), ("claude", "anthropic"), ("anthropic", "anthropic"), ("fake", "fake")])
def test_a_model_api_is_reached_directly_with_no_route(name, backend):
    assert load_definition(workflow({"provider": name})).agent("a").provider == name
    assert backend_of(name, {}) == backend


def test_the_object_form_gives_the_name_and_refuses_what_configures_an_endpoint_or_a_runtime():
    assert load_definition(workflow({"provider": {"name": "claude"}})).provider == "claude"
    # conductor's own default for the object form's name, too
    assert load_definition(workflow({"provider": {}}), provider_routes={"copilot": "openai"}).provider == "copilot"

    refused = problems(
        workflow({"provider": {"name": "claude", "base_url": "https://gateway.example", "api_key": "sk-written-out", "runtime_url": "localhost:3000"}})
    )
    assert set(refused) == {
        "workflow.runtime.provider.base_url",
        "workflow.runtime.provider.api_key",
        "workflow.runtime.provider.runtime_url",
    }
    assert "team's provider credentials" in refused["workflow.runtime.provider.api_key"]
    assert "route 'copilot'" in refused["workflow.runtime.provider.runtime_url"]


@pytest.mark.parametrize("key", ["base_url", "api_key", "auth_token", "bearer_token", "runtime_url", "runtime_token"])
def test_an_endpoint_or_a_key_read_from_the_environment_names_the_teams_credentials_and_is_accepted(key):
    """Conductor users write `${OPENAI_BASE_URL:-http://localhost:11434/v1}`: the environment here is
    the team's credentials and routes, which decide; nothing of the value is kept or used."""
    with_reference = load_definition(
        workflow({"provider": {"name": "openai", key: "${THE_VARIABLE:-http://localhost:11434/v1}"}})
    )

    assert with_reference.to_dict() == load_definition(workflow({"provider": {"name": "openai"}})).to_dict()
    # Anything more than the one reference is written out, and chooses: refused.
    refused = problems(workflow({"provider": {"name": "openai", key: "https://${HOST}/v1"}}))
    assert list(refused) == [f"workflow.runtime.provider.{key}"]


def test_hermes_toolsets_may_only_be_empty_which_is_what_every_agent_has():
    routes = {"hermes": "anthropic"}
    assert load_definition(workflow({"provider": {"name": "hermes", "hermes_toolsets": []}}), provider_routes=routes)

    refused = problems(workflow({"provider": {"name": "hermes", "hermes_toolsets": ["web"]}}), provider_routes=routes)
    assert list(refused) == ["workflow.runtime.provider.hermes_toolsets"]
    assert "that runtime's built-in tools, which are not offered here" in refused["workflow.runtime.provider.hermes_toolsets"]


def test_an_agent_names_its_own_provider_and_an_unused_default_needs_no_route():
    definition = load_definition(workflow(provider="claude"))

    assert (definition.provider, definition.agent("a").provider) == ("copilot", "claude")
    assert definition.providers() == {"claude"}

    refused = problems(workflow({"provider": "openai"}, provider="hermes"))
    assert list(refused) == ["agents[0].provider"]
    assert "'hermes' is not routed" in refused["agents[0].provider"]


def test_a_for_each_agent_takes_the_workflows_provider():
    definition = {
        "workflow": {"name": "w", "entry_point": "each", "input": {"items": {"type": "array"}}},
        "agents": [{"name": "summary", "model": "m", "prompt": "sum up", "provider": "openai"}],
        "for_each": [
            {
                "name": "each",
                "type": "for_each",
                "source": "workflow.input.items",
                "as": "item",
                "agent": {"model": "m", "prompt": "{{ item }}"},
                "routes": [{"to": "summary"}],
            }
        ],
    }
    refused = problems(definition)
    assert "'copilot' is not routed" in refused["workflow.runtime.provider"]

    routed = load_definition(definition, provider_routes={"copilot": "openai"})
    assert routed.providers() == {"copilot", "openai"}


def test_unknown_and_unsupported_providers_are_named():
    refused = problems(workflow({"provider": "copliot"}))
    assert "unknown provider 'copliot'" in refused["workflow.runtime.provider"]
    assert "copilot" in refused["workflow.runtime.provider"]

    refused = problems(workflow({"provider": {"name": "aca", "pool_endpoint": "https://pool.example"}}))
    assert "'aca' is not supported" in refused["workflow.runtime.provider.name"]
    assert "'aca' sandbox" in refused["workflow.runtime.provider.pool_endpoint"]


def test_a_route_leads_from_a_runtime_name_to_a_model_api():
    assert route_problems({"copilot": "openai", "claude-agent-sdk": "anthropic", "hermes": "openai"}) == []
    assert route_problems({}) == []

    found = dict(route_problems({"claude": "openai", "copilot": "fake", "codex": "openai"}))
    assert "reaches its backend directly" in found["claude"]
    assert "must route to one of anthropic, openai" in found["copilot"]
    assert "not a provider that can be routed" in found["codex"]
    assert route_problems(["copilot"]) == [("", "must be an object mapping provider names to backends")]


def test_every_backend_is_a_provider_this_service_can_call():
    assert {get_provider(name).name for name in (*BACKENDS, "fake")} == {*BACKENDS, "fake"}


@pytest.mark.parametrize(
    ("model", "backend", "asked"),
    [
        ("claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5"),
        ("claude-opus-4.1", "anthropic", "claude-opus-4-1"),
        ("claude-sonnet-4-5-20250929", "anthropic", "claude-sonnet-4-5-20250929"),
        ("claude-sonnet-4.5", "openai", "claude-sonnet-4.5"),  # a gateway's name is the gateway's
        ("gpt-5.1", "openai", "gpt-5.1"),
    ],
)
def test_a_claude_model_written_as_copilot_writes_it_is_asked_of_anthropic_by_anthropics_name(model, backend, asked):
    assert model_for_backend(model, backend) == asked
