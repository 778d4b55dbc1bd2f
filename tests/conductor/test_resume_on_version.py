"""A run that failed on a definition problem after paid steps goes on from its checkpoint on a
corrected version of its workflow: completed steps are not run again, and a version that lacks what
the run has run is refused."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.models import EventType, LedgerEntry

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

FIRST = """
workflow: {name: ratio, entry_point: count, runtime: {provider: fake, default_model: sim-model, max_tokens: 50}}
agents:
  - {name: count, prompt: Count., output: {n: {type: integer}}, mock: {output: {n: 0}}, routes: [{to: share}]}
  - {name: share, prompt: "Each gets {{ 10 / count.output.n }}.", mock: {output: {ok: true}}}
"""
CORRECTED = FIRST.replace("{{ 10 / count.output.n }}", "{{ 10 if count.output.n == 0 else 10 / count.output.n }}")
NEEDS_AN_INPUT = CORRECTED.replace(
    "workflow: {name: ratio,", "workflow: {name: ratio, input: {lang: {type: string}},"
).replace("Each gets", "In {{ workflow.input.lang }}, each gets")
COUNT_CHANGED = CORRECTED.replace("output: {n: {type: integer}}", "output: {n: {type: integer}, label: {type: string}}")
STEP_INSERTED = CORRECTED.replace("routes: [{to: share}]", "routes: [{to: check}]").replace(
    "  - {name: share,", "  - {name: check, prompt: Check., mock: {output: {ok: true}}, routes: [{to: share}]}\n  - {name: share,"
)
WITHOUT_COUNT = """
workflow: {name: ratio, entry_point: share, runtime: {provider: fake, default_model: sim-model, max_tokens: 50}}
agents:
  - {name: share, prompt: "Each gets 10.", mock: {output: {ok: true}}}
"""


def upload(api, source):
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["version"]


def test_a_run_failed_by_its_definition_goes_on_from_its_checkpoint_on_a_corrected_version(api, team, celery_worker):
    upload(api, FIRST)
    run_id = api.post("/api/v1/runs", {"workflow": "ratio"}, format="json").json()["id"]
    run = wait_for_run(run_id, *TERMINAL)
    assert run.status == "failed" and run.error["type"] == "TemplateError"

    lacking = upload(api, WITHOUT_COUNT)
    refused = api.post(f"/api/v1/runs/{run_id}/resume", {"workflow_version": lacking, "reason": "fix"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"] == [{"path": "workflow_version", "message": "lacks 'count'"}]
    unknown = api.post(f"/api/v1/runs/{run_id}/resume", {"workflow_version": 99, "reason": "fix"}, format="json")
    assert unknown.status_code == 404
    for source, found in [
        (NEEDS_AN_INPUT, "inputs.lang"),
        (COUNT_CHANGED, "lacks 'count' with its output as it was"),
        (STEP_INSERTED, "lacks 'check' run before 'share' (the run has not run it)"),
    ]:
        refused = api.post(f"/api/v1/runs/{run_id}/resume", {"workflow_version": upload(api, source), "reason": "fix"}, format="json")
        assert refused.status_code == 400, refused.json()
        assert found in str(refused.json()["error"]["details"])

    corrected = upload(api, CORRECTED)
    resumed = api.post(f"/api/v1/runs/{run_id}/resume", {"workflow_version": corrected, "reason": "fix"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.workflow_version.version == corrected
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True)) == ["count", "share"]
    event = run.events.get(type=EventType.RUN_RESUMED)
    assert event.payload["workflow_version"] == {"from": 1, "to": corrected}
    assert_invariants(run)
