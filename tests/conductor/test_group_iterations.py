"""A parallel group under max_iterations, as conductor runs it: refused whole, before any branch runs,
when its branches would take the run past the limit; a resume with room runs the whole group."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.models import LedgerEntry, StepStatus

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

REVIEWS = """
workflow:
  name: reviews
  entry_point: draft
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  limits: {max_iterations: 3}
agents:
  - {name: draft, prompt: Draft., mock: {output: {text: d}, output_tokens: 5}, routes: [{to: reviews}]}
  - {name: style, prompt: Style., mock: {output: {ok: true}, output_tokens: 5}}
  - {name: facts, prompt: Facts., mock: {output: {ok: true}, output_tokens: 5}}
  - {name: tone, prompt: Tone., mock: {output: {ok: true}, output_tokens: 5}}
parallel:
  - name: reviews
    agents: [style, facts, tone]
"""


def test_a_group_that_would_pass_max_iterations_runs_no_branch_until_a_resume_gives_it_room(api, team, celery_worker):
    assert api.post("/api/v1/workflows", {"definition": REVIEWS}, format="json").status_code == 201
    run_id = api.post("/api/v1/runs", {"workflow": "reviews"}, format="json").json()["id"]

    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "iteration_limit"
    assert run.error["message"] == "The group 'reviews' would run 3 steps after the 1 executed; max_iterations is 3."
    assert run.iterations == 1
    assert set(run.steps.filter(group="reviews").values_list("status", flat=True)) == {StepStatus.BLOCKED}
    assert list(LedgerEntry.objects.filter(run=run).values_list("agent", flat=True)) == ["draft"]

    too_little = api.post(f"/api/v1/runs/{run_id}/resume", {"max_iterations": 2, "reason": "room"}, format="json")
    assert too_little.status_code == 409  # the group would stop half way: it runs whole or not at all
    assert "the group 'reviews' would run 3 steps" in too_little.json()["error"]["message"]
    resumed = api.post(f"/api/v1/runs/{run_id}/resume", {"max_iterations": 4, "reason": "room"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.iterations == 4
    assert_invariants(run)


def test_a_resume_onto_a_version_whose_group_has_other_agents_is_refused(api, team, celery_worker):
    api.post("/api/v1/workflows", {"definition": REVIEWS}, format="json")
    run_id = api.post("/api/v1/runs", {"workflow": "reviews"}, format="json").json()["id"]
    wait_for_run(run_id, *TERMINAL)
    changed = REVIEWS.replace("agents: [style, facts, tone]", "agents: [style, facts]")
    version = api.post("/api/v1/workflows", {"definition": changed}, format="json").json()["version"]

    refused = api.post(
        f"/api/v1/runs/{run_id}/resume", {"max_iterations": 4, "workflow_version": version, "reason": "fix"}, format="json"
    )

    assert refused.status_code == 400
    assert "lacks 'reviews' (with its agents as they were)" in str(refused.json()["error"]["details"])
