"""A for_each group whose agent is a sub-workflow, on a real worker: a ticket-triage workflow of
our own, for the fake provider, that exercises the same features as conductor's
subworkflow-foreach-inline example (which runs simple-qa once per sub-topic): it runs a ticket-reply
sub-workflow once per ticket. (That conductor's own example uploads unchanged is checked by
tools/conductor_report.py against the fetched examples.)

Each branch runs the sub-workflow in a frame of its own (`replier[1]/responder`): its steps are
steps of the run, gated and charged as any other, and see only the inputs their branch bound. The
model replies to each ticket with the complaint itself, so what it was sent and what each branch
output shows whose ticket went where.

Prices: input is free, output $100 per million tokens; every call is 100 tokens, so it reserves
and costs $0.01."""

import os
import signal
from dataclasses import replace
from decimal import Decimal

import pytest
from django.urls import reverse

from tests.conductor.test_group_validator import Model, use_model
from tests.conftest import wait_for_run, wait_until
from tests.integration.test_groups import threaded_worker  # noqa: F401 - a worker with threads
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from workflows.models import EventType, LedgerEntry, Step
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
RUNTIME = """
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
"""
# One ticket answered (the features of conductor's examples/simple-qa.yaml, without an MCP server).
REPLY = f"""
workflow:
  name: ticket-reply
  entry_point: responder
{RUNTIME}
  input:
    complaint: {{type: string, required: true}}
agents:
  - name: responder
    prompt: |
      Ticket: {{{{ workflow.input.complaint }}}}
    output:
      reply: {{type: string}}
      urgency: {{type: string}}
    mock: {{output_tokens: 100}}
    routes: [{{to: $end}}]
output:
  reply: "{{{{ responder.output.reply }}}}"
  urgency: "{{{{ responder.output.urgency }}}}"
"""
# An inbox triaged a ticket at a time (the features of conductor's
# examples/subworkflow-foreach-inline.yaml): each ticket runs ticket-reply in a branch.
TRIAGE = f"""
workflow:
  name: ticket-triage
  entry_point: sorter
{RUNTIME}
  input:
    inbox: {{type: string, required: true}}
  limits: {{max_iterations: 20}}
for_each:
  - name: replies
    type: for_each
    source: sorter.output.tickets
    as: ticket
    max_concurrent: 3
    failure_mode: continue_on_error
    agent:
      name: replier
      type: workflow
      workflow: ./ticket-reply.yaml
      input_mapping:
        complaint: "{{{{ ticket }}}} (ticket {{{{ _index }}}})"
    routes:
      - to: report
agents:
  - name: sorter
    prompt: List the three tickets in "{{{{ workflow.input.inbox }}}}" that need an answer first.
    output:
      tickets: {{type: array}}
    mock: {{output: {{tickets: [login loop, missing refund, blank invoice]}}, output_tokens: 100}}
    routes:
      - to: replies
  - name: report
    input:
      - sorter.output
      - replies.outputs
    prompt: |
      Report to the team lead what we replied from "{{{{ workflow.input.inbox }}}}":
      {{% for r in replies.outputs %}}
      - {{{{ r.reply }}}}
      {{% endfor %}}
    output:
      brief: {{type: string}}
    mock: {{output: {{brief: three replies}}, output_tokens: 100}}
    routes:
      - to: $end
output:
  brief: "{{{{ report.output.brief }}}}"
  count: "{{{{ replies.outputs | length }}}}"
"""
COMPLAINTS = ["login loop (ticket 0)", "missing refund (ticket 1)", "blank invoice (ticket 2)"]
# ticket-reply in two steps: a branch's sub-workflow that a stop can leave half done.
HISTORY = f"""
workflow:
  name: ticket-history
  entry_point: history
{RUNTIME}
  input:
    complaint: {{type: string, required: true}}
agents:
  - name: history
    prompt: "Ticket: {{{{ workflow.input.complaint }}}}"
    output: {{reply: {{type: string}}, urgency: {{type: string}}}}
    mock: {{output_tokens: 100}}
    routes: [{{to: responder}}]
  - name: responder
    prompt: "Ticket: checked {{{{ history.output.reply }}}}"
    output: {{reply: {{type: string}}, urgency: {{type: string}}}}
    mock: {{output_tokens: 100}}
output:
  reply: "{{{{ responder.output.reply }}}}"
"""
TRIAGE_HISTORY = TRIAGE.replace("./ticket-reply.yaml", "./ticket-history.yaml").replace("name: ticket-triage", "name: history-triage")
CHECKED = [{"reply": f"checked {complaint}"} for complaint in COMPLAINTS]


class Answers(Model):
    """Replies to a ticket with the complaint it was sent; `broken` calls fail."""

    def complete(self, request, *, credentials=None):
        if request.prompt.startswith("Ticket: "):
            complaint = request.prompt.removeprefix("Ticket: ").strip()
            answer = {"reply": complaint, "urgency": "high"}
            request = replace(request, options={"mock": {**request.options["mock"], "output": answer}})
        return super().complete(request, credentials=credentials)


def upload(api, *sources):
    for source in sources or (REPLY, TRIAGE):
        response = api.post("/api/v1/workflows", {"definition": source}, format="json")
        assert response.status_code == 201, response.json()


def start(api, workflow="ticket-triage", **limits):
    body = {"workflow": workflow, "inputs": {"inbox": "Monday's inbox"}}
    response = api.post("/api/v1/runs", {**body, "limits": limits} if limits else body, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def resume(api, run, **limits):
    response = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "more room", **limits}, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(run.pk, *TERMINAL)


def charged(run) -> list[str]:
    return list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True))


def test_each_item_runs_the_subworkflow_in_its_own_frame_and_the_group_keeps_conductors_shape(
    api, team, celery_worker, monkeypatch, admin_client
):
    model = use_model(monkeypatch, Answers())
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    assert run.output == {"brief": "three replies", "count": 3}
    # Each branch's responder was sent its own ticket, and only it.
    asked = sorted(prompt for prompt in model.prompts if prompt.startswith("Ticket: "))
    assert asked == sorted(f"Ticket: {complaint}" for complaint in COMPLAINTS)
    # report sees replies.outputs, the sub-workflows' outputs in item order.
    report = next(prompt for prompt in model.prompts if prompt.startswith("Report"))
    assert [line.strip("- ") for line in report.splitlines() if line.startswith("- ")] == COMPLAINTS
    steps = {
        (step.agent, step.group, step.branch_index, step.branch_key): step.output
        for step in run.steps.filter(group="replies")
    }
    assert steps == {
        **{
            ("replier", "replies", index, str(index)): {"reply": complaint, "urgency": "high"}
            for index, complaint in enumerate(COMPLAINTS)
        },
        **{
            (f"replier[{index}]/responder", "replies", index, str(index)): {"reply": complaint, "urgency": "high"}
            for index, complaint in enumerate(COMPLAINTS)
        },
    }
    # The group's result as conductor shapes it, and no branch's frame left in the outputs.
    outputs = run.checkpoints.order_by("-id").first().outputs
    assert outputs["replies"] == {
        "outputs": [{"reply": complaint, "urgency": "high"} for complaint in COMPLAINTS],
        "errors": {},
        "count": 3,
    }
    assert sorted(outputs) == ["replies", "report", "sorter"]
    assert sorted(charged(run)) == sorted(["sorter", "report", *(f"replier[{i}]/responder" for i in range(3))])
    assert run.spent_usd == Decimal("0.050000")
    # sorter, three workflow steps, three responders, report.
    assert run.iterations == 8
    completed = run.events.filter(type=EventType.GROUP_COMPLETED).get()
    assert completed.payload == {"group": "replies", "succeeded": 3, "failed": 0}
    # The steps API and the run's admin page say which branch each sub-workflow step belongs to.
    rows = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    shown = {(row["agent"], row["group"], row["branch_index"], row["branch_key"]) for row in rows}
    assert ("replier[1]/responder", "replies", 1, "1") in shown
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    assert all(f"replier[{index}]/responder" in page for index in range(3))
    assert_invariants(run)


def test_an_item_whose_subworkflow_fails_is_that_items_error_under_continue_on_error(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Answers(broken=lambda request: "refund" in request.prompt))
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    result = run.checkpoints.order_by("-id").first().outputs["replies"]
    assert result["outputs"] == [{"reply": COMPLAINTS[0], "urgency": "high"}, {"reply": COMPLAINTS[2], "urgency": "high"}]
    assert result["count"] == 3
    assert list(result["errors"]) == ["1"]
    assert result["errors"]["1"]["item_key"] == "1"
    assert result["errors"]["1"]["exception_type"] == "ProviderError"
    assert run.output == {"brief": "three replies", "count": 2}
    failed = run.steps.get(status="failed")
    assert (failed.agent, failed.branch_index) == ("replier[1]/responder", 1)
    assert_invariants(run)


def test_each_branchs_subworkflow_sees_only_its_own_inputs_and_outputs_while_branches_interleave(
    api, team, celery_worker, monkeypatch
):
    model = use_model(monkeypatch, Answers())
    upload(api, HISTORY, TRIAGE_HISTORY)

    run = start(api, workflow="history-triage")

    assert run.status == "completed", run.error
    # The three branches' history steps ran before any responder: every responder read its own.
    sequence = list(run.steps.filter(group="replies").order_by("sequence").values_list("agent", flat=True))
    assert sequence.index("replier[2]/history") < sequence.index("replier[0]/responder")
    asked = [prompt for prompt in model.prompts if prompt.startswith("Ticket: ")]
    assert sorted(asked) == sorted(
        [f"Ticket: {complaint}" for complaint in COMPLAINTS] + [f"Ticket: checked {complaint}" for complaint in COMPLAINTS]
    )
    outputs = run.checkpoints.order_by("-id").first().outputs
    assert outputs["replies"]["outputs"] == CHECKED
    assert run.spent_usd == Decimal("0.080000")
    assert_invariants(run)


def test_an_enforce_stop_among_the_branches_resumes_their_subworkflows_where_they_stopped(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Answers())
    upload(api, HISTORY, TRIAGE_HISTORY)

    # Room for sorter and two of the branches' steps: the third's gate stops the run.
    run = start(api, workflow="history-triage", budget_usd="0.035", budget_mode="enforce")

    assert run.status == "budget_exceeded", run.error
    assert run.spent_usd == Decimal("0.030000")
    assert run.error["type"] == "BudgetExceededError"
    assert run.current_agent == "replies"
    before = charged(run)
    assert before[0] == "sorter" and all(agent.startswith("replier[") for agent in before[1:])
    blocked = run.steps.filter(status="blocked")
    assert blocked.exists() and all(step.group == "replies" for step in blocked)

    run = resume(api, run, budget_usd="1")

    assert run.status == "completed", run.error
    after = charged(run)
    assert after[: len(before)] == before
    # Every step charged once: none that completed before the stop ran again.
    expected = ["sorter", "report", *(f"replier[{i}]/{agent}" for i in range(3) for agent in ("history", "responder"))]
    assert sorted(after) == sorted(expected)
    assert run.steps.filter(agent="replier").count() == 3
    assert run.checkpoints.order_by("-id").first().outputs["replies"]["outputs"] == CHECKED
    assert run.output == {"brief": "three replies", "count": 3}
    assert run.spent_usd == Decimal("0.080000")
    assert_invariants(run)


def test_a_worker_killed_during_a_branchs_subworkflow_step_is_redelivered_and_its_killed_call_estimated(
    team, worker_process
):
    # The worker process answers with the fake's mocks: each responder the same.
    workflow_create(team=team, definition=HISTORY.replace("mock: {output_tokens: 100}", "mock: {output: {reply: x}, output_tokens: 100, latency_ms: 3000}", 1))
    version = workflow_create(team=team, definition=TRIAGE_HISTORY)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"inbox": "the weekend's tickets"})

    killed = wait_until(
        lambda: Step.objects.filter(run=run, agent="replier[1]/history", status="running").exclude(worker="").first(),
        message="the second branch's history step to start",
    )
    os.kill(int(killed.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    run = wait_for_run(run.pk, *TERMINAL, timeout=120)
    assert run.status == "completed", run.error
    killed.refresh_from_db()
    assert (killed.status, killed.attempts, killed.redeliveries) == ("succeeded", 2, 1)
    assert list(LedgerEntry.objects.filter(step=killed).values_list("attempt", "basis")) == [
        (1, "estimated"),
        (2, "reported"),
    ]
    expected = [
        "sorter",
        "report",
        "replier[1]/history",  # the killed attempt's estimate
        *(f"replier[{i}]/{agent}" for i in range(3) for agent in ("history", "responder")),
    ]
    assert sorted(charged(run)) == sorted(expected)
    assert run.output["count"] == 3
    assert_invariants(run)


def test_branches_running_at_once_on_worker_threads_keep_their_frames_apart(api, team, threaded_worker, monkeypatch):
    model = use_model(monkeypatch, Answers())
    slow = HISTORY.replace("mock: {output_tokens: 100}", "mock: {output_tokens: 100, latency_ms: 300}")
    upload(api, slow, TRIAGE_HISTORY.replace("max_concurrent: 3", "max_concurrent: 2"))

    run = start(api, workflow="history-triage")

    assert run.status == "completed", run.error
    assert run.checkpoints.order_by("-id").first().outputs["replies"]["outputs"] == CHECKED
    checked = sorted(prompt for prompt in model.prompts if prompt.startswith("Ticket: checked"))
    assert checked == sorted(f"Ticket: checked {complaint}" for complaint in COMPLAINTS)
    # Steps of two branches' sub-workflows ran at the same moment, and never more than two branches.
    steps = run.steps.filter(group="replies")
    assert most_at_once(steps.exclude(agent="replier").values_list("started_at", "finished_at")) == 2
    spans = [
        (min(started for started, _ in times), max(finished for _, finished in times))
        for times in (steps.filter(branch_index=index).values_list("started_at", "finished_at") for index in range(3))
    ]
    assert most_at_once(spans) == 2
    assert run.spent_usd == Decimal("0.080000")
    assert_invariants(run)


def most_at_once(spans) -> int:
    """The most (started, finished) spans that overlap at one moment."""
    changes = sorted([(started, 1) for started, _ in spans] + [(finished, -1) for _, finished in spans])
    peak = in_flight = 0
    for _, change in changes:
        in_flight += change
        peak = max(peak, in_flight)
    return peak
