"""Conductor's `wait` step on a real worker: the run pauses for its duration, templated or not, while
the worker goes on with other runs' steps: no worker waits."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

PAUSED = """
workflow:
  name: paused
  entry_point: pause
  input: {seconds: {type: number, required: true}}
  runtime: {provider: fake, default_model: sim-model}
agents:
  - name: pause
    type: wait
    duration: "{{ workflow.input.seconds }}s"
    reason: let the upstream settle
    routes: [{to: report}]
  - name: report
    type: set
    value: "{{ pause.output.waited_seconds }}"
"""

QUICK = """
workflow:
  name: quick
  entry_point: answer
  runtime: {provider: fake, default_model: sim-model}
agents:
  - name: answer
    prompt: "Answer."
    mock: {output: {ok: true}, output_tokens: 5}
"""


def start(api, workflow, **inputs):
    response = api.post("/api/v1/runs", {"workflow": workflow, "inputs": inputs}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def test_a_run_waits_its_duration_while_the_worker_runs_other_steps(api, team, celery_worker):
    for source in (PAUSED, QUICK):
        assert api.post("/api/v1/workflows", {"definition": source}, format="json").status_code == 201

    paused_id = start(api, "paused", seconds=3)
    quick = wait_for_run(start(api, "quick"), *TERMINAL)
    paused = wait_for_run(paused_id, *TERMINAL)

    assert quick.status == paused.status == "completed"
    pause = paused.steps.get(agent="pause")
    # The worker has one process: had it slept through the pause, the other run would have waited.
    assert quick.finished_at < pause.finished_at
    assert (pause.finished_at - pause.created_at).total_seconds() >= 3
    assert pause.output == {"waited_seconds": 3.0}
    assert paused.steps.get(agent="report").output == 3.0
    assert paused.iterations == 2 and paused.spent_usd == 0
    assert_invariants(paused)


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("0", "more than 0"),
        ("25h", "at most 24h"),
        ("soon", "is not a duration"),
        ("true", "not bool"),
        ("'{{ workflow.input.x'", "does not compile"),
    ],
)
def test_a_wait_that_cannot_be_is_refused_at_upload(team, duration, message):
    source = f"workflow: {{name: w, entry_point: s, runtime: {{provider: fake}}}}\nagents: [{{name: s, type: wait, duration: {duration}}}]\n"
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=source)
    assert any(d["path"] == "agents[0].duration" and message in d["message"] for d in refused.value.details), refused.value.details
