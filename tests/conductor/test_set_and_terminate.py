"""Conductor's `set` and `terminate` steps, in a workflow written as a conductor user would, on a real
worker: values bound and typed as conductor types them, routes on them, and a run ended on purpose,
completed or failed, with its reason and its output."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.models import LedgerEntry
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

TRIAGE = """
workflow:
  name: triage
  entry_point: normalise
  input:
    ticket: {type: string, required: true}
    severity: {type: string, required: true}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: normalise
    type: set
    description: Derive what the other steps branch on
    values:
      urgent: "{{ workflow.input.severity in ['high', 'critical'] }}"
      queue: "support/{{ workflow.input.severity }}"
      labels: "[triage, {{ workflow.input.severity }}]"
    routes:
      - to: escalate
        when: "{{ normalise.output.urgent }}"
      - to: slug
  - name: slug
    type: set
    value: "{{ workflow.input.ticket | lower }}"
    output_type: string
    routes: [{to: summarise}]
  - name: escalate
    type: terminate
    status: failed
    reason: "Ticket {{ workflow.input.ticket }} needs a person now ({{ normalise.output.queue }})"
    output_template:
      queue: "{{ normalise.output.queue }}"
      labels: "{{ normalise.output.labels }}"
  - name: summarise
    prompt: "Summarise {{ slug.output }} for {{ normalise.output.queue }}."
    mock: {output: {summary: fine}, output_tokens: 50}
    routes: [{to: handled}]
  - name: handled
    type: terminate
    status: success
    reason: "handled in {{ normalise.output.queue }}"
output:
  summary: "{{ summarise.output.summary }}"
"""


def start(api, severity):
    response = api.post("/api/v1/runs", {"workflow": "triage", "inputs": {"ticket": "T-7", "severity": severity}}, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def test_set_binds_typed_values_and_a_terminate_step_completes_the_run(api, team, celery_worker):
    assert api.post("/api/v1/workflows", {"definition": TRIAGE}, format="json").status_code == 201

    run = start(api, "low")

    assert run.status == "completed", run.error
    steps = list(run.steps.order_by("sequence").values_list("agent", "output"))
    assert steps == [
        ("normalise", {"urgent": False, "queue": "support/low", "labels": ["triage", "low"]}),
        ("slug", "t-7"),
        ("summarise", {"summary": "fine"}),
        ("handled", {"status": "success", "reason": "handled in support/low"}),
    ]
    assert run.output == {"summary": "fine"}
    assert run.iterations == 4  # every step counts, as in conductor
    assert list(LedgerEntry.objects.filter(run=run).values_list("agent", flat=True)) == ["summarise"]
    assert_invariants(run)


def test_a_failed_terminate_step_fails_the_run_with_its_reason_and_output_and_it_cannot_be_resumed(
    api, team, celery_worker
):
    api.post("/api/v1/workflows", {"definition": TRIAGE}, format="json")

    run = start(api, "critical")

    assert run.status == "failed"
    assert run.error == {"type": "WorkflowTerminated", "message": "Ticket T-7 needs a person now (support/critical)"}
    assert run.output == {"queue": "support/critical", "labels": ["triage", "critical"]}
    assert [step.agent for step in run.steps.order_by("sequence")] == ["normalise", "escalate"]
    assert not LedgerEntry.objects.filter(run=run).exists()
    refused = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "try again"}, format="json")
    assert refused.status_code == 409
    assert_invariants(run)


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ("{name: s, type: set, value: a, values: {b: c}}", "agents[0].value", "exactly one of 'value' or 'values'"),
        ("{name: s, type: set}", "agents[0].value", "exactly one of 'value' or 'values'"),
        ("{name: s, type: set, values: {b: c}, output_type: string}", "agents[0].output_type", "applies only to 'value'"),
        ("{name: s, type: set, value: a, output_type: float}", "agents[0].output_type", "must be one of auto, string"),
        ("{name: s, type: set, value: '{{ a'}", "agents[0].value", "does not compile"),
        ("{name: s, type: set, values: {n: 3}}", "agents[0].values.n", "must be a template string"),
        ("{name: s, type: terminate, status: done, reason: r}", "agents[0].status", "must be 'success' or 'failed'"),
        ("{name: s, type: terminate, status: success}", "agents[0].reason", "is required"),
        ("{name: s, type: terminate, status: success, reason: r, routes: [{to: s}]}", "agents[0].routes", "cannot route"),
    ],
)
def test_a_set_or_terminate_step_with_a_mistake_is_refused_at_upload_naming_it(team, step, path, message):
    source = f"workflow: {{name: w, entry_point: s, runtime: {{provider: fake}}}}\nagents: [{step}]\n"
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=source)
    assert any(d["path"] == path and message in d["message"] for d in refused.value.details), refused.value.details
