"""A workflow that names the endpoint of its calls (conductor's `runtime.provider` object form with
`base_url`, `type` and `wire_api`): accepted where the team's credentials already point and the
backend speaks the wire named, refused otherwise, each problem at its path."""

import pytest

from workflows.definition import DefinitionError, WorkflowDefinition, load_definition, same_endpoint

LOCAL = "http://localhost:11434/v1"
PROVIDER = "workflow.runtime.provider"
COPILOT_TO_OPENAI = {"copilot": "openai"}


def workflow(provider: dict, **agent_fields) -> dict:
    return {
        "workflow": {"name": "w", "entry_point": "a", "runtime": {"provider": provider, "default_model": "llama3.1"}},
        "agents": [{"name": "a", "prompt": "hi", **agent_fields}],
    }


def local_llm(**changes: object) -> dict:
    """The runtime block of conductor's examples/copilot-local-llm.yaml."""
    provider = {
        "name": "copilot",
        "type": "openai",
        "wire_api": "completions",
        "base_url": LOCAL,
        "api_key": "${OPENAI_API_KEY:-ollama}",
    }
    return workflow({key: value for key, value in {**provider, **changes}.items() if value is not None})


def problems(definition: dict, **options) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(definition, **options)
    return {problem.path: problem.message for problem in caught.value.problems}


@pytest.mark.parametrize(
    "credentials",
    [LOCAL, "http://localhost:11434/v1/", "HTTP://LocalHost:11434/v1", "http://localhost:11434/v1//"],
)
def test_conductors_local_llm_runtime_is_accepted_where_the_teams_credentials_point_at_its_endpoint(credentials):
    """Compared without the case of the scheme and the host, or a trailing slash."""
    definition = load_definition(local_llm(), provider_routes=COPILOT_TO_OPENAI, provider_endpoints={"openai": credentials})

    assert (definition.provider, definition.endpoint) == ("copilot", LOCAL)  # as written
    assert definition.agent("a").model == "llama3.1"
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


def test_same_endpoint_ignores_a_default_port_and_keeps_paths_ports_and_queries_apart():
    assert same_endpoint("https://gateway.example/v1", "https://GATEWAY.example:443/v1/")
    assert same_endpoint("http://gateway.example/v1", "http://gateway.example:80/v1")
    assert not same_endpoint("https://gateway.example/v1", "http://gateway.example/v1")
    assert not same_endpoint("https://gateway.example/v1", "https://gateway.example/v2")
    assert not same_endpoint("http://localhost:11434/v1", "http://localhost:11435/v1")
    assert not same_endpoint("https://gateway.example/v1?team=a", "https://gateway.example/v1?team=b")
    assert not same_endpoint("https://gateway.example/V1", "https://gateway.example/v1")  # a path's case counts


def test_an_endpoint_with_no_credentials_is_refused_saying_who_adds_them():
    refused = problems(local_llm(), provider_routes=COPILOT_TO_OPENAI)

    assert refused == {
        f"{PROVIDER}.base_url": (
            "'http://localhost:11434/v1' is not where the team's calls go: provider 'copilot' reaches openai "
            "through the team's route (copilot=openai), and the team has no 'openai' credentials. A workflow "
            "names only the endpoint its team's credentials point at: an operator adds them, with this base "
            "URL, in the admin (Provider credentials), or remove base_url to use the credentials as they are"
        )
    }


def test_an_endpoint_other_than_the_credentials_is_refused_naming_theirs():
    refused = problems(
        local_llm(), provider_routes=COPILOT_TO_OPENAI, provider_endpoints={"openai": "https://gateway.example/v1"}
    )

    assert refused == {
        f"{PROVIDER}.base_url": (
            "'http://localhost:11434/v1' is not where the team's calls go: provider 'copilot' reaches openai "
            "through the team's route (copilot=openai), and the base URL of the team's 'openai' credentials is "
            "'https://gateway.example/v1'. A workflow names only the endpoint its team's credentials point at: "
            "an operator sets their base URL in the admin (Provider credentials), or remove base_url to use "
            "the credentials as they are"
        )
    }


def test_the_credentials_of_another_backend_do_not_make_an_endpoint_acceptable():
    refused = problems(
        workflow({"name": "claude", "base_url": LOCAL}, model="claude-sonnet-4-5"), provider_endpoints={"openai": LOCAL}
    )

    assert list(refused) == [f"{PROVIDER}.base_url"]
    assert "provider 'claude' calls anthropic, and the team has no 'anthropic' credentials" in refused[f"{PROVIDER}.base_url"]

    named = load_definition(
        workflow({"name": "claude", "base_url": "https://gateway.example"}), provider_endpoints={"anthropic": "https://gateway.example/"}
    )
    assert named.endpoint == "https://gateway.example"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:11434", "must be an http:// or https:// URL with a host"),
        ("ftp://files.example/v1", "must be an http:// or https:// URL with a host"),
        ("http://localhost:port/v1", "is not a URL"),
        ("https://user:secret@gateway.example/v1", "must not hold a user name or password: a workflow holds no credentials"),
        (11434, "must be a string, not an integer"),
    ],
)
def test_a_base_url_that_is_no_http_url_is_refused_whatever_the_credentials(url, message):
    refused = problems(local_llm(base_url=url), provider_routes=COPILOT_TO_OPENAI, provider_endpoints={"openai": LOCAL})

    assert refused == {f"{PROVIDER}.base_url": message}


def test_type_names_the_wire_which_must_be_the_routed_backends():
    assert load_definition(
        workflow({"name": "copilot", "type": "anthropic"}), provider_routes={"copilot": "anthropic"}
    ).provider == "copilot"

    refused = problems(local_llm(base_url=None, wire_api=None), provider_routes={"copilot": "anthropic"})

    assert refused == {
        f"{PROVIDER}.type": (
            "'type: openai' names the openai wire, but provider 'copilot' reaches anthropic through the team's "
            "route (copilot=anthropic), which speaks the anthropic wire: write 'type: anthropic', or route "
            "'copilot' to openai"
        )
    }
    direct = problems(workflow({"name": "openai", "type": "anthropic"}))
    assert direct == {f"{PROVIDER}.type": "'type: anthropic' names the anthropic wire, but provider 'openai' calls openai: write 'type: openai'"}


def test_azure_is_refused_as_a_type_and_as_options_saying_what_to_write_instead():
    refused = problems(
        workflow({"name": "copilot", "type": "azure", "azure": {"api_version": "2024-10-21"}}), provider_routes=COPILOT_TO_OPENAI
    )

    azure = (
        "there is no Azure wire here: Azure OpenAI's v1 API speaks the OpenAI wire, so write 'type: openai' and "
        "have an operator give the team's openai credentials the resource's base URL "
        "(https://RESOURCE.openai.azure.com/openai/v1/) in the admin (Provider credentials)"
    )
    assert refused == {
        f"{PROVIDER}.type": f"'type: azure' is not supported: {azure}",
        f"{PROVIDER}.azure": f"'azure' is not supported: Azure options configure conductor's Azure wire: {azure}",
    }
    assert problems(workflow({"name": "copilot", "type": "gemini"}), provider_routes=COPILOT_TO_OPENAI) == {
        f"{PROVIDER}.type": "must be one of openai, azure, anthropic, not 'gemini'"
    }


def test_wire_api_completions_is_what_the_openai_backend_speaks_and_responses_is_refused():
    accepted = load_definition(local_llm(base_url=None), provider_routes=COPILOT_TO_OPENAI)
    assert accepted.endpoint is None

    assert problems(local_llm(base_url=None, wire_api="responses"), provider_routes=COPILOT_TO_OPENAI) == {
        f"{PROVIDER}.wire_api": (
            "'wire_api: responses' is not supported: the OpenAI Responses API is not spoken here; calls to openai "
            "use Chat Completions ('wire_api: completions')"
        )
    }
    assert problems(workflow({"name": "claude", "wire_api": "completions"})) == {
        f"{PROVIDER}.wire_api": "'wire_api: completions' names a variant of the OpenAI wire, but provider 'claude' calls anthropic"
    }


@pytest.mark.parametrize("key", ["api_key", "bearer_token", "auth_token"])
def test_a_key_written_out_is_refused_and_one_read_from_the_environment_is_accepted(key):
    options = {"provider_routes": COPILOT_TO_OPENAI, "provider_endpoints": {"openai": LOCAL}}

    assert load_definition(local_llm(**{"api_key": None, key: "${OLLAMA_KEY:-ollama}"}), **options).endpoint == LOCAL
    assert problems(local_llm(**{"api_key": None, key: "ollama"}), **options) == {
        f"{PROVIDER}.{key}": (
            f"'{key}' is not supported: a workflow holds no credentials: the team's provider credentials do "
            "(an API key, which an operator sets in the admin)"
        )
    }


def test_the_fake_provider_calls_no_endpoint():
    refused = problems(workflow({"name": "fake", "base_url": LOCAL, "type": "openai"}), provider_endpoints={"openai": LOCAL})

    assert refused == {
        f"{PROVIDER}.{key}": "the fake provider calls no endpoint and speaks no wire: remove it" for key in ("base_url", "type")
    }


def test_an_endpoint_no_agent_calls_is_neither_checked_nor_kept():
    # The only agent names its own provider: the workflow's, and its endpoint, are used by none.
    definition = load_definition(
        {**local_llm(), "agents": [{"name": "a", "prompt": "hi", "provider": "openai"}]}, provider_endpoints={}
    )

    assert definition.endpoint is None


def test_an_inline_sub_workflow_is_checked_against_the_same_credentials():
    caller = {
        "workflow": {"name": "caller", "entry_point": "inner", "runtime": {"provider": "openai", "default_model": "gpt-4o"}},
        "agents": [{"name": "inner", "type": "workflow", "workflow": local_llm(), "routes": [{"to": "$end"}]}],
    }

    refused = problems(caller, provider_routes=COPILOT_TO_OPENAI, provider_endpoints={"openai": "https://api.openai.com/v1"})
    assert list(refused) == [f"agents[0].workflow.{PROVIDER}.base_url"]

    accepted = load_definition(caller, provider_routes=COPILOT_TO_OPENAI, provider_endpoints={"openai": LOCAL})
    assert [workflow.endpoint for workflow in accepted.nested()] == [None, LOCAL]


def test_a_base_url_that_reads_the_environment_in_part_is_refused_for_that():
    refused = problems(local_llm(base_url="http://${OLLAMA_HOST}/v1"), provider_routes=COPILOT_TO_OPENAI)

    assert list(refused) == [f"{PROVIDER}.base_url"]
    assert "would read the environment variable 'OLLAMA_HOST'" in refused[f"{PROVIDER}.base_url"]
