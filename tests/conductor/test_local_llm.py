"""A workflow that names its model endpoint, as conductor's `copilot-local-llm.yaml` does
(`local_llm.yaml` here has its shape), over the API: it uploads where the team's credentials point at
that endpoint and is refused where they do not; it runs on a real worker against an OpenAI-compatible
server on 127.0.0.1 (allowed by the tests' OUTBOUND_ALLOWED_NETWORKS, as an operator allows a local
server), which the call reaches with the team's key; and once an operator points the credentials
elsewhere, starting a run is refused before anything is reserved."""

import json
from pathlib import Path

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import WireServer, openai_completion, openai_usage
from workflows.models import LedgerEntry, ProviderCredential, Run, Step
from workflows.services.credentials import credential_set, credential_update
from workflows.services.provider_routes import provider_routes_set

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SOURCE = (Path(__file__).parent / "local_llm.yaml").read_text()
TEAM_KEY = "sk-team-local-0123456789abcdef"
ENDPOINT = "workflow.runtime.provider.base_url"


@pytest.fixture
def local_server():
    with WireServer() as server:
        yield server


@pytest.fixture
def routed(team):
    provider_routes_set(team=team, routes={"copilot": "openai"})


def source(base_url: str) -> str:
    return SOURCE.replace("http://localhost:11434/v1", base_url)


def upload(api, base_url: str):
    return api.post("/api/v1/workflows", {"definition": source(base_url)}, format="json")


def test_it_uploads_where_the_teams_openai_credentials_point_and_the_version_shows_the_endpoint(api, team, routed, local_server):
    credential_set(team=team, provider="openai", api_key=TEAM_KEY, base_url=f"{local_server.url}/v1")

    # Written with its scheme in capitals and a trailing slash, it is the same endpoint.
    named = local_server.url.replace("http://", "HTTP://") + "/v1/"
    response = upload(api, named)

    assert response.status_code == 201, response.json()
    shown = api.get(f"/api/v1/workflows/{response.json()['id']}").json()
    assert shown["definition"]["endpoint"] == named


def test_it_is_refused_without_credentials_and_with_credentials_pointing_elsewhere(api, team, routed, local_server):
    named = f"{local_server.url}/v1"

    refused = upload(api, named)

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "definition_invalid"
    [problem] = error["details"]
    assert problem["path"] == ENDPOINT
    assert "the team has no 'openai' credentials" in problem["message"]
    assert "an operator adds them, with this base URL, in the admin (Provider credentials)" in problem["message"]

    credential_set(team=team, provider="openai", api_key=TEAM_KEY, base_url="https://gateway.example/v1")
    refused = upload(api, named)

    assert refused.status_code == 400
    [problem] = refused.json()["error"]["details"]
    assert problem["path"] == ENDPOINT
    assert "the base URL of the team's 'openai' credentials is 'https://gateway.example/v1'" in problem["message"]
    assert team.workflows.count() == 0


def test_it_runs_on_a_worker_against_the_endpoint_and_is_refused_at_start_once_the_credentials_point_elsewhere(
    api, team, routed, local_server, settings, celery_worker
):
    credential = credential_set(team=team, provider="openai", api_key=TEAM_KEY, base_url=f"{local_server.url}/v1")
    assert upload(api, f"{local_server.url}/v1").status_code == 201
    local_server.script(openai_completion(json.dumps({"answer": "A programming language."}), openai_usage(prompt=40, completion=8)))

    response = api.post("/api/v1/runs", {"workflow": "local-llm", "inputs": {"question": "What is Python?"}}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(response.json()["id"], "completed", "failed")

    assert run.status == "completed", run.error
    assert run.output == {"answer": "A programming language."}
    [call] = local_server.received
    assert call.path == "/v1/chat/completions"
    assert call.body["model"] == "llama3.1"
    assert call.headers["authorization"] == f"Bearer {TEAM_KEY}"  # the team's key: the workflow's ${...} has no effect
    entry = LedgerEntry.objects.get(run=run)
    assert (entry.input_tokens, entry.output_tokens, entry.cost_usd) == (40, 8, None)  # llama3.1 has no price
    assert_invariants(run)

    # An operator points the team's credentials at another server.
    credential_update(credential=credential, base_url="https://gateway.example/v1", api_key=TEAM_KEY)
    runs, steps = Run.objects.count(), Step.objects.count()

    refused = api.post("/api/v1/runs", {"workflow": "local-llm", "inputs": {"question": "And Rust?"}}, format="json")

    assert refused.status_code == 400
    assert refused.json() == {
        "error": {
            "type": "endpoint_mismatch",
            "message": (
                f"The workflow names an endpoint its team's credentials no longer point at: '{local_server.url}/v1' "
                "is not where the team's calls go: provider 'copilot' reaches openai through the team's route "
                "(copilot=openai), and the base URL of the team's 'openai' credentials is "
                "'https://gateway.example/v1'. A workflow names only the endpoint its team's credentials point at: "
                "an operator sets their base URL in the admin (Provider credentials), or remove base_url to use "
                "the credentials as they are."
            ),
            "details": {
                "endpoints": [
                    {
                        "workflow": "local-llm",
                        "provider": "copilot",
                        "backend": "openai",
                        "base_url": f"{local_server.url}/v1",
                        "credentials_base_url": "https://gateway.example/v1",
                    }
                ]
            },
        }
    }
    assert (Run.objects.count(), Step.objects.count()) == (runs, steps)
    assert len(local_server.received) == 1

    # Without the team's credentials, the operator's environment would be used: no workflow names it.
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL = "sk-operator-0123456789abcdef", f"{local_server.url}/v1"
    ProviderCredential.objects.filter(pk=credential.pk).delete()
    refused = api.post("/api/v1/runs", {"workflow": "local-llm", "inputs": {"question": "And Rust?"}}, format="json")

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "endpoint_mismatch"
    assert "and the team has no 'openai' credentials" in error["message"]
    assert error["details"]["endpoints"][0]["credentials_base_url"] is None
    assert (Run.objects.count(), Step.objects.count(), len(local_server.received)) == (runs, steps, 1)
