"""A team sees only its own objects: other teams' ids answer 404 and lists never leak."""

import pytest

from tests.conftest import client_for
from tests.factories import TeamFactory, workflow_version
from workflows.models import BudgetChange, Event, Run
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_run(db):
    other = TeamFactory(name="globex")
    version = workflow_version(team=other)
    return run_start(team=other, workflow=version.workflow_id, inputs={"topic": "secret"})


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/v1/runs/{run}"),
        ("get", "/api/v1/runs/{run}/events"),
        ("get", "/api/v1/runs/{run}/steps"),
        ("get", "/api/v1/runs/{run}/ledger"),
        ("get", "/api/v1/runs/{run}/checkpoints"),
        ("post", "/api/v1/runs/{run}/resume"),
        ("post", "/api/v1/runs/{run}/cancel"),
        ("get", "/api/v1/workflows/{workflow}"),
    ],
)
def test_another_teams_objects_answer_404(api, other_run, method, path):
    url = path.format(run=other_run.pk, workflow=other_run.workflow_version.workflow_id)
    events = Event.objects.filter(run=other_run).count()
    response = getattr(api, method)(url, {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    after = Run.objects.get(pk=other_run.pk)
    assert (after.status, after.limits) == (other_run.status, other_run.limits)
    assert Event.objects.filter(run=other_run).count() == events
    assert not BudgetChange.objects.filter(run=other_run).exists()


def test_starting_a_run_of_another_teams_workflow_is_404(api, other_run):
    for ref in (other_run.workflow_version.workflow_id, "research-pipeline"):
        response = api.post("/api/v1/runs", {"workflow": ref, "inputs": {"topic": "x"}}, format="json")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"
    assert list(Run.objects.values_list("pk", flat=True)) == [other_run.pk]


def test_lists_show_only_the_callers_objects(api, team, other_run):
    mine = workflow_version(team=team)
    run_start(team=team, workflow=mine.workflow_id, inputs={"topic": "mine"})

    runs = api.get("/api/v1/runs").json()["results"]
    assert [run["inputs"] for run in runs] == [{"topic": "mine"}]
    workflows = api.get("/api/v1/workflows").json()["results"]
    assert [w["id"] for w in workflows] == [mine.workflow_id]


def test_a_revoked_key_is_refused(team):
    client = client_for(team)
    assert client.get("/api/v1/runs").status_code == 200
    team.api_keys.update(revoked_at="2026-01-01T00:00:00Z")
    response = client.get("/api/v1/runs")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_failed"
