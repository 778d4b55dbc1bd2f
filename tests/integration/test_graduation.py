"""The conductor graduation path, no budget -> audit -> enforce -> resume, through the API on a real worker."""

from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.factories import THREE_STEP_YAML
from tests.invariants import assert_invariants
from workflows.models import EventType, LedgerEntry, Run, Workflow
from workflows.reports.cost_profile import cost_profile
from workflows.services.workflow_budgets import workflow_budget_apply

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")


@pytest.fixture
def workflow_id(api):
    response = api.post("/api/v1/workflows", {"definition": THREE_STEP_YAML}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def start(api, workflow_id, **limits) -> int:
    response = api.post(
        "/api/v1/runs", {"workflow": workflow_id, "inputs": {"topic": "budgets"}, "limits": limits}, format="json"
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def events(api, run_id, type_):
    return [e for e in api.get(f"/api/v1/runs/{run_id}/events").json()["results"] if e["type"] == type_]


def test_without_a_budget_the_run_completes_and_records_spend(api, workflow_id, celery_worker):
    run_id = start(api, workflow_id)
    wait_for_run(run_id, *TERMINAL)

    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert body["status"] == "completed"
    assert body["spent_usd"] == "0.900000"
    assert body["reserved_usd"] == "0.000000"
    assert body["output"] == {"draft": "a draft", "approved": True}
    assert body["limits"]["budget_usd"] is None
    assert body["limit_sources"]["budget_usd"] == "system"
    assert events(api, run_id, "budget_exceeded") == []
    ledger = api.get(f"/api/v1/runs/{run_id}/ledger").json()["results"]
    assert [(e["agent"], e["cost_usd"]) for e in ledger] == [
        ("researcher", "0.300000"),
        ("writer", "0.300000"),
        ("reviewer", "0.300000"),
    ]
    assert_invariants(Run.objects.get(pk=run_id))


def test_audit_mode_completes_with_exactly_one_budget_exceeded_event(api, workflow_id, celery_worker):
    run_id = start(api, workflow_id, budget_usd="0.50", budget_mode="audit")
    wait_for_run(run_id, *TERMINAL)

    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert body["status"] == "completed"
    assert body["spent_usd"] == "0.900000"
    exceeded = events(api, run_id, "budget_exceeded")
    # Audit marks the step where enforce would have stopped: before writer, with $0.30 spent.
    assert [e["payload"] for e in exceeded] == [
        {
            "scope": "run",
            "budget_usd": "0.500000",
            "spent_usd": "0.300000",
            "projected_usd": "0.600000",
            "budget_mode": "audit",
            "current_agent": "writer",
        }
    ]
    assert_invariants(Run.objects.get(pk=run_id))


def test_enforce_stops_before_step_two_and_resume_with_a_raise_completes(api, workflow_id, celery_worker):
    run_id = start(api, workflow_id, budget_usd=0.5, budget_mode="enforce")
    wait_for_run(run_id, *TERMINAL)

    stopped = api.get(f"/api/v1/runs/{run_id}").json()
    assert stopped["status"] == "budget_exceeded"
    assert stopped["spent_usd"] == "0.300000"
    assert stopped["current_agent"] == "writer"
    assert stopped["error"] == {
        "type": "BudgetExceededError",
        "message": "The next step would bring the run to $0.600000, over its budget of $0.500000.",
        "scope": "run",
        "budget_usd": "0.500000",
        "spent_usd": "0.300000",
        "current_agent": "writer",
    }
    [event] = events(api, run_id, "budget_exceeded")
    assert event["payload"]["projected_usd"] == "0.600000"
    assert event["payload"]["budget_mode"] == "enforce"
    checkpoint = api.get(f"/api/v1/runs/{run_id}/checkpoints").json()["results"][-1]
    assert (checkpoint["reason"], checkpoint["next_agent"], checkpoint["spent_usd"]) == (
        "budget_exceeded",
        "writer",
        "0.300000",
    )
    assert checkpoint["outputs"] == {"researcher": {"findings": "three facts"}}
    assert_invariants(Run.objects.get(pk=run_id))

    refused = api.post(f"/api/v1/runs/{run_id}/resume", {"reason": "try again"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "invalid_run_state"
    assert refused.json()["error"]["details"]["projected_usd"] == "0.600000"

    resumed = api.post(f"/api/v1/runs/{run_id}/resume", {"budget_usd": "1.0", "reason": "approved by finance"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    wait_for_run(run_id, *TERMINAL)

    done = api.get(f"/api/v1/runs/{run_id}").json()
    assert done["status"] == "completed"
    assert done["spent_usd"] == "0.900000"
    assert done["limits"]["budget_usd"] == "1.000000"
    assert done["limit_sources"]["budget_usd"] == "resume"
    agents = sorted(LedgerEntry.objects.filter(run_id=run_id).values_list("agent", flat=True))
    assert agents == ["researcher", "reviewer", "writer"]
    [resume_event] = events(api, run_id, EventType.RUN_RESUMED)
    assert resume_event["payload"]["reason"] == "approved by finance"
    assert resume_event["payload"]["old_limits"]["budget_usd"] == "0.500000"
    assert resume_event["payload"]["new_limits"]["budget_usd"] == "1.000000"
    assert resume_event["payload"]["from_status"] == "budget_exceeded"
    assert resume_event["actor"].startswith("api_key:bsk_")

    again = api.post(f"/api/v1/runs/{run_id}/resume", {"budget_usd": "5"}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "Cannot resume a run that is in 'completed' status."
    assert_invariants(Run.objects.get(pk=run_id))
    assert Run.objects.get(pk=run_id).spent_usd == Decimal("0.900000")


def test_the_applied_recommended_budget_gates_the_next_runs_whatever_the_team_uploads(api, workflow_id, celery_worker):
    wait_for_run(start(api, workflow_id, budget_usd="0.50", budget_mode="audit"), *TERMINAL)
    workflow = Workflow.objects.get(pk=workflow_id)
    recommended = cost_profile(workflow=workflow).recommended_budget_usd
    assert recommended == Decimal("1.13")  # p95 $0.90 x 1.25, rounded up to the cent
    workflow_budget_apply(workflow=workflow, budget_usd=recommended, actor="user:ops", reason="graduate to enforce")
    assert api.get(f"/api/v1/workflows/{workflow_id}").json()["budget_setting"] == {
        "budget_usd": "1.130000",
        "budget_mode": "enforce",
    }

    fits = start(api, workflow_id)
    wait_for_run(fits, *TERMINAL)
    body = api.get(f"/api/v1/runs/{fits}").json()
    assert (body["status"], body["limits"]["budget_usd"], body["limits"]["budget_mode"]) == (
        "completed",
        "1.130000",
        "enforce",
    )
    assert body["limit_sources"]["budget_usd"] == "workflow_setting"

    # The team uploads its own YAML again, with an audit budget of its own; the operator tightens the budget.
    own_limits = THREE_STEP_YAML.replace("workflow:\n", "workflow:\n  limits: {budget_usd: '5', budget_mode: audit}\n", 1)
    assert api.post("/api/v1/workflows", {"definition": own_limits}, format="json").json()["version"] == 2
    workflow_budget_apply(workflow=workflow, budget_usd="0.50", actor="user:ops", reason="tighter")
    stopped = start(api, workflow_id)
    wait_for_run(stopped, *TERMINAL)
    body = api.get(f"/api/v1/runs/{stopped}").json()
    assert (body["status"], body["spent_usd"], body["error"]["type"]) == ("budget_exceeded", "0.300000", "BudgetExceededError")
    assert (body["limits"]["budget_usd"], body["limit_sources"]["budget_usd"]) == ("0.500000", "workflow_setting")
    assert_invariants(Run.objects.get(pk=stopped))
