"""Conductor's `human_gate` on a real worker: the run waits for a person, holding no worker, its team's
webhook is told, and the answer (over the API, by whoever holds the team's key) routes it on."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.models import Event, EventType, LedgerEntry, StepStatus, WebhookDelivery
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

REVIEWED = """
workflow:
  name: reviewed-note
  entry_point: draft
  input: {topic: {type: string, required: true}}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: draft
    prompt: "Draft a note on {{ workflow.input.topic }}."
    mock: {output: {text: v1}, output_tokens: 50}
    routes: [{to: approval}]
  - name: approval
    type: human_gate
    prompt: "Publish the draft '{{ draft.output.text }}' on {{ workflow.input.topic }}?"
    options:
      - {label: Publish, value: approve, route: publish}
      - {label: Revise, value: revise, route: draft, prompt_for: feedback}
      - {label: Drop it, value: reject, route: $end}
  - name: publish
    prompt: "Publish {{ draft.output.text }}."
    mock: {output: {url: "https://example.com/n"}, output_tokens: 50}
output:
  decision: "{{ approval.output.selected }}"
"""


def started(api, team):
    team.webhook_url = "https://hooks.example.com/budget"
    team.save(update_fields=["webhook_url"])
    assert api.post("/api/v1/workflows", {"definition": REVIEWED}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "reviewed-note", "inputs": {"topic": "caps"}}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def answer(api, run_id, **body):
    return api.post(f"/api/v1/runs/{run_id}/input", body, format="json")


def test_a_run_waits_for_a_person_whose_answers_route_it_until_it_completes(api, team, celery_worker):
    run_id = started(api, team)
    run = wait_for_run(run_id, "waiting_for_input", *TERMINAL)

    assert (run.status, run.current_agent) == ("waiting_for_input", "approval")
    assert run.steps.get(agent="approval").status == StepStatus.AWAITING_INPUT
    asked = Event.objects.get(run=run, type=EventType.INPUT_REQUESTED)
    assert asked.payload["prompt"] == "Publish the draft 'v1' on caps?"
    assert [option["value"] for option in asked.payload["options"]] == ["approve", "revise", "reject"]
    assert WebhookDelivery.objects.filter(event=asked).exists()
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "waiting_for_input"
    assert api.post(f"/api/v1/runs/{run_id}/resume", {"reason": "go"}, format="json").status_code == 409

    wrong = answer(api, run_id, choice="maybe")
    assert wrong.status_code == 400 and wrong.json()["error"]["details"][0]["path"] == "choice"
    assert answer(api, run_id, choice="revise").json()["error"]["details"][0]["path"] == "text"
    assert answer(api, run_id, choice="approve", text="why not").status_code == 400

    revised = answer(api, run_id, choice="revise", text="shorter, please")
    assert revised.status_code == 200, revised.json()
    run = wait_for_run(run_id, "waiting_for_input", *TERMINAL)
    assert run.steps.filter(agent="draft").count() == 2  # routed back to the draft, which ran again
    assert answer(api, run_id, choice="approve").status_code == 200
    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {"decision": "approve"}
    gates = list(run.steps.filter(agent="approval").order_by("sequence").values_list("output", flat=True))
    assert gates == [
        {"selected": "revise", "additional_input": {"feedback": "shorter, please"}},
        {"selected": "approve", "additional_input": {}},
    ]
    answers = Event.objects.filter(run=run, type=EventType.INPUT_RECEIVED).order_by("id")
    assert [(e.payload["selected"], e.actor.startswith("api_key:")) for e in answers] == [("revise", True), ("approve", True)]
    assert run.iterations == 5
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True)) == [
        "draft",
        "draft",
        "publish",
    ]
    assert answer(api, run_id, choice="approve").status_code == 409
    assert_invariants(run)


def test_a_waiting_run_can_be_cancelled_and_then_takes_no_answer(api, team, celery_worker):
    run_id = started(api, team)
    wait_for_run(run_id, "waiting_for_input", *TERMINAL)

    assert api.post(f"/api/v1/runs/{run_id}/cancel", {"reason": "no one to ask"}, format="json").status_code == 200
    refused = answer(api, run_id, choice="approve")

    assert refused.status_code == 409
    run = wait_for_run(run_id, *TERMINAL)
    assert run.status == "cancelled"
    assert run.steps.get(agent="approval").status == StepStatus.CANCELLED
    assert_invariants(run)


@pytest.mark.parametrize(
    ("gate", "path", "message"),
    [
        ("{name: g, type: human_gate, prompt: go, options: [{label: A, value: a, route: nowhere}]}", "agents[0].options[0].route", "nowhere"),
        ("{name: g, type: human_gate, prompt: go}", "agents[0].options", "is required"),
        ("{name: g, type: human_gate, prompt: go, options: []}", "agents[0].options", "at least one"),
        (
            "{name: g, type: human_gate, prompt: go, options: [{label: A, value: a, route: $end}, {label: B, value: a, route: $end}]}",
            "agents[0].options[1].value",
            "duplicate",
        ),
        ("{name: g, type: human_gate, prompt: go, options: [{label: A, value: a, route: $end}], routes: [{to: $end}]}", "agents[0].routes", "by the option chosen"),
        ("{name: g, type: human_gate, options: [{label: A, value: a, route: $end}]}", "agents[0].prompt", "is required"),
    ],
)
def test_a_gate_with_a_mistake_is_refused_at_upload_naming_it(team, gate, path, message):
    source = f"workflow: {{name: w, entry_point: g, runtime: {{provider: fake}}}}\nagents: [{gate}]\n"
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=source)
    assert any(d["path"] == path and message in d["message"] for d in refused.value.details), refused.value.details


def test_a_sweep_between_an_answer_and_its_settlement_leaves_the_answered_step_alone(api, team, celery_worker, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from workflows.services import inputs
    from workflows.services.sweeper import sweep_stuck_steps

    sweeps = []
    settle = inputs.step_settle

    def sweep_first(**kwargs):
        sweeps.append(sweep_stuck_steps(now=timezone.now() + timedelta(seconds=10)))
        settle(**kwargs)

    monkeypatch.setattr(inputs, "step_settle", sweep_first)
    run_id = started(api, team)
    wait_for_run(run_id, "waiting_for_input", *TERMINAL)

    assert answer(api, run_id, choice="reject").status_code == 200

    assert sweeps[0].crashed_resent == 0
    run = wait_for_run(run_id, *TERMINAL)
    assert run.status == "completed" and run.output == {"decision": "reject"}
    assert Event.objects.filter(run=run, type=EventType.INPUT_REQUESTED).count() == 1
