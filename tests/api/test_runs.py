import pytest

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import BudgetChange, Event, EventType, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(team):
    return workflow_version(team=team, source=THREE_STEP_YAML).workflow


def start(api, **body):
    return api.post("/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}, **body}, format="json")


def test_starting_a_run_answers_202_with_its_effective_limits_and_their_sources(api, team, workflow):
    team.default_max_iterations = 20
    team.save()
    response = start(api, limits={"budget_usd": 2.5})

    assert response.status_code == 202
    run = response.json()
    assert run["status"] == "queued"
    assert run["workflow"] == workflow.pk
    assert run["limits"] == {"budget_usd": "2.500000", "budget_mode": "audit", "max_iterations": 20, "timeout_seconds": None}
    assert run["limit_sources"] == {
        "budget_usd": "run",
        "budget_mode": "system",
        "max_iterations": "team",
        "timeout_seconds": "system",
    }
    assert (run["spent_usd"], run["reserved_usd"]) == ("0.000000", "0.000000")
    assert run["current_agent"] == "researcher"
    assert api.get(f"/api/v1/runs/{run['id']}/steps").json()["results"][0]["status"] == "pending"


def test_run_list_pages_newest_first_with_a_cursor(api, workflow):
    ids = [start(api).json()["id"] for _ in range(3)]
    first = api.get("/api/v1/runs?page_size=2").json()
    assert [r["id"] for r in first["results"]] == ids[::-1][:2]
    rest = api.get(first["next"]).json()
    assert [r["id"] for r in rest["results"]] == ids[:1]
    assert rest["next"] is None


def test_runs_filter_by_status_and_refuse_an_unknown_one(api, workflow):
    run_id = start(api).json()["id"]
    assert [r["id"] for r in api.get("/api/v1/runs?status=queued").json()["results"]] == [run_id]
    assert api.get("/api/v1/runs?status=completed").json()["results"] == []
    response = api.get("/api/v1/runs?status=nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "validation_error"


def test_cancel_records_who_and_why_and_cannot_be_repeated(api, workflow):
    run_id = start(api).json()["id"]
    response = api.post(f"/api/v1/runs/{run_id}/cancel/", {"reason": "wrong topic"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    [event] = [e for e in api.get(f"/api/v1/runs/{run_id}/events").json()["results"] if e["type"] == EventType.RUN_CANCELLED]
    assert event["payload"]["reason"] == "wrong topic"
    assert event["payload"]["from_status"] == "queued"

    events = Event.objects.filter(run_id=run_id).count()
    again = api.post(f"/api/v1/runs/{run_id}/cancel", {}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "invalid_run_state"
    assert again.json()["error"]["message"] == "Cannot cancel a run that is in 'cancelled' status."
    assert Event.objects.filter(run_id=run_id).count() == events


def assert_unchanged(run_id: int, before: Run) -> None:
    """A refused request left the run as it was: status, limits, money, and no event or budget change."""
    after = Run.objects.get(pk=run_id)
    fields = ("status", "limits", "spent_usd", "reserved_usd", "iterations", "audit_rearm_at_usd")
    assert [getattr(after, name) for name in fields] == [getattr(before, name) for name in fields]
    assert not Event.objects.filter(run_id=run_id, type=EventType.RUN_RESUMED).exists()
    assert not BudgetChange.objects.filter(run_id=run_id).exists()


@pytest.mark.parametrize(
    "body,status,type",
    [
        ({}, 409, "invalid_run_state"),  # queued: nothing to resume
        ({"budget_usd": 0}, 400, "validation_error"),
        ({"budget_mode": "sometimes"}, 400, "validation_error"),
        ({"max_iterations": "many"}, 400, "validation_error"),
        ({"colour": "red"}, 400, "validation_error"),
    ],
)
def test_resume_refuses_bad_requests_and_runs_that_are_not_stopped(api, workflow, body, status, type):
    run_id = start(api).json()["id"]
    before = Run.objects.get(pk=run_id)
    response = api.post(f"/api/v1/runs/{run_id}/resume", body, format="json")
    assert response.status_code == status
    assert set(response.json()["error"]) == {"type", "message", "details"}
    assert response.json()["error"]["type"] == type
    assert_unchanged(run_id, before)


def test_cancelled_runs_cannot_be_resumed(api, workflow):
    run_id = start(api).json()["id"]
    api.post(f"/api/v1/runs/{run_id}/cancel", {}, format="json")
    before = Run.objects.get(pk=run_id)
    response = api.post(f"/api/v1/runs/{run_id}/resume", {"budget_usd": 10}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "invalid_run_state"
    assert response.json()["error"]["message"] == "Cannot resume a run that is in 'cancelled' status."
    assert_unchanged(run_id, before)


UNDECLARED = """
workflow: {name: ad-hoc, entry_point: a, runtime: {provider: fake, default_model: sim-model}}
agents:
  - {name: a, prompt: "About {{ workflow.input.topic }}, {{ workflow.input.tone }}.", mock: {output: {ok: true}}}
"""


def test_a_workflow_with_no_input_block_takes_any_inputs_but_those_its_templates_read_are_required(api):
    assert api.post("/api/v1/workflows", {"definition": UNDECLARED}, format="json").status_code == 201

    refused = api.post("/api/v1/runs", {"workflow": "ad-hoc", "inputs": {"topic": "caps"}}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"] == [
        {"path": "inputs.tone", "message": "input 'tone' is missing: the workflow reads workflow.input.tone"}
    ]
    started = api.post(
        "/api/v1/runs", {"workflow": "ad-hoc", "inputs": {"topic": "caps", "tone": "dry", "extra": [1]}}, format="json"
    )
    assert started.status_code == 202, started.json()
    assert Run.objects.get(pk=started.json()["id"]).inputs == {"topic": "caps", "tone": "dry", "extra": [1]}


def test_a_workflow_with_no_input_block_may_iterate_over_an_input_a_run_must_then_give(api):
    source = """
workflow: {name: each, entry_point: g, runtime: {provider: fake, default_model: sim-model}}
agents: [{name: last, prompt: done, mock: {output: {ok: true}}}]
for_each:
  - {name: g, source: workflow.input.items, as: item, agent: {prompt: "{{ item }}"}, routes: [{to: last}]}
"""
    assert api.post("/api/v1/workflows", {"definition": source}, format="json").status_code == 201

    refused = api.post("/api/v1/runs", {"workflow": "each"}, format="json")
    assert refused.json()["error"]["details"][0]["path"] == "inputs.items"
    assert api.post("/api/v1/runs", {"workflow": "each", "inputs": {"items": ["a"]}}, format="json").status_code == 202


def test_options_describes_what_to_send_not_the_run_it_answers_with(api):
    # DRF's metadata described the output serializer, so OPTIONS /runs listed `status`, `spent_usd`, ... as input.
    start = api.options("/api/v1/runs").json()["actions"]["POST"]
    resume = api.options("/api/v1/runs/1/resume").json()["actions"]["POST"]

    assert set(start) == {"workflow", "version", "inputs", "limits"}
    assert start["workflow"]["required"] is True
    assert set(resume) == {"budget_usd", "budget_mode", "max_iterations", "timeout_seconds", "reason", "workflow_version"}


def test_options_on_an_api_view_describes_its_put_body(api):
    actions = api.options("/api/v1/team/provider-routes").json()["actions"]

    assert set(actions) == {"PUT"}
    assert set(actions["PUT"]) == {"routes", "default_models"}
