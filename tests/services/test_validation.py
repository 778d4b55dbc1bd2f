"""An agent's validator through the services, without a broker: each of its calls a step of the run,
gated, charged and settled like any other; what a failure of one does (conductor's fail-open), a
crashed attempt taken over, how they count toward max_iterations, and a resume onto another version."""

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.invariants import assert_invariants
from tests.steps import BrokenProvider, next_step
from workflows.errors import ValidationFailed
from workflows.models import EventType
from workflows.providers import ProviderError, get_provider
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin, step_execute, step_settle
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

RELEASE_NOTES = yaml.safe_load((Path(__file__).parent.parent / "conductor" / "release_notes.yaml").read_text())
GRADED = {"notes": ["Fixed stuff", "Refactored the export cache"]}
ISSUES = ["'Fixed stuff' is vague: say what was fixed", "Drop the export cache refactoring: users cannot notice it"]


def start(team, *, limits=None, **validator):
    source = yaml.safe_load(yaml.safe_dump(RELEASE_NOTES))
    source["agents"][0]["validator"].update(validator)
    version = workflow_create(team=team, definition=source)
    return run_start(team=team, workflow=version.workflow_id, inputs={"changes": "#12 export timeout"}, limits=limits)


def test_the_validator_s_step_grades_what_the_agent_was_asked_and_answered(team):
    run = start(team)
    step_execute(step_id=next_step(run).pk)

    validator = next_step(run)
    assert (validator.agent, validator.role, validator.iteration, validator.status) == ("drafter", "validator", 1, "pending")
    assert validator.validation["output"] == GRADED
    assert validator.validation["prompt"].startswith("Write release notes from these merged changes")
    assert "#12 export timeout" in validator.validation["prompt"]
    # The agent's output is not the run's until it is final.
    assert run.checkpoints.latest().outputs == {}
    attempt = step_begin(step_id=validator.pk, worker="host:1")
    request = attempt.prepared.request
    assert (attempt.prepared.kind, attempt.prepared.model, request.model) == ("validator", "sim-grader", "sim-grader")
    assert "2. No note mentions refactoring" in request.system_prompt
    assert '"Refactored the export cache"' in request.prompt
    assert request.output_schema["passed"] == {"type": "boolean"}
    assert attempt.prepared.estimate_usd == Decimal("0.153600")  # 512 tokens, a verdict's least, at $300 per million


def test_a_validator_whose_call_fails_passes_the_output_as_conductor_s_does(team, monkeypatch):
    run = start(team)
    step_execute(step_id=next_step(run).pk)
    used = ProviderError("the grader's answer does not fit", usage=None)
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: BrokenProvider(used))
    step_execute(step_id=next_step(run).pk)
    monkeypatch.undo()
    step_execute(step_id=next_step(run).pk)  # the announcer

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.output["notes"] == GRADED["notes"]
    assert list(run.steps.values_list("agent", "role", "status")) == [
        ("drafter", "", "succeeded"),
        ("drafter", "validator", "failed"),
        ("announcer", "", "succeeded"),
    ]
    passed = run.events.get(type=EventType.AGENT_VALIDATION_PASSED).payload
    assert passed == {
        "agent": "drafter",
        "step": 2,
        "errored": True,
        "error": {"type": "ProviderError", "message": "the grader's answer does not fit", "status_code": None},
    }
    assert_invariants(run)


def test_a_re_run_that_fails_leaves_the_graded_output_standing(team, monkeypatch):
    run = start(team)
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)  # the validator fails the notes
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: BrokenProvider(RuntimeError("bug")))
    step_execute(step_id=next_step(run).pk)
    monkeypatch.undo()
    step_execute(step_id=next_step(run).pk)

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.output["notes"] == GRADED["notes"]
    rerun = run.steps.get(role="rerun")
    assert (rerun.status, rerun.error["type"], rerun.reserved_usd) == ("failed", "StepInterruptedError", Decimal("0"))
    failures = [event.payload for event in run.events.filter(type=EventType.AGENT_VALIDATION_FAILED).order_by("id")]
    assert [(payload["step"], payload["will_retry"]) for payload in failures] == [(2, True), (3, False)]
    assert failures[1]["issues"] == ISSUES
    assert failures[1]["rerun_error"]["type"] == "StepInterruptedError"
    assert_invariants(run)


def test_a_crashed_validator_attempt_is_charged_its_estimate_and_its_step_run_again(team):
    run = start(team)
    step_execute(step_id=next_step(run).pk)
    validator = next_step(run)
    step_begin(step_id=validator.pk, worker="host:1")  # its worker dies before settling
    retry = step_begin(step_id=validator.pk, worker="host:2")
    run.refresh_from_db()
    assert run.reserved_usd == Decimal("0.153600")

    step_settle(attempt=retry, result=get_provider("fake").complete(retry.prepared.request))

    assert list(run.ledger_entries.values_list("agent", "attempt", "basis", "cost_usd")) == [
        ("drafter", 1, "reported", Decimal("0.100000")),
        ("drafter (validator)", 1, "estimated", Decimal("0.153600")),
        ("drafter (validator)", 2, "reported", Decimal("0.012000")),
    ]
    assert next_step(run).role == "rerun"
    assert_invariants(run)


def test_a_validator_s_call_and_a_re_run_do_not_count_toward_max_iterations(team):
    """As in conductor: the agent's execution is one iteration, validated and re-run or not."""
    run = start(team, limits={"max_iterations": 1})
    for _ in range(4):
        step_execute(step_id=next_step(run).pk)

    run.refresh_from_db()
    assert run.status == "iteration_limit"
    assert run.iterations == 1
    assert list(run.steps.values_list("role", "status")) == [
        ("", "succeeded"),
        ("validator", "succeeded"),
        ("rerun", "succeeded"),
        ("", "blocked"),
    ]
    assert run.error["current_agent"] == "announcer"
    assert run.checkpoints.latest().outputs == {"drafter": {"notes": ["Exports of files over 2 GB no longer time out"]}}
    assert_invariants(run)


def test_a_resume_at_a_validator_s_call_onto_a_version_without_the_validator_is_refused(team):
    run = start(team, limits={"budget_usd": "0.25"})
    step_execute(step_id=next_step(run).pk)
    step_execute(step_id=next_step(run).pk)  # stopped: 0.10 spent + 0.1536 for the grader > 0.25
    run.refresh_from_db()
    assert (run.status, next_step(run).role) == ("budget_exceeded", "validator")
    source = yaml.safe_load(yaml.safe_dump(RELEASE_NOTES))
    del source["agents"][0]["validator"]
    version = workflow_create(team=team, definition=source)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, limits={"budget_usd": "1"}, workflow_version=version.version)

    assert refused.value.details == [
        {"path": "workflow_version", "message": "lacks 'drafter' with a validator (the run goes on from its validator's call)"}
    ]
