"""Every endpoint takes only its own query parameters (workflows/api/query.py): an unknown one, one given
twice, or one given empty is a 400 naming it, before anything is done; the parameters each takes work."""

import pytest

from tests.api.test_staff import basic, staff_user
from tests.factories import THREE_STEP_YAML, workflow_version
from tests.reports.ledger import start_run, taken_over
from workflows.models import Run, RunStatus

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/v1/workflows"),
    ("post", "/api/v1/workflows"),
    ("get", "/api/v1/workflows/{workflow}"),
    ("get", "/api/v1/workflows/{workflow}/cost-profile"),
    ("get", "/api/v1/runs"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{run}"),
    ("get", "/api/v1/runs/{run}/events"),
    ("get", "/api/v1/runs/{run}/steps"),
    ("get", "/api/v1/runs/{run}/ledger"),
    ("get", "/api/v1/runs/{run}/checkpoints"),
    ("post", "/api/v1/runs/{run}/resume"),
    ("post", "/api/v1/runs/{run}/cancel"),
    ("post", "/api/v1/runs/{run}/input"),
    ("get", "/api/v1/ledger"),
    ("get", "/api/v1/team"),
    ("get", "/api/v1/team/provider-routes"),
    ("put", "/api/v1/team/provider-routes"),
    ("get", "/api/v1/spend"),
]


@pytest.fixture
def run(team):
    return start_run(team=team, version=workflow_version(team=team))


def call(api, method: str, path: str, run: Run, query: str):
    url = path.format(run=run.pk, workflow=run.workflow_version.workflow_id) + query
    return getattr(api, method)(url, {} if method == "get" else {"reason": "r"}, format="json")


def assert_refused(response, parameter: str, message: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["details"][0]["path"] == parameter
    assert message in error["details"][0]["message"]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_an_unknown_parameter_is_a_400_on_every_endpoint_and_nothing_is_done(api, run, method, path):
    runs = Run.objects.count()

    response = call(api, method, path, run, "?workfow=3")

    assert_refused(response, "workfow", "is not a parameter of this endpoint")
    assert "'workfow'" in response.json()["error"]["message"]
    assert Run.objects.count() == runs
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


@pytest.mark.parametrize(
    "path,parameter",
    [("/api/v1/runs", "status"), ("/api/v1/runs/{run}/events", "after"), ("/api/v1/ledger", "cursor"), ("/api/v1/spend", "group_by")],
)
def test_a_parameter_given_twice_or_empty_is_a_400(api, run, path, parameter):
    assert_refused(call(api, "get", path, run, f"?{parameter}=1&{parameter}=2"), parameter, "is given 2 times; give it once")
    assert_refused(call(api, "get", path, run, f"?{parameter}="), parameter, "is empty")


def test_the_listed_parameters_are_each_endpoints_own(api, run):
    # A list's filters are not its detail's, nor another list's.
    assert_refused(api.get(f"/api/v1/runs/{run.pk}?status=queued"), "status", "it takes: none")
    assert_refused(api.get(f"/api/v1/runs/{run.pk}/steps?after=1"), "after", "it takes: cursor, page_size")
    assert_refused(api.get(f"/api/v1/runs/{run.pk}/ledger?run={run.pk}"), "run", "is not a parameter")
    assert_refused(api.get(f"/api/v1/runs/{run.pk}/events?status=queued"), "status", "after, cursor, page_size")
    # ?name= names a definition posted as YAML; nothing else reads it.
    assert_refused(api.get(f"/api/v1/workflows/{run.workflow_version.workflow_id}?name=x"), "name", "it takes: none")
    json_body = {"name": "n", "definition": THREE_STEP_YAML}
    assert_refused(api.post("/api/v1/workflows?name=x", json_body, format="json"), "name", "it takes: none")
    # DRF's ?format= is a parameter of the spend report only.
    assert_refused(api.get("/api/v1/runs?format=json"), "format", "is not a parameter")
    assert_refused(api.get("/api/v1/runs?format=xml"), "format", "is not a parameter")
    assert_refused(api.get("/api/v1/spend?format=xml"), "format", "must be one of json, csv")


def test_the_parameters_endpoints_took_before_still_work(api, run):
    assert api.get("/api/v1/spend?group_by=agent&since=2026-01-01&until=2026-12-31&format=csv").status_code == 200
    assert api.get(f"/api/v1/runs/{run.pk}/steps?page_size=1").status_code == 200
    start_run(team=run.team, version=run.workflow_version)
    second_page = api.get(api.get("/api/v1/runs?page_size=1").json()["next"])
    assert [listed["id"] for listed in second_page.json()["results"]] == [run.pk]
    yaml = api.post("/api/v1/workflows?name=from-curl", THREE_STEP_YAML, content_type="application/yaml")
    assert yaml.status_code == 201, yaml.json()


def test_the_caller_is_authenticated_before_the_parameters_are_checked(client, run):
    response = client.get("/api/v1/runs?workfow=3")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "not_authenticated"


def test_the_staff_endpoint_takes_no_parameters(team, run):
    staff_user("ops", team)
    attempt, _ = taken_over(run, sequence=1)
    estimate = run.ledger_entries.get(basis="estimated")

    response = basic("ops").post(
        f"/api/v1/ledger/{estimate.pk}/adjustments?dry_run=1", {"amount_usd": "0.01", "reason": "r"}, format="json"
    )

    assert_refused(response, "dry_run", "it takes: none")
    assert not run.ledger_entries.filter(basis="adjustment").exists()


def test_every_problem_is_listed_and_a_long_name_is_cut_short(api):
    long_name = "x" * 5000
    response = api.get(f"/api/v1/runs?{long_name}=1&status=a&status=b&created_after=")

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [detail["path"] for detail in details] == ["x" * 100 + "...", "status", "created_after"]
    assert long_name not in response.content.decode()
