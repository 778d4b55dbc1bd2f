"""Bad definitions and bad run requests: each answers a 4xx in the one error shape."""

import time

import pytest

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import Checkpoint, Event, Run, Step, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

VALID_AGENT = "  - name: a\n    prompt: hi\n"
HEADER = "workflow:\n  name: w\n  entry_point: a\n  runtime: {provider: fake, default_model: sim-model}\n"


def assert_error_shape(response, status: int, type_: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["message"]
    if type_:
        assert body["error"]["type"] == type_
    return body["error"]


def row_counts() -> dict:
    """What a refused request must leave as it found."""
    return {model.__name__: model.objects.count() for model in (Workflow, WorkflowVersion, Run, Step, Checkpoint, Event)}


BAD_DEFINITIONS = {
    "not yaml": ("workflow: [unclosed", "definition"),
    "not a mapping": ("- just\n- a list\n", "definition"),
    "unknown top-level key": (HEADER + "agents:\n" + VALID_AGENT + "extras: 1\n", "extras"),
    "unknown agent key": (HEADER + "agents:\n" + VALID_AGENT + "    colour: red\n", "agents[0].colour"),
    "missing entry_point": ("workflow:\n  name: w\nagents:\n" + VALID_AGENT, "workflow.entry_point"),
    "dangling entry_point": (HEADER.replace("entry_point: a", "entry_point: nobody") + "agents:\n" + VALID_AGENT, "workflow.entry_point"),
    "dangling route": (HEADER + "agents:\n" + VALID_AGENT + "    routes: [{to: ghost}]\n", "agents[0].routes[0].to"),
    "duplicate agent names": (HEADER + "agents:\n" + VALID_AGENT + VALID_AGENT, "agents[1].name"),
    "zero budget": (HEADER + "  limits: {budget_usd: 0}\nagents:\n" + VALID_AGENT, "workflow.limits.budget_usd"),
    "bad budget mode": (HEADER + "  limits: {budget_mode: strict}\nagents:\n" + VALID_AGENT, "workflow.limits.budget_mode"),
    "too many iterations": (HEADER + "  limits: {max_iterations: 501}\nagents:\n" + VALID_AGENT, "workflow.limits.max_iterations"),
    "template that does not compile": (HEADER + "agents:\n  - name: a\n    prompt: '{{ broken'\n", "agents[0].prompt"),
    "unpriced model under enforce": (
        HEADER + "  limits: {budget_usd: 1, budget_mode: enforce}\nagents:\n" + VALID_AGENT,
        "agents[0].model",
    ),
    "script step": (HEADER + "agents:\n" + VALID_AGENT + "    type: script\n", "agents[0].type"),
    "parallel group of one agent": (
        HEADER + "agents:\n" + VALID_AGENT + "parallel: [{name: g, agents: [a]}]\n", "parallel[0].agents"
    ),
    "for_each over a non-reference": (
        HEADER + "agents:\n" + VALID_AGENT + "for_each: [{name: f, source: 'x', agent: {prompt: p}}]\n",
        "for_each[0].source",
    ),
    "tools": (HEADER + "agents:\n" + VALID_AGENT + "    tools: [search]\n", "agents[0].tools"),
}


@pytest.mark.parametrize("source,path", BAD_DEFINITIONS.values(), ids=BAD_DEFINITIONS.keys())
def test_a_bad_definition_is_a_400_naming_the_path(api, source, path):
    before = row_counts()
    error = assert_error_shape(api.post("/api/v1/workflows", {"definition": source}, format="json"), 400)
    assert error["type"] == "definition_invalid"
    assert path in [problem["path"] for problem in error["details"]], error["details"]
    assert row_counts() == before


def test_unpriced_model_error_names_the_model(api):
    source = HEADER + "  limits: {budget_usd: 1, budget_mode: enforce}\nagents:\n" + VALID_AGENT
    error = assert_error_shape(api.post("/api/v1/workflows", {"definition": source}, format="json"), 400)
    assert any("sim-model" in problem["message"] for problem in error["details"])


def test_every_problem_is_reported_at_once(api):
    source = HEADER.replace("entry_point: a", "entry_point: nobody") + "  limits: {budget_usd: -1}\nagents:\n" + VALID_AGENT + "    routes: [{to: ghost}]\n"
    error = assert_error_shape(api.post("/api/v1/workflows", {"definition": source}, format="json"), 400)
    assert {"workflow.entry_point", "workflow.limits.budget_usd", "agents[0].routes[0].to"} <= {
        problem["path"] for problem in error["details"]
    }


def test_an_alias_bomb_is_refused_in_under_a_second(api):
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    started = time.monotonic()
    response = api.post("/api/v1/workflows", {"definition": bomb}, format="json")
    assert time.monotonic() - started < 1
    assert_error_shape(response, 400, "definition_invalid")


def test_deep_nesting_is_refused_without_a_server_error(api):
    assert_error_shape(api.post("/api/v1/workflows", {"definition": "[" * 5000 + "]" * 5000}, format="json"), 400)


def test_a_json_body_nested_too_deeply_is_a_400(api):
    body = '{"definition": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_error_shape(api.post("/api/v1/workflows", body, content_type="application/json"), 400)


def test_an_oversized_request_body_is_a_413(api):
    response = api.post("/api/v1/workflows", {"definition": "#" * 3_000_000}, format="json")
    assert_error_shape(response, 413, "request_too_large")


def test_an_oversized_raw_yaml_body_is_refused_without_reading_it_all(api, settings):
    settings.DEFINITION_MAX_BYTES = 1024
    response = api.post("/api/v1/workflows", "#" * 5000, content_type="application/yaml")
    error = assert_error_shape(response, 400, "definition_invalid")
    assert "the limit is 1,024" in error["details"][0]["message"]


def test_a_disallowed_host_is_a_json_400(api):
    assert_error_shape(api.get("/api/v1/runs", HTTP_HOST="evil.example"), 400, "bad_request")


def test_a_disallowed_host_outside_the_api_gets_django_s_html_400(client):
    """As docs/api.md says: only paths under /api/ answer in the error shape."""
    response = client.get("/admin/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_an_oversized_definition_is_refused(api, settings):
    settings.DEFINITION_MAX_BYTES = 1024
    error = assert_error_shape(api.post("/api/v1/workflows", {"definition": "#" * 2000}, format="json"), 400)
    assert "limit" in error["details"][0]["message"]


@pytest.fixture
def workflow(team):
    return workflow_version(team=team, source=THREE_STEP_YAML).workflow


BAD_RUN_REQUESTS = {
    "no workflow": ({"inputs": {"topic": "x"}}, 400, "validation_error"),
    "unknown workflow name": ({"workflow": "nope"}, 404, "not_found"),
    "unknown workflow id": ({"workflow": 999999}, 404, "not_found"),
    "unknown version": ({"workflow": "research-pipeline", "version": 9}, 404, "not_found"),
    "missing required input": ({"workflow": "research-pipeline", "inputs": {}}, 400, "validation_error"),
    "unknown input": ({"workflow": "research-pipeline", "inputs": {"topic": "x", "colour": "red"}}, 400, "validation_error"),
    "input of the wrong type": ({"workflow": "research-pipeline", "inputs": {"topic": 3}}, 400, "validation_error"),
    "inputs not an object": ({"workflow": "research-pipeline", "inputs": [1]}, 400, "validation_error"),
    "zero budget": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": 0}}, 400, "validation_error"),
    "negative budget": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": "-1"}}, 400, "validation_error"),
    "NaN budget": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": "NaN"}}, 400, "validation_error"),
    "infinite budget": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": "Infinity"}}, 400, "validation_error"),
    "budget with too many decimals": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": "0.0000001"}}, 400, "validation_error"),
    "bad mode": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_mode": "hard"}}, 400, "validation_error"),
    "zero iterations": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"max_iterations": 0}}, 400, "validation_error"),
    "zero timeout": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"timeout_seconds": 0}}, 400, "validation_error"),
    "unknown limit": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget": 1}}, 400, "validation_error"),
    "unknown field": ({"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limit": {}}, 400, "validation_error"),
}


@pytest.mark.parametrize("body,status,type_", BAD_RUN_REQUESTS.values(), ids=BAD_RUN_REQUESTS.keys())
def test_a_bad_run_request_is_refused_in_the_error_shape(api, workflow, body, status, type_):
    before = row_counts()
    assert_error_shape(api.post("/api/v1/runs", body, format="json"), status, type_)
    assert row_counts() == before


def test_an_enforce_run_of_an_unpriced_model_is_refused_naming_it(api, team):
    source = HEADER + "agents:\n" + VALID_AGENT
    workflow_version(team=team, source=source)
    response = api.post(
        "/api/v1/runs", {"workflow": "w", "limits": {"budget_usd": "1", "budget_mode": "enforce"}}, format="json"
    )
    error = assert_error_shape(response, 400, "unpriced_model")
    assert "'sim-model'" in error["message"]
    assert error["details"] == {"models": ["sim-model"]}
    assert not Run.objects.exists()


def test_a_team_enforce_period_budget_also_refuses_an_unpriced_model(api, team):
    team.period_budget_usd = 10
    team.period_mode = "enforce"
    team.save()
    workflow_version(team=team, source=HEADER + "agents:\n" + VALID_AGENT)
    error = assert_error_shape(api.post("/api/v1/runs", {"workflow": "w"}, format="json"), 400, "unpriced_model")
    assert error["details"] == {"models": ["sim-model"]}
    assert not Run.objects.exists()


def test_a_missing_or_wrong_key_is_401(api, client):
    assert_error_shape(client.get("/api/v1/runs"), 401, "not_authenticated")
    response = client.get("/api/v1/runs", HTTP_AUTHORIZATION="Bearer bsk_wrong")
    assert_error_shape(response, 401, "authentication_failed")


def test_an_unknown_endpoint_is_a_json_404(api):
    assert_error_shape(api.get("/api/v1/nothing-here"), 404, "not_found")


def test_malformed_json_is_a_400(api):
    assert_error_shape(api.post("/api/v1/runs", "{not json", content_type="application/json"), 400, "parse_error")
