"""Conductor's `questions` on a real worker: a model's open questions put to a person in one step,
answered in one request, keyed answers and a transcript for the next agent, and an abandon route."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.errors import DefinitionInvalid
from workflows.services.workflows import workflow_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

DESIGN = """
workflow:
  name: design-review
  entry_point: architect
  input: {topic: {type: string, required: true}}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
agents:
  - name: architect
    prompt: "Design {{ workflow.input.topic }}."
    output: {summary: {type: string}, open_questions: {type: array}}
    mock:
      output:
        summary: a cache
        open_questions:
          - "Which region? {{ not rendered }}"
          - {question: "Which store?", choices: [redis, memcached], allow_free_text: false}
    routes: [{to: ask}]
  - name: ask
    type: questions
    source: architect.output.open_questions
    prompt: "About {{ workflow.input.topic }}: {{ architect.output.summary }}"
    allow_abort: true
    abort_route: give_up
    routes:
      - {to: finalize, when: "{{ ask.output.answered_any }}"}
      - {to: $end}
  - name: finalize
    prompt: "Revise with {{ ask.output.transcript }}"
    mock: {output: {final: done}, output_tokens: 10}
  - name: give_up
    type: terminate
    status: failed
    reason: abandoned by the reviewer
"""


def waiting_run(api):
    assert api.post("/api/v1/workflows", {"definition": DESIGN}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "design-review", "inputs": {"topic": "caching"}}, format="json")
    assert response.status_code == 202, response.json()
    run = wait_for_run(response.json()["id"], "waiting_for_input", *TERMINAL)
    assert run.status == "waiting_for_input", run.error
    return run


def answer(api, run, **body):
    return api.post(f"/api/v1/runs/{run.pk}/input", body, format="json")


def test_a_models_questions_are_answered_in_one_request_and_the_next_agent_reads_them(api, team, celery_worker):
    run = waiting_run(api)
    asked = run.events.get(type="input_requested").payload
    assert asked["prompt"] == "About caching: a cache"
    # Text from a model is shown as it is, never rendered as a template.
    assert [(q["id"], q["text"]) for q in asked["questions"]] == [("q1", "Which region? {{ not rendered }}"), ("q2", "Which store?")]

    refused = answer(api, run, answers={"q2": "etcd", "q9": "x"})
    assert refused.status_code == 400
    assert {d["path"] for d in refused.json()["error"]["details"]} == {"answers.q2", "answers.q9"}
    assert answer(api, run, choice="redis").status_code == 400  # a gate's answer, not this step's: nothing asked is answered

    assert answer(api, run, answers={"q1": "eu-west", "q2": "redis"}).status_code == 200
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    output = run.steps.get(agent="ask").output
    assert output["answers"] == {"q1": "eu-west", "q2": "redis"}
    assert output["transcript"] == "Q1. Which region? {{ not rendered }}\nA: eu-west\n\nQ2. Which store?\nA: redis"
    assert (output["answered_count"], output["skipped_count"], output["outcome"]) == (2, 0, "completed")
    assert run.steps.get(agent="finalize").output == {"final": "done"}
    assert run.iterations == 3
    assert_invariants(run)


def test_abandoning_the_questions_takes_the_abort_route(api, team, celery_worker):
    run = waiting_run(api)

    assert answer(api, run, abort=True).status_code == 200
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "failed"
    assert run.error == {"type": "WorkflowTerminated", "message": "abandoned by the reviewer"}
    assert run.steps.get(agent="ask").output["outcome"] == "aborted"


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ("{name: s, type: questions, questions: [{text: a}], source: x.output.q}", "agents[0].questions", "exactly one"),
        ("{name: s, type: questions, questions: [{text: a}], abort_route: $end}", "agents[0].abort_route", "allow_abort"),
        ("{name: s, type: questions, questions: [{text: a, id: k}, {text: b, id: k}]}", "agents[0].questions", "two questions"),
        ("{name: s, type: questions, questions: [{text: a, allow_free_text: false}]}", "agents[0].questions[0].choices", "nothing could answer"),
        ("{name: s, type: questions, questions: [{text: a}], allow_abort: true, abort_route: nowhere}", "agents[0].abort_route", "nowhere"),
        ("{name: s, type: questions, questions: [{txt: a}]}", "agents[0].questions[0].txt", "unknown"),
        ("{name: s, type: questions, source: 'not a path'}", "agents[0].source", "dotted path"),
    ],
)
def test_questions_with_a_mistake_are_refused_at_upload_naming_it(team, step, path, message):
    source = f"workflow: {{name: w, entry_point: s, runtime: {{provider: fake}}}}\nagents: [{step}]\n"
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=source)
    assert any(d["path"] == path and message in d["message"] for d in refused.value.details), refused.value.details
