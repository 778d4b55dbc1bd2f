"""A group inside a sub-workflow, driven step by step through the services (no broker) so that the
order in which its branches end is the test's: the last branch to end settles from what was
rendered ahead, its group's route returning from the frame included, and a resume onto another
version keeps what the run has been through inside the frame."""

import pytest

from tests.conductor.test_group_validator_steps import (  # noqa: F401 - fixtures
    begin,
    run_step,
    settle,
    transactions,
    under_locks,
)
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from workflows.errors import ValidationFailed
from workflows.models import Run
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin

pytestmark = pytest.mark.django_db

# The sub-workflow's group routes out of it, and the caller's step routes on, both reading what the
# settlement changes: the run's spend and executed steps.
CALLER = """
workflow:
  name: caller
  entry_point: inner
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: inner
    type: workflow
    input_mapping: {things: "{{ workflow.input.things }}"}
    workflow:
      workflow:
        name: inner
        entry_point: planner
        input: {things: {type: array}}
        runtime: {provider: fake, default_model: sim, max_tokens: 1000}
        cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
      agents:
        - {name: planner, prompt: "Plan {{ workflow.input.things | length }} things.", routes: [{to: items}]}
      for_each:
        - name: items
          source: workflow.input.things
          as: thing
          max_concurrent: 2
          failure_mode: continue_on_error
          agent:
            name: worker
            prompt: "Do {{ thing }}"
            output: {text: {type: string}}
          routes:
            - to: $end
              when: "{{ budget.spent_usd < 100 and context.iteration < 100 }}"
      output:
        results: "{{ items.outputs }}"
    routes:
      - to: finisher
        when: "{{ budget.spent_usd < 100 and context.iteration < 100 and inner.output.results | length == 2 }}"
  - name: finisher
    prompt: "Finish {{ inner.output.results | length }} items."
output:
  results: "{{ inner.output.results }}"
"""


def start(team, source: str = CALLER, **limits) -> Run:
    version = workflow_version(team=team, source=source)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]}, limits=limits or None)
    bind = begin(run.steps.get(agent="inner"))
    settle(bind, bind.prepared.data["output"])  # the inputs it bound, as its kind's run answers
    run_step(run.steps.get(agent="inner/planner"), {"plan": "both"})
    return run


def test_the_last_branch_ending_the_group_returns_from_the_frame_from_what_was_rendered_ahead(
    team, transactions, under_locks
):
    run = start(team)
    run_step(run.steps.get(agent="inner/worker", branch_key="0"), {"text": "a"})
    last = begin(run.steps.get(agent="inner/worker", branch_key="1"))
    transactions.clear()
    under_locks.clear()

    settle(last, {"text": "b"})

    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"
    run.refresh_from_db()
    assert run.steps.filter(agent="finisher", status="pending").exists()
    outputs = run.checkpoints.latest().outputs
    assert outputs["inner"] == {"results": [{"text": "a"}, {"text": "b"}]}
    assert "inner/items" not in outputs
    assert_invariants(run)


def _stopped_in_the_group(team) -> Run:
    run = start(team, budget_usd="0.15", budget_mode="enforce")
    first = begin(run.steps.get(agent="inner/worker", branch_key="0"))
    second = run.steps.get(agent="inner/worker", branch_key="1")
    assert step_begin(step_id=second.pk, worker="host:2") is None  # $0.10 held + $0.10 > $0.15
    settle(first, {"text": "a"})
    run.refresh_from_db()
    assert (run.status, run.current_agent) == ("budget_exceeded", "inner/items")
    return run


def test_a_resume_onto_a_version_keeping_the_group_goes_on_inside_the_frame(team):
    run = _stopped_in_the_group(team)
    again = workflow_version(team=team, source=CALLER.replace("Finish", "Now finish"))

    run_resume(run=run, limits={"budget_usd": "5"}, workflow_version=again.version)
    run_step(run.steps.get(agent="inner/worker", branch_key="1", status="pending"), {"text": "b"})
    run_step(run.steps.get(agent="finisher"), {"done": True})

    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("completed", 2)
    assert run.output == {"results": [{"text": "a"}, {"text": "b"}]}
    assert_invariants(run)


RENAMED = (
    CALLER.replace("routes: [{to: items}]", "routes: [{to: lots}]")
    .replace("        - name: items\n", "        - name: lots\n")
    .replace("items.outputs", "lots.outputs")
)
RETYPED = CALLER.replace("output: {text: {type: string}}", "output: {text: {type: integer}}")


@pytest.mark.parametrize(
    ("source", "lacks"),
    [(RENAMED, "lacks 'inner/items' (with its agents as they were)"), (RETYPED, "lacks 'inner/worker' with its output as it was")],
)
def test_a_resume_onto_a_version_that_changed_the_group_inside_the_frame_is_refused(team, source, lacks):
    run = _stopped_in_the_group(team)
    version = workflow_version(team=team, source=source)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, limits={"budget_usd": "5"}, workflow_version=version.version)

    assert [detail["message"] for detail in refused.value.details] == [lacks]
    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("budget_exceeded", 1)
