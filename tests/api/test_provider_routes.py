import pytest

from tests.conftest import client_for
from tests.factories import TeamFactory
from workflows.models import ProviderRoute
from workflows.selectors import definition_of
from workflows.services.credentials import credential_set
from workflows.services.provider_routes import provider_routes_set
from workflows.services.runs import run_start
from workflows.services.steps import step_prepare

pytestmark = pytest.mark.django_db

ROUTES = "/api/v1/team/provider-routes"
NO_PROVIDER = """
workflow: {name: plain, entry_point: a}
agents: [{name: a, model: gpt-4o, prompt: hi}]
"""


def upload(api, source=NO_PROVIDER):
    return api.post("/api/v1/workflows", {"definition": source}, format="json")


def test_routes_start_empty_and_show_the_operators_defaults(api, settings):
    settings.PROVIDER_ROUTES = {"hermes": "anthropic"}

    assert api.get(ROUTES).json() == {
        "routes": {},
        "default_models": {},
        "defaults": {"hermes": "anthropic"},
        "effective": {"hermes": "anthropic"},
    }


def test_a_put_replaces_the_teams_routes_and_wins_over_the_defaults(api, settings):
    settings.PROVIDER_ROUTES = {"copilot": "anthropic", "hermes": "anthropic"}
    first = api.put(ROUTES, {"routes": {"copilot": "openai", "claude-agent-sdk": "anthropic"}}, format="json")

    assert first.status_code == 200
    assert first.json()["effective"] == {"copilot": "openai", "claude-agent-sdk": "anthropic", "hermes": "anthropic"}
    second = api.put(ROUTES, {"routes": {"hermes": "openai"}}, format="json").json()
    assert second["routes"] == {"hermes": "openai"}
    assert second["effective"] == {"copilot": "anthropic", "hermes": "openai"}
    assert api.get(ROUTES).json() == second


def test_an_invalid_put_names_every_problem_and_keeps_the_routes_there_were(api, team):
    provider_routes_set(team=team, routes={"copilot": "openai"})
    response = api.put(ROUTES, {"routes": {"claude": "openai", "copilot": "fake", "codex": "openai"}}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert {detail["path"] for detail in error["details"]} == {"routes.claude", "routes.copilot", "routes.codex"}
    assert api.get(ROUTES).json()["routes"] == {"copilot": "openai"}

    for body in ({"routes": ["copilot"]}, {}, {"routes": {"copilot": None}}, {"routes": {}, "rotues": {}}):
        assert api.put(ROUTES, body, format="json").status_code == 400, body
    assert api.get(ROUTES).json()["routes"] == {"copilot": "openai"}


def test_an_upload_that_needs_a_route_says_how_to_add_it_and_passes_once_routed(api):
    refused = upload(api)

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "definition_invalid"
    [detail] = error["details"]
    assert detail["path"] == "workflow.runtime.provider"
    assert "'copilot' is not routed" in detail["message"] and ROUTES in detail["message"]

    api.put(ROUTES, {"routes": {"copilot": "openai"}}, format="json")
    assert upload(api).status_code == 201


def test_one_teams_routes_are_not_anothers(api):
    other = client_for(TeamFactory())
    other.put(ROUTES, {"routes": {"copilot": "openai"}}, format="json")

    assert upload(other).status_code == 201
    assert upload(api).status_code == 400
    assert api.get(ROUTES).json()["routes"] == {}


def test_a_run_keeps_the_backends_it_started_with_and_needs_their_credentials(api, team):
    api.put(ROUTES, {"routes": {"copilot": "openai"}}, format="json")
    upload(api)
    missing = api.post("/api/v1/runs", {"workflow": "plain"}, format="json")
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "missing_credentials"
    assert missing.json()["error"]["details"] == {"providers": ["openai"]}

    credential_set(team=team, provider="openai", api_key="sk-test-0123456789abcdef")
    run = run_start(team=team, workflow="plain")
    assert run.provider_routes == {"copilot": "openai"}

    # A route changed while the run is under way does not move it.
    credential_set(team=team, provider="anthropic", api_key="sk-test-0123456789abcdef")
    provider_routes_set(team=team, routes={"copilot": "anthropic"})
    step = run.steps.get()
    prepared = step_prepare(
        run=run, step=step, definition=definition_of(run.workflow_version), outputs={}, may_override_prices=False
    )
    assert prepared.provider == "openai"


def test_a_run_of_a_workflow_whose_route_was_removed_since_it_was_uploaded_is_refused(api, team):
    api.put(ROUTES, {"routes": {"copilot": "openai"}}, format="json")
    upload(api)
    api.put(ROUTES, {"routes": {}}, format="json")

    response = api.post("/api/v1/runs", {"workflow": "plain"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "provider_not_routed"
    assert error["details"] == {"providers": ["copilot"]}
    assert ROUTES in error["message"]
    assert not ProviderRoute.objects.exists() and not team.runs.exists()


NO_MODEL = """
workflow: {name: modelless, entry_point: a}
agents: [{name: a, prompt: hi}]
"""


def test_a_route_may_name_the_model_for_agents_that_name_none_as_conductors_runtimes_pick_their_own(api):
    refused = upload(api, NO_MODEL)
    assert refused.status_code == 400  # no route, and no model
    api.put(ROUTES, {"routes": {"copilot": "openai"}}, format="json")
    [detail] = upload(api, NO_MODEL).json()["error"]["details"]
    assert detail["path"] == "agents[0].model" and "give the team's route for 'copilot' a default model" in detail["message"]

    response = api.put(ROUTES, {"routes": {"copilot": "openai"}, "default_models": {"copilot": "gpt-4.1"}}, format="json")
    assert response.json()["default_models"] == {"copilot": "gpt-4.1"}
    created = upload(api, NO_MODEL)
    assert created.status_code == 201
    version = api.get(f"/api/v1/workflows/{created.json()['id']}").json()
    assert version["definition"]["agents"][0]["model"] == "gpt-4.1"

    bad = api.put(ROUTES, {"routes": {}, "default_models": {"hermes": "x"}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["path"] == "default_models.hermes"
