"""Conductor's `validator:` on a real worker, with the release-notes workflow in this folder: the
validator's call and the agent's re-run are steps of the run, each gated by the budget before it is
made and charged its own ledger entry; a budget stop before either leaves a checkpoint that a resume
continues from without repeating a call; audit mode reports where enforce would have stopped.

Prices (input is free): the drafter and the announcer each reserve $0.20 (a 200-token cap at $1,000
per million) and cost $0.10 and $0.05; the validator, on its own model, reserves $0.1536 (512
tokens, the least a verdict is given, at $300 per million) and costs $0.012; the re-run costs what
the drafter does."""

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for_run
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from tests.steps import kill_worker_during
from workflows.models import EventType, LedgerEntry
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
SOURCE = (Path(__file__).parent / "release_notes.yaml").read_text()
FIRST = ["Fixed stuff", "Refactored the export cache"]
SECOND = ["Exports of files over 2 GB no longer time out"]
ISSUES = ["'Fixed stuff' is vague: say what was fixed", "Drop the export cache refactoring: users cannot notice it"]


def upload(api, *, verdict: dict | None = None, max_retries: int | None = None) -> None:
    """The workflow, its validator answering `verdict` and re-running `max_retries` times when given."""
    source = SOURCE
    if verdict is not None or max_retries is not None:
        data = yaml.safe_load(SOURCE)
        validator = data["agents"][0]["validator"]
        validator["mock"]["output"] = verdict or validator["mock"]["output"]
        validator["max_retries"] = validator["max_retries"] if max_retries is None else max_retries
        source = yaml.safe_dump(data, sort_keys=False)
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")
    assert response.status_code == 201, response.json()


def start(api, **limits):
    body = {"workflow": "release-notes", "inputs": {"changes": "#12 export timeout\n#13 cache refactor"}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def steps(api, run) -> list[tuple]:
    listed = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    return [(step["agent"], step["role"], step["status"]) for step in listed]


def ledger(run) -> list[tuple]:
    return list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "model", "cost_usd"))


def payloads(run, event_type) -> list[dict]:
    return [event.payload for event in run.events.filter(type=event_type).order_by("id")]


def test_a_failed_output_is_written_again_with_the_feedback_and_the_second_output_is_final(api, team, celery_worker):
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    assert steps(api, run) == [
        ("drafter", "", "succeeded"),
        ("drafter", "validator", "succeeded"),
        ("drafter", "rerun", "succeeded"),
        ("announcer", "", "succeeded"),
    ]
    assert run.output == {"notes": SECOND, "post": "Version 2.4 is out: big exports work again."}
    # One ledger entry per call, the validator's under conductor's usage row name.
    assert ledger(run) == [
        ("drafter", "sim-writer", Decimal("0.100000")),
        ("drafter (validator)", "sim-grader", Decimal("0.012000")),
        ("drafter", "sim-writer", Decimal("0.100000")),
        ("announcer", "sim-writer", Decimal("0.050000")),
    ]
    assert run.spent_usd == Decimal("0.262000")
    assert run.iterations == 2  # the drafter's execution counts once, as in conductor
    assert payloads(run, EventType.AGENT_VALIDATION_FAILED) == [
        {"agent": "drafter", "step": 2, "issues": ISSUES, "will_retry": True}
    ]
    graded = run.events.get(type=EventType.AGENT_COMPLETED, payload__role="validator").payload
    assert (graded["step"], graded["model"], graded["cost_usd"]) == (2, "sim-grader", "0.012000")
    rerun = run.steps.get(role="rerun")
    assert rerun.validation["issues"] == ISSUES
    # The announcer read the final notes: its prompt held the second draft only.
    assert run.steps.get(agent="announcer").output == {"post": "Version 2.4 is out: big exports work again."}
    assert run.checkpoints.latest().outputs["drafter"] == {"notes": SECOND}
    assert_invariants(run)


def test_a_passed_output_goes_on_to_the_agent_s_routes_unchanged(api, team, celery_worker):
    upload(api, verdict={"passed": True, "issues": []})

    run = start(api)

    assert run.status == "completed", run.error
    assert steps(api, run) == [
        ("drafter", "", "succeeded"),
        ("drafter", "validator", "succeeded"),
        ("announcer", "", "succeeded"),
    ]
    assert run.output["notes"] == FIRST
    assert [agent for agent, _, _ in ledger(run)] == ["drafter", "drafter (validator)", "announcer"]
    assert payloads(run, EventType.AGENT_VALIDATION_PASSED) == [{"agent": "drafter", "step": 2, "errored": False}]
    assert not payloads(run, EventType.AGENT_VALIDATION_FAILED)
    assert run.spent_usd == Decimal("0.162000")
    assert_invariants(run)


def test_with_max_retries_0_a_failure_is_only_reported(api, team, celery_worker):
    upload(api, max_retries=0)

    run = start(api)

    assert run.status == "completed", run.error
    assert [role for _, role, _ in steps(api, run)] == ["", "validator", ""]
    assert run.output["notes"] == FIRST
    assert payloads(run, EventType.AGENT_VALIDATION_FAILED) == [
        {"agent": "drafter", "step": 2, "issues": ISSUES, "will_retry": False}
    ]
    assert len(ledger(run)) == 3
    assert_invariants(run)


def test_an_enforce_budget_stops_before_the_validator_s_call_and_a_resume_runs_it_without_repeating_the_agent(
    api, team, celery_worker
):
    upload(api)

    # The drafter fits ($0.20 reserved of $0.25); its validator would not ($0.10 spent + $0.1536).
    run = start(api, budget_usd="0.25")

    assert run.status == "budget_exceeded"
    assert steps(api, run) == [("drafter", "", "succeeded"), ("drafter", "validator", "blocked")]
    assert run.error["type"] == "BudgetExceededError"
    assert run.error["current_agent"] == "drafter"
    [exceeded] = payloads(run, EventType.BUDGET_EXCEEDED)
    assert (exceeded["spent_usd"], exceeded["projected_usd"]) == ("0.100000", "0.253600")
    checkpoint = run.checkpoints.latest()
    assert (checkpoint.next_step.role, checkpoint.outputs, checkpoint.spent_usd) == ("validator", {}, Decimal("0.1"))
    assert_invariants(run)

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "1", "reason": "grade it"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output["notes"] == SECOND
    assert run.steps.get(sequence=1).attempts == 1  # the drafter's first call was never made again
    assert [agent for agent, _, _ in ledger(run)] == ["drafter", "drafter (validator)", "drafter", "announcer"]
    assert run.spent_usd == Decimal("0.262000")  # spend kept across the resume
    assert_invariants(run)


def test_an_enforce_budget_stops_before_the_re_run_and_a_resume_runs_it_with_the_feedback(api, team, celery_worker):
    upload(api)

    # The validator fits ($0.10 + $0.1536 of $0.30); the re-run does not ($0.112 spent + $0.20).
    run = start(api, budget_usd="0.30")

    assert run.status == "budget_exceeded"
    assert steps(api, run) == [
        ("drafter", "", "succeeded"),
        ("drafter", "validator", "succeeded"),
        ("drafter", "rerun", "blocked"),
    ]
    assert run.spent_usd == Decimal("0.112000")
    assert run.checkpoints.latest().outputs == {}  # the drafter's output is not final yet
    assert_invariants(run)

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "0.50", "reason": "rewrite"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output["notes"] == SECOND
    assert [step.attempts for step in run.steps.order_by("sequence")] == [1, 1, 1, 1]
    assert len(ledger(run)) == 4
    assert run.spent_usd == Decimal("0.262000")
    assert_invariants(run)


def test_a_resume_that_cannot_pay_for_the_validator_s_call_is_refused(api, team, celery_worker):
    upload(api)
    run = start(api, budget_usd="0.25")
    assert run.status == "budget_exceeded"

    refused = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "0.253", "reason": "a bit more"}, format="json")

    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["projected_usd"] == "0.253600"


def test_audit_mode_reports_at_the_validator_s_call_where_enforce_would_stop_and_goes_on(api, team, celery_worker):
    upload(api)

    run = start(api, budget_usd="0.25", budget_mode="audit")

    assert run.status == "completed", run.error
    [exceeded] = payloads(run, EventType.BUDGET_EXCEEDED)
    assert (exceeded["budget_mode"], exceeded["current_agent"], exceeded["projected_usd"]) == ("audit", "drafter", "0.253600")
    reported_at = run.events.get(type=EventType.BUDGET_EXCEEDED).pk
    validator_done = run.events.get(type=EventType.AGENT_COMPLETED, payload__role="validator").pk
    assert reported_at < validator_done
    assert run.spent_usd == Decimal("0.262000")
    assert len(ledger(run)) == 4
    assert_invariants(run)


def test_a_worker_killed_during_the_validator_s_call_is_redelivered_and_the_killed_call_charged_its_estimate(
    team, worker_process
):
    data = yaml.safe_load(SOURCE)
    data["agents"][0]["validator"]["mock"]["latency_ms"] = 4000
    version = workflow_create(team=team, definition=data)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"changes": "#12 export timeout"})

    validator = kill_worker_during(run, role="validator")

    run = wait_for_run(run.pk, *TERMINAL, timeout=60)
    assert run.status == "completed", run.error
    validator.refresh_from_db()
    assert (validator.attempts, validator.redeliveries) == (2, 1)
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis")) == [
        ("drafter", 1, "reported"),
        ("drafter (validator)", 1, "estimated"),
        ("drafter (validator)", 2, "reported"),
        ("drafter", 1, "reported"),
        ("announcer", 1, "reported"),
    ]
    assert run.output["notes"] == SECOND
    # What the calls reported, and the killed call's reservation.
    killed = run.ledger_entries.get(basis="estimated")
    assert (killed.cost_usd, run.spent_usd) == (validator.estimate_usd, Decimal("0.262000") + validator.estimate_usd)
    assert_invariants(run)
