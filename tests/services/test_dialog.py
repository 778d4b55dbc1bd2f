"""An agent's dialog through the services, without a broker: its evaluator's call and re-run steps
of the run, gated, charged and settled like any other; a person's reply settled by the answer; what a
failure of the evaluator or the re-run does (conductor's fail-open), how the steps count toward
max_iterations, and a resume onto a version without the dialog."""

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.invariants import assert_invariants
from tests.steps import BrokenProvider, next_step
from workflows.errors import ValidationFailed
from workflows.models import EventType
from workflows.providers import ProviderError
from workflows.services.inputs import run_answer
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin, step_execute
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

REFUND_DESK = yaml.safe_load((Path(__file__).parent.parent / "conductor" / "refund_desk.yaml").read_text())
FIRST = {"amount_usd": 640, "reasoning": "The blender arrived broken; refund the order in full."}
QUESTION = "I propose refunding $640 for a broken blender. Should the whole order be refunded?"


def start(team, *, limits=None, source=None):
    version = workflow_create(team=team, definition=source or REFUND_DESK)
    return run_start(team=team, workflow=version.workflow_id, inputs={"complaint": "Broken blender"}, limits=limits)


def test_the_evaluator_reads_the_agent_s_output_with_the_agent_s_model(team):
    run = start(team)
    step_execute(step_id=next_step(run).pk)

    evaluator = next_step(run)
    assert (evaluator.role, evaluator.iteration, evaluator.validation) == ("dialog", 1, {"output": FIRST})
    assert run.checkpoints.latest().outputs == {}
    attempt = step_begin(step_id=evaluator.pk, worker="host:1")
    request = attempt.prepared.request
    assert (attempt.prepared.kind, attempt.prepared.model) == ("dialog", "sim-clerk")
    assert "above $500" in request.system_prompt
    assert '"amount_usd": 640' in request.prompt and "Agent: assessor" in request.prompt
    assert request.output_schema["trigger"] == {"type": "boolean"}
    assert attempt.prepared.estimate_usd == Decimal("0.600000")


def test_an_evaluator_whose_call_fails_lets_the_output_stand(team, monkeypatch):
    run = start(team)
    step_execute(step_id=next_step(run).pk)
    monkeypatch.setattr(
        "workflows.services.steps.kinds.agent.get_provider", lambda name: BrokenProvider(ProviderError("down", usage=None))
    )
    step_execute(step_id=next_step(run).pk)
    monkeypatch.undo()
    step_execute(step_id=next_step(run).pk)  # the writer

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["amount_usd"] == 640
    assert list(run.steps.values_list("role", "status")) == [("", "succeeded"), ("dialog", "failed"), ("", "succeeded")]
    evaluated = run.events.get(type=EventType.AGENT_DIALOG_EVALUATED).payload
    assert (evaluated["triggered"], evaluated["errored"], evaluated["error"]["type"]) == (False, True, "ProviderError")
    assert_invariants(run)


def test_a_re_run_that_fails_leaves_the_output_the_person_was_shown(team, monkeypatch):
    # The interrupted re-run is charged its estimate: room for it beside the workflow's own budget.
    run = start(team, limits={"budget_usd": "5"})
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)  # the evaluator asks
    step_execute(step_id=next_step(run).pk)  # the reply's step waits
    run.refresh_from_db()
    assert run.status == "waiting_for_input"
    run_answer(run=run, given={"text": "One blender only."}, actor="test")
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: BrokenProvider(RuntimeError("bug")))
    step_execute(step_id=next_step(run).pk)
    monkeypatch.undo()
    step_execute(step_id=next_step(run).pk)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["amount_usd"] == 640
    failed = run.events.get(type=EventType.AGENT_DIALOG_RERUN_FAILED).payload
    assert (failed["step"], failed["question"], failed["rerun_error"]["type"]) == (4, QUESTION, "StepInterruptedError")
    assert_invariants(run)


def test_the_dialog_s_steps_do_not_count_toward_max_iterations(team):
    run = start(team, limits={"max_iterations": 1})
    for _ in range(3):
        step_execute(step_id=next_step(run).pk)
    run.refresh_from_db()
    run_answer(run=run, given={"text": "One blender only."}, actor="test")
    for _ in range(2):
        step_execute(step_id=next_step(run).pk)

    run.refresh_from_db()
    assert run.status == "iteration_limit"
    assert run.iterations == 1
    assert list(run.steps.values_list("role", "status")) == [
        ("", "succeeded"),
        ("dialog", "succeeded"),
        ("dialog_reply", "succeeded"),
        ("rerun", "succeeded"),
        ("", "blocked"),
    ]
    assert run.error["current_agent"] == "writer"
    assert_invariants(run)


def test_a_resume_at_the_dialog_onto_a_version_without_it_is_refused(team):
    run = start(team, limits={"budget_usd": "0.65"})
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)  # stopped: 0.10 spent + 0.60 for the evaluator > 0.65
    run.refresh_from_db()
    assert (run.status, next_step(run).role) == ("budget_exceeded", "dialog")
    source = yaml.safe_load(yaml.safe_dump(REFUND_DESK))
    del source["agents"][0]["dialog"]
    version = workflow_create(team=team, definition=source)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, limits={"budget_usd": "1"}, workflow_version=version.version)

    assert refused.value.details == [
        {"path": "workflow_version", "message": "lacks 'assessor' with a dialog (the run goes on from its dialog)"}
    ]


@pytest.mark.parametrize("text", ["one\x00 blender", "one \ud800 blender"], ids=["nul", "lone-surrogate"])
def test_a_reply_no_database_can_store_is_refused_and_the_run_still_waits(team, text):
    run = start(team)
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)  # the evaluator asked: the run waits for a reply
    run.refresh_from_db()
    assert run.status == "waiting_for_input"

    # The API's parser refuses such text; the admin's form posts it here as it is.
    with pytest.raises(ValidationFailed) as refused:
        run_answer(run=run, given={"text": text}, actor="user:clerk")

    assert refused.value.details[0]["path"] == "text"
    run.refresh_from_db()
    assert run.status == "waiting_for_input"
    assert not run.events.filter(type=EventType.INPUT_RECEIVED).exists()
