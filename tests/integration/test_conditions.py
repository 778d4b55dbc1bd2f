"""Conductor's conditions, templates and outputs on a real worker: a run that routes on its step's own
`output`, a bare simpleeval condition, `context.iteration`, `workflow.name` and `budget.*` completes,
and its output is read back as conductor reads it. Each of these uploaded before and then failed the
run with TemplateError after paid steps."""

import pytest

from tests.conftest import wait_for_run
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

# $0.10 a step. The scorer never approves: the bare condition sends the run back to the writer while
# fewer than 4 steps ran, then the last route ends it with its own output laid over the workflow's.
REVIEW_LOOP_YAML = """
workflow:
  name: review-loop
  entry_point: writer
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  input:
    topic: {type: string}
    tone: {type: string, required: false}
  limits: {budget_usd: "1.00", budget_mode: enforce}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: writer
    prompt: >-
      Write about {{ workflow.input.topic }} for {{ workflow.name }}, pass {{ context.iteration }};
      {{ budget.remaining_usd }} of {{ budget.budget_usd }} left.
    output: {draft: {type: string}}
    mock: {output: {draft: "42"}, output_tokens: 1000}
    routes: [{to: scorer}]
  - name: scorer
    prompt: "Score {{ writer.output.draft }}."
    output: {score: {type: number}, approved: {type: boolean}}
    mock: {output: {score: 5, approved: false}, output_tokens: 1000}
    routes:
      - {to: $end, when: "{{ output.approved }}"}
      - {to: writer, when: "score < 7 and context_iteration < 4 and output.approved == false"}
      - to: $end
        when: "{{ context.iteration >= 4 }}"
        output:
          verdict: "{{ output | json }}"
          reason: "gave up after {{ context.iteration }} steps"
output:
  draft: "{{ writer.output.draft }}"
  steps: "{{ context.iteration }}"
  workflow: "{{ workflow.name }}"
  tone: "<{{ workflow.input.tone }}>"
  left: "{{ budget.remaining_usd }}"
"""


def test_a_review_loop_routes_on_its_own_output_a_bare_condition_and_its_progress(team, celery_worker):
    version = workflow_version(team=team, source=REVIEW_LOOP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "tides"})
    run = wait_for_run(run.pk, *TERMINAL, timeout=60)

    assert run.status == "completed", run.error
    assert list(run.steps.order_by("sequence").values_list("agent", flat=True)) == ["writer", "scorer"] * 2
    assert run.output == {
        "draft": 42,  # conductor reads rendered text back: "42" is a number
        "steps": 4,
        "workflow": "review-loop",
        "tone": "<>",  # an optional input without a default renders as nothing
        "left": "0.600000",  # money stays the API's decimal string
        "verdict": {"score": 5, "approved": False},  # the $end route's output, parsed from its JSON
        "reason": "gave up after 4 steps",
    }
    assert str(run.spent_usd) == "0.400000"
    assert_invariants(run)
