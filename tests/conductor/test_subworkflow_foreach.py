"""A for_each group whose agent is a sub-workflow, on a real worker: conductor's
subworkflow-foreach-inline example, which runs simple-qa once per sub-topic, written here for the
fake provider (conductor's own files upload unchanged: tests/definition/test_subworkflow_foreach.py).

Each branch runs the sub-workflow in a frame of its own (`qa_runner[1]/answerer`): its steps are
steps of the run, gated and charged as any other, and see only the inputs their branch bound. The
model answers each question with the question itself, so what it was sent and what each branch
output shows whose question went where.

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
# conductor's examples/simple-qa.yaml, without its MCP server.
SIMPLE_QA = f"""
workflow:
  name: simple-qa
  entry_point: answerer
{RUNTIME}
  input:
    question: {{type: string, required: true}}
agents:
  - name: answerer
    prompt: |
      Question: {{{{ workflow.input.question }}}}
    output:
      answer: {{type: string}}
      confidence: {{type: string}}
    mock: {{output_tokens: 100}}
    routes: [{{to: $end}}]
output:
  answer: "{{{{ answerer.output.answer }}}}"
  confidence: "{{{{ answerer.output.confidence }}}}"
"""
# conductor's examples/subworkflow-foreach-inline.yaml.
INLINE = f"""
workflow:
  name: subworkflow-foreach-inline-demo
  entry_point: topic_finder
{RUNTIME}
  input:
    topic: {{type: string, required: true}}
  limits: {{max_iterations: 20}}
for_each:
  - name: deep_dives
    type: for_each
    source: topic_finder.output.subtopics
    as: subtopic
    max_concurrent: 3
    failure_mode: continue_on_error
    agent:
      name: qa_runner
      type: workflow
      workflow: ./simple-qa.yaml
      input_mapping:
        question: "What is {{{{ subtopic }}}} (item {{{{ _index }}}})?"
    routes:
      - to: summarize
agents:
  - name: topic_finder
    prompt: Break the topic "{{{{ workflow.input.topic }}}}" into exactly 3 sub-topics.
    output:
      subtopics: {{type: array}}
    mock: {{output: {{subtopics: [Python, Rust, Go]}}, output_tokens: 100}}
    routes:
      - to: deep_dives
  - name: summarize
    input:
      - topic_finder.output
      - deep_dives.outputs
    prompt: |
      Combine these answers about "{{{{ workflow.input.topic }}}}":
      {{% for r in deep_dives.outputs %}}
      - {{{{ r.answer }}}}
      {{% endfor %}}
    output:
      digest: {{type: string}}
    mock: {{output: {{digest: three answers}}, output_tokens: 100}}
    routes:
      - to: $end
output:
  digest: "{{{{ summarize.output.digest }}}}"
  count: "{{{{ deep_dives.outputs | length }}}}"
"""
QUESTIONS = ["What is Python (item 0)?", "What is Rust (item 1)?", "What is Go (item 2)?"]
# simple-qa in two steps: a branch's sub-workflow that a stop can leave half done.
LOOKUP = f"""
workflow:
  name: lookup
  entry_point: search
{RUNTIME}
  input:
    question: {{type: string, required: true}}
agents:
  - name: search
    prompt: "Question: {{{{ workflow.input.question }}}}"
    output: {{answer: {{type: string}}, confidence: {{type: string}}}}
    mock: {{output_tokens: 100}}
    routes: [{{to: answerer}}]
  - name: answerer
    prompt: "Question: checked {{{{ search.output.answer }}}}"
    output: {{answer: {{type: string}}, confidence: {{type: string}}}}
    mock: {{output_tokens: 100}}
output:
  answer: "{{{{ answerer.output.answer }}}}"
"""
INLINE_LOOKUP = INLINE.replace("./simple-qa.yaml", "./lookup.yaml").replace("name: subworkflow-foreach-inline-demo", "name: dives")
CHECKED = [{"answer": f"checked {question}"} for question in QUESTIONS]


class Answers(Model):
    """Answers a simple-qa question with the question it was sent; `broken` calls fail."""

    def complete(self, request, *, credentials=None):
        if request.prompt.startswith("Question: "):
            question = request.prompt.removeprefix("Question: ").strip()
            answer = {"answer": question, "confidence": "high"}
            request = replace(request, options={"mock": {**request.options["mock"], "output": answer}})
        return super().complete(request, credentials=credentials)


def upload(api, *sources):
    for source in sources or (SIMPLE_QA, INLINE):
        response = api.post("/api/v1/workflows", {"definition": source}, format="json")
        assert response.status_code == 201, response.json()


def start(api, workflow="subworkflow-foreach-inline-demo", **limits):
    body = {"workflow": workflow, "inputs": {"topic": "programming languages"}}
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
    assert run.output == {"digest": "three answers", "count": 3}
    # Each branch's answerer was asked its own question, and only it.
    asked = sorted(prompt for prompt in model.prompts if prompt.startswith("Question: "))
    assert asked == sorted(f"Question: {question}" for question in QUESTIONS)
    # summarize sees deep_dives.outputs, the sub-workflows' outputs in item order.
    summary = next(prompt for prompt in model.prompts if prompt.startswith("Combine"))
    assert [line.strip("- ") for line in summary.splitlines() if line.startswith("- ")] == QUESTIONS
    steps = {
        (step.agent, step.group, step.branch_index, step.branch_key): step.output
        for step in run.steps.filter(group="deep_dives")
    }
    assert steps == {
        **{
            ("qa_runner", "deep_dives", index, str(index)): {"answer": question, "confidence": "high"}
            for index, question in enumerate(QUESTIONS)
        },
        **{
            (f"qa_runner[{index}]/answerer", "deep_dives", index, str(index)): {"answer": question, "confidence": "high"}
            for index, question in enumerate(QUESTIONS)
        },
    }
    # The group's result as conductor shapes it, and no branch's frame left in the outputs.
    outputs = run.checkpoints.order_by("-id").first().outputs
    assert outputs["deep_dives"] == {
        "outputs": [{"answer": question, "confidence": "high"} for question in QUESTIONS],
        "errors": {},
        "count": 3,
    }
    assert sorted(outputs) == ["deep_dives", "summarize", "topic_finder"]
    assert sorted(charged(run)) == sorted(["topic_finder", "summarize", *(f"qa_runner[{i}]/answerer" for i in range(3))])
    assert run.spent_usd == Decimal("0.050000")
    # topic_finder, three workflow steps, three answerers, summarize.
    assert run.iterations == 8
    completed = run.events.filter(type=EventType.GROUP_COMPLETED).get()
    assert completed.payload == {"group": "deep_dives", "succeeded": 3, "failed": 0}
    # The steps API and the run's admin page say which branch each sub-workflow step belongs to.
    rows = api.get(f"/api/v1/runs/{run.pk}/steps").json()["results"]
    shown = {(row["agent"], row["group"], row["branch_index"], row["branch_key"]) for row in rows}
    assert ("qa_runner[1]/answerer", "deep_dives", 1, "1") in shown
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    assert all(f"qa_runner[{index}]/answerer" in page for index in range(3))
    assert_invariants(run)


def test_an_item_whose_subworkflow_fails_is_that_items_error_under_continue_on_error(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Answers(broken=lambda request: "Rust" in request.prompt))
    upload(api)

    run = start(api)

    assert run.status == "completed", run.error
    result = run.checkpoints.order_by("-id").first().outputs["deep_dives"]
    assert result["outputs"] == [{"answer": QUESTIONS[0], "confidence": "high"}, {"answer": QUESTIONS[2], "confidence": "high"}]
    assert result["count"] == 3
    assert list(result["errors"]) == ["1"]
    assert result["errors"]["1"]["item_key"] == "1"
    assert result["errors"]["1"]["exception_type"] == "ProviderError"
    assert run.output == {"digest": "three answers", "count": 2}
    failed = run.steps.get(status="failed")
    assert (failed.agent, failed.branch_index) == ("qa_runner[1]/answerer", 1)
    assert_invariants(run)


def test_each_branchs_subworkflow_sees_only_its_own_inputs_and_outputs_while_branches_interleave(
    api, team, celery_worker, monkeypatch
):
    model = use_model(monkeypatch, Answers())
    upload(api, LOOKUP, INLINE_LOOKUP)

    run = start(api, workflow="dives")

    assert run.status == "completed", run.error
    # The three branches' searches ran before any answerer: every answerer read its own search.
    sequence = list(run.steps.filter(group="deep_dives").order_by("sequence").values_list("agent", flat=True))
    assert sequence.index("qa_runner[2]/search") < sequence.index("qa_runner[0]/answerer")
    asked = [prompt for prompt in model.prompts if prompt.startswith("Question: ")]
    assert sorted(asked) == sorted(
        [f"Question: {question}" for question in QUESTIONS] + [f"Question: checked {question}" for question in QUESTIONS]
    )
    outputs = run.checkpoints.order_by("-id").first().outputs
    assert outputs["deep_dives"]["outputs"] == CHECKED
    assert run.spent_usd == Decimal("0.080000")
    assert_invariants(run)


def test_an_enforce_stop_among_the_branches_resumes_their_subworkflows_where_they_stopped(
    api, team, celery_worker, monkeypatch
):
    use_model(monkeypatch, Answers())
    upload(api, LOOKUP, INLINE_LOOKUP)

    # Room for topic_finder and two of the branches' steps: the third's gate stops the run.
    run = start(api, workflow="dives", budget_usd="0.035", budget_mode="enforce")

    assert run.status == "budget_exceeded", run.error
    assert run.spent_usd == Decimal("0.030000")
    assert run.error["type"] == "BudgetExceededError"
    assert run.current_agent == "deep_dives"
    before = charged(run)
    assert before[0] == "topic_finder" and all(agent.startswith("qa_runner[") for agent in before[1:])
    blocked = run.steps.filter(status="blocked")
    assert blocked.exists() and all(step.group == "deep_dives" for step in blocked)

    run = resume(api, run, budget_usd="1")

    assert run.status == "completed", run.error
    after = charged(run)
    assert after[: len(before)] == before
    # Every step charged once: none that completed before the stop ran again.
    expected = ["topic_finder", "summarize", *(f"qa_runner[{i}]/{agent}" for i in range(3) for agent in ("search", "answerer"))]
    assert sorted(after) == sorted(expected)
    assert run.steps.filter(agent="qa_runner").count() == 3
    assert run.checkpoints.order_by("-id").first().outputs["deep_dives"]["outputs"] == CHECKED
    assert run.output == {"digest": "three answers", "count": 3}
    assert run.spent_usd == Decimal("0.080000")
    assert_invariants(run)


def test_a_worker_killed_during_a_branchs_subworkflow_step_is_redelivered_and_charged_once(team, worker_process):
    # The worker process answers with the fake's mocks: each answerer the same.
    workflow_create(team=team, definition=LOOKUP.replace("mock: {output_tokens: 100}", "mock: {output: {answer: x}, output_tokens: 100, latency_ms: 3000}", 1))
    version = workflow_create(team=team, definition=INLINE_LOOKUP)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "languages"})

    killed = wait_until(
        lambda: Step.objects.filter(run=run, agent="qa_runner[1]/search", status="running").exclude(worker="").first(),
        message="the second branch's search to start",
    )
    os.kill(int(killed.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    run = wait_for_run(run.pk, *TERMINAL, timeout=120)
    assert run.status == "completed", run.error
    killed.refresh_from_db()
    assert (killed.status, killed.attempts, killed.redeliveries) == ("succeeded", 2, 1)
    assert list(LedgerEntry.objects.filter(step=killed).values_list("attempt", flat=True)) == [2]
    expected = ["topic_finder", "summarize", *(f"qa_runner[{i}]/{agent}" for i in range(3) for agent in ("search", "answerer"))]
    assert sorted(charged(run)) == sorted(expected)
    assert run.output["count"] == 3
    assert_invariants(run)


def test_branches_running_at_once_on_worker_threads_keep_their_frames_apart(api, team, threaded_worker, monkeypatch):
    model = use_model(monkeypatch, Answers())
    slow = LOOKUP.replace("mock: {output_tokens: 100}", "mock: {output_tokens: 100, latency_ms: 300}")
    upload(api, slow, INLINE_LOOKUP.replace("max_concurrent: 3", "max_concurrent: 2"))

    run = start(api, workflow="dives")

    assert run.status == "completed", run.error
    assert run.checkpoints.order_by("-id").first().outputs["deep_dives"]["outputs"] == CHECKED
    checked = sorted(prompt for prompt in model.prompts if prompt.startswith("Question: checked"))
    assert checked == sorted(f"Question: checked {question}" for question in QUESTIONS)
    # Steps of two branches' sub-workflows ran at the same moment, and never more than two branches.
    steps = run.steps.filter(group="deep_dives")
    assert most_at_once(steps.exclude(agent="qa_runner").values_list("started_at", "finished_at")) == 2
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
