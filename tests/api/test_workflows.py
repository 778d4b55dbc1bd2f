import json

import pytest
import yaml

from tests.factories import THREE_STEP_YAML

pytestmark = pytest.mark.django_db


def test_posting_a_definition_creates_version_one_named_after_the_workflow(api):
    response = api.post("/api/v1/workflows", {"definition": THREE_STEP_YAML}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["version"]) == ("research-pipeline", 1)

    detail = api.get(f"/api/v1/workflows/{body['id']}/").json()
    assert detail["latest_version"] == 1
    assert detail["source"] == THREE_STEP_YAML


def test_reposting_a_name_makes_a_new_immutable_version(api):
    first = api.post("/api/v1/workflows", {"definition": THREE_STEP_YAML}, format="json").json()
    changed = THREE_STEP_YAML.replace("Research", "Investigate")
    second = api.post("/api/v1/workflows", {"definition": changed}, format="json").json()

    assert second["id"] == first["id"]
    assert second["version"] == 2
    detail = api.get(f"/api/v1/workflows/{first['id']}").json()
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert "Investigate" in detail["source"]


def test_a_json_object_definition_and_an_explicit_name(api):
    definition = yaml.safe_load(THREE_STEP_YAML)
    response = api.post("/api/v1/workflows", {"name": "nightly", "definition": definition}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "nightly"
    stored = api.get(f"/api/v1/workflows/{response.json()['id']}").json()["source"]
    assert json.loads(stored)["workflow"]["entry_point"] == "researcher"


def test_a_run_pins_the_version_it_started_on(api):
    api.post("/api/v1/workflows", {"definition": THREE_STEP_YAML}, format="json")
    run = api.post("/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}}, format="json").json()
    api.post("/api/v1/workflows", {"definition": THREE_STEP_YAML}, format="json")
    pinned = api.post(
        "/api/v1/runs", {"workflow": "research-pipeline", "version": 1, "inputs": {"topic": "x"}}, format="json"
    ).json()
    latest = api.post("/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}}, format="json").json()

    assert run["workflow_version"] == 1
    assert pinned["workflow_version"] == 1
    assert latest["workflow_version"] == 2


def test_a_definition_can_be_posted_as_a_raw_yaml_body(api):
    response = api.post(
        "/api/v1/workflows?name=from-curl", THREE_STEP_YAML, content_type="application/yaml"
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["name"], response.json()["version"]) == ("from-curl", 1)


@pytest.mark.parametrize("body", [{"name": "2024"}, {"name": " 42 "}, {}])
def test_a_name_of_only_digits_is_refused_because_runs_would_read_it_as_an_id(api, body):
    definition = THREE_STEP_YAML.replace("name: research-pipeline", "name: '7'")
    response = api.post("/api/v1/workflows", {"definition": definition, **body}, format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert (error["type"], error["details"]) == ("validation_error", [{"path": "name", "message": "only digits"}])
    assert api.get("/api/v1/workflows").json()["results"] == []
