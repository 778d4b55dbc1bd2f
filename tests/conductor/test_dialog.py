"""Conductor's `dialog:` on a real worker, with the refund-desk workflow in this folder: the
evaluator's call is a step of the run, gated and charged its own ledger entry; when it triggers, the
run waits for a person's reply, and the agent's re-run with the question and the reply is final; a
budget stop before the evaluator or the re-run leaves a checkpoint that a resume continues from
without repeating a call.

Prices (input is free): each call reserves $0.60 (a 600-token cap at $1,000 per million); the
assessor costs $0.10, the evaluator $0.03, the re-run $0.10 and the writer $0.05."""

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for_run
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from tests.steps import kill_worker_during
from workflows.models import EventType, LedgerEntry
from workflows.services.inputs import run_answer
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
WAITING = (*TERMINAL, "waiting_for_input")
SOURCE = (Path(__file__).parent / "refund_desk.yaml").read_text()
QUESTION = "I propose refunding $640 for a broken blender. Should the whole order be refunded?"
FIRST = {"amount_usd": 640, "reasoning": "The blender arrived broken; refund the order in full."}
SECOND = {"amount_usd": 320, "reasoning": "Only one of the two blenders arrived broken."}
REPLY = "Only one of the two blenders was broken: refund that one."


def upload(api, *, evaluation: dict | None = None, **mock) -> None:
    """The workflow, its evaluator answering `evaluation` (and its mock changed by `mock`) when given."""
    data = yaml.safe_load(SOURCE)
    dialog_mock = data["agents"][0]["dialog"]["mock"]
    if evaluation is not None:
        dialog_mock["output"] = evaluation
    dialog_mock.update(mock)
    response = api.post("/api/v1/workflows", {"definition": yaml.safe_dump(data, sort_keys=False)}, format="json")
    assert response.status_code == 201, response.json()


def start(api, **limits):
    body = {"workflow": "refund-desk", "inputs": {"complaint": "My blender arrived broken."}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *WAITING)


def answer(api, run, body: dict):
    response = api.post(f"/api/v1/runs/{run.pk}/input", body, format="json")
    assert response.status_code == 200, response.json()
    return wait_for_run(run.pk, *WAITING)


def steps(api, run) -> list[tuple]:
    listed = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    return [(step["agent"], step["role"], step["status"]) for step in listed]


def ledger(run) -> list[tuple]:
    return list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "cost_usd"))


def payloads(run, event_type) -> list[dict]:
    return [event.payload for event in run.events.filter(type=event_type).order_by("id")]


def test_a_triggered_dialog_waits_for_a_reply_and_the_re_run_with_it_is_final(api, team, celery_worker):
    upload(api)

    run = start(api)

    assert run.status == "waiting_for_input", run.error
    assert steps(api, run) == [("assessor", "", "succeeded"), ("assessor", "dialog", "succeeded"), ("assessor", "dialog_reply", "awaiting_input")]
    [asked] = payloads(run, EventType.INPUT_REQUESTED)
    assert asked == {
        "agent": "assessor",
        "dialog": True,
        "prompt": QUESTION,
        "reason": "The proposed refund is above $500.",
        "output": FIRST,
    }
    assert payloads(run, EventType.AGENT_DIALOG_EVALUATED) == [
        {"agent": "assessor", "step": 2, "triggered": True, "reason": "The proposed refund is above $500.", "question": QUESTION, "errored": False}
    ]
    assert run.checkpoints.latest().outputs == {}  # the assessor's output is not final yet
    assert_invariants(run)

    run = answer(api, run, {"text": REPLY})

    assert run.status == "completed", run.error
    assert [role for _, role, _ in steps(api, run)] == ["", "dialog", "dialog_reply", "rerun", ""]
    assert run.output == {"amount_usd": 320, "reply": "We are sorry about the blender: your refund is on its way."}
    rerun = run.steps.get(role="rerun")
    assert rerun.validation == {"question": QUESTION, "reply": REPLY, "output": FIRST}
    assert rerun.output == SECOND
    assert run.checkpoints.latest().outputs["assessor"] == SECOND
    # One ledger entry per call, the evaluator's named as a validator's is; the person's reply costs nothing.
    assert ledger(run) == [
        ("assessor", Decimal("0.100000")),
        ("assessor (dialog)", Decimal("0.030000")),
        ("assessor", Decimal("0.100000")),
        ("writer", Decimal("0.050000")),
    ]
    assert run.spent_usd == Decimal("0.280000")
    assert run.iterations == 2  # the assessor's execution counts once, as with a validator
    assert payloads(run, EventType.INPUT_RECEIVED)[0]["text"] == REPLY
    assert_invariants(run)


def test_a_dialog_that_does_not_trigger_lets_the_output_stand(api, team, celery_worker):
    upload(api, evaluation={"trigger": False, "reason": "Small refund.", "question": ""})

    run = start(api)

    assert run.status == "completed", run.error
    assert [role for _, role, _ in steps(api, run)] == ["", "dialog", ""]
    assert run.output["amount_usd"] == 640
    assert [agent for agent, _ in ledger(run)] == ["assessor", "assessor (dialog)", "writer"]
    [evaluated] = payloads(run, EventType.AGENT_DIALOG_EVALUATED)
    assert (evaluated["triggered"], evaluated["errored"]) == (False, False)
    assert not payloads(run, EventType.INPUT_REQUESTED)
    assert run.spent_usd == Decimal("0.180000")
    assert_invariants(run)


def test_an_evaluator_that_answers_no_verdict_lets_the_output_stand(api, team, celery_worker):
    upload(api, evaluation={"reason": "unsure"})

    run = start(api)

    assert run.status == "completed", run.error
    assert [role for _, role, _ in steps(api, run)] == ["", "dialog", ""]
    assert run.output["amount_usd"] == 640
    [evaluated] = payloads(run, EventType.AGENT_DIALOG_EVALUATED)
    assert (evaluated["triggered"], evaluated["errored"]) == (False, True)
    assert_invariants(run)


def test_a_declined_dialog_lets_the_output_stand_without_a_re_run(api, team, celery_worker):
    upload(api)
    run = start(api)
    assert run.status == "waiting_for_input"

    run = answer(api, run, {"decline": True})

    assert run.status == "completed", run.error
    assert [role for _, role, _ in steps(api, run)] == ["", "dialog", "dialog_reply", ""]
    assert run.output["amount_usd"] == 640
    assert [agent for agent, _ in ledger(run)] == ["assessor", "assessor (dialog)", "writer"]
    assert run.spent_usd == Decimal("0.180000")
    assert_invariants(run)


def test_a_reply_the_dialog_does_not_take_is_refused_and_the_run_still_waits(api, team, celery_worker):
    upload(api)
    run = start(api)

    for body, path in (({"choice": "yes"}, "choice"), ({"text": "  "}, "text"), ({"decline": True, "text": "x"}, "text")):
        refused = api.post(f"/api/v1/runs/{run.pk}/input", body, format="json")
        assert refused.status_code == 400, refused.json()
        assert refused.json()["error"]["details"][0]["path"] == path
    run.refresh_from_db()
    assert run.status == "waiting_for_input"


def test_an_enforce_budget_stops_before_the_evaluator_and_a_resume_runs_it_without_repeating_the_agent(
    api, team, celery_worker
):
    upload(api)

    # The assessor fits ($0.60 reserved of $0.65); its evaluator does not ($0.10 spent + $0.60).
    run = start(api, budget_usd="0.65")

    assert run.status == "budget_exceeded"
    assert steps(api, run) == [("assessor", "", "succeeded"), ("assessor", "dialog", "blocked")]
    assert run.error["current_agent"] == "assessor"
    checkpoint = run.checkpoints.latest()
    assert (checkpoint.next_step.role, checkpoint.outputs) == ("dialog", {})
    assert_invariants(run)

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "1", "reason": "ask"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *WAITING)
    assert run.status == "waiting_for_input", run.error
    run = answer(api, run, {"text": REPLY})

    assert run.status == "completed", run.error
    assert run.output["amount_usd"] == 320
    assert run.steps.get(sequence=1).attempts == 1  # the assessor's first call was never made again
    assert [agent for agent, _ in ledger(run)] == ["assessor", "assessor (dialog)", "assessor", "writer"]
    assert run.spent_usd == Decimal("0.280000")
    assert_invariants(run)


def test_an_enforce_budget_stops_before_the_re_run_and_a_resume_runs_it_with_the_reply(api, team, celery_worker):
    upload(api)

    # The evaluator fits ($0.10 + $0.60 of $0.72), and the reply costs nothing; the re-run does not
    # ($0.13 spent + $0.60).
    run = start(api, budget_usd="0.72")
    assert run.status == "waiting_for_input", run.error
    run = answer(api, run, {"text": REPLY})

    assert run.status == "budget_exceeded"
    assert steps(api, run) == [
        ("assessor", "", "succeeded"),
        ("assessor", "dialog", "succeeded"),
        ("assessor", "dialog_reply", "succeeded"),
        ("assessor", "rerun", "blocked"),
    ]
    assert run.spent_usd == Decimal("0.130000")
    assert run.checkpoints.latest().outputs == {}
    assert_invariants(run)

    resumed = api.post(f"/api/v1/runs/{run.pk}/resume", {"budget_usd": "1", "reason": "go on"}, format="json")
    assert resumed.status_code == 202, resumed.json()
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output["amount_usd"] == 320
    assert [step.attempts for step in run.steps.order_by("sequence")] == [1, 1, 1, 1, 1]
    assert len(ledger(run)) == 4
    assert run.spent_usd == Decimal("0.280000")
    assert_invariants(run)


def test_a_worker_killed_during_the_evaluator_s_call_is_redelivered_and_the_killed_call_charged_its_estimate(
    team, worker_process
):
    data = yaml.safe_load(SOURCE)
    data["agents"][0]["dialog"]["mock"]["latency_ms"] = 4000
    version = workflow_create(team=team, definition=data)
    # Room beside the workflow's $1 for the killed call's estimate, which the evaluator's retry adds to.
    run = run_start(
        team=team,
        workflow=version.workflow_id,
        inputs={"complaint": "My blender arrived broken."},
        limits={"budget_usd": "5"},
    )

    evaluator = kill_worker_during(run, role="dialog")

    run = wait_for_run(run.pk, *WAITING, timeout=60)
    assert run.status == "waiting_for_input", run.error
    run_answer(run=run, given={"text": REPLY}, actor="test")
    run = wait_for_run(run.pk, *TERMINAL, timeout=60)
    assert run.status == "completed", run.error
    evaluator.refresh_from_db()
    assert (evaluator.attempts, evaluator.redeliveries) == (2, 1)
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis")) == [
        ("assessor", 1, "reported"),
        ("assessor (dialog)", 1, "estimated"),
        ("assessor (dialog)", 2, "reported"),
        ("assessor", 1, "reported"),
        ("writer", 1, "reported"),
    ]
    assert run.output["amount_usd"] == 320
    # What the calls reported, and the killed call's reservation.
    assert run.spent_usd == Decimal("0.280000") + evaluator.estimate_usd
    assert_invariants(run)
