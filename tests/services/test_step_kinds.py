"""A kind of step written as an example: a note that renders text and costs nothing. It is one class
and one registration (the fixture), and nothing else in the engine or the parser changes for it."""

from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import drive
from workflows.definition import DefinitionError, load_definition, render
from workflows.models import LedgerEntry
from workflows.providers import CompletionResult
from workflows.services.budgets import add
from workflows.services.runs import run_start
from workflows.services.steps.kinds import Charged, PreparedStep, StepKind, register_step_kind, unregister_step_kind
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


class NoteKind(StepKind):
    name = "note"
    keys = ("text",)

    def read(self, section):
        text = section.text("text", required=True)
        return None if text is None else {"text": text}

    def prepare(self, *, node, context, definition, may_override_prices):
        text = render(node.params["text"], context, where=f"note '{node.name}' text")
        return PreparedStep(kind=self.name, estimate_usd=Decimal("0"), data={"text": text})

    def run(self, attempt):
        return CompletionResult(input_tokens=0, output_tokens=0, output={"text": attempt.prepared.data["text"]})

    def settle(self, *, team, run, step, attempt, usage, **run_deltas):
        add(run, **run_deltas)  # nothing to charge: no ledger entry
        return Charged(cost_usd=Decimal("0"))


@pytest.fixture
def note_kind():
    register_step_kind(NoteKind())
    yield
    unregister_step_kind("note")


WITH_A_NOTE = """
workflow:
  name: noted
  entry_point: counter
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: counter
    prompt: "Count."
    mock: {output: {n: 7}, output_tokens: 50}
    routes: [{to: remark}]
  - name: remark
    type: note
    text: "counted {{ counter.output.n }}"
    routes: [{to: "summary", when: "counter.output.n > 5"}, {to: $end}]
  - name: summary
    prompt: "Sum up: {{ remark.output.text }}"
    mock: {output: {done: true}, output_tokens: 50}
"""


def test_a_registered_kind_uploads_runs_between_agents_and_costs_nothing(team, note_kind):
    version = workflow_create(team=team, definition=WITH_A_NOTE)
    run = drive(run_start(team=team, workflow=version.workflow_id))

    assert run.status == "completed", run.error
    assert list(run.steps.order_by("sequence").values_list("agent", "status", "output")) == [
        ("counter", "succeeded", {"n": 7}),
        ("remark", "succeeded", {"text": "counted 7"}),
        ("summary", "succeeded", {"done": True}),
    ]
    assert run.iterations == 3
    assert list(LedgerEntry.objects.filter(run=run).values_list("agent", flat=True)) == ["counter", "summary"]
    summary = run.events.filter(type="agent_completed", payload__agent="remark").get()
    assert summary.payload["cost_usd"] == "0.000000"
    assert_invariants(run)


def test_a_kind_checks_its_own_fields_at_upload(note_kind):
    source = WITH_A_NOTE.replace('    text: "counted {{ counter.output.n }}"\n', "    colour: red\n")
    with pytest.raises(DefinitionError) as refused:
        load_definition(source)
    assert {(problem.path, problem.message.split(" (")[0]) for problem in refused.value.problems} >= {
        ("agents[1].text", "is required"),
    }
    assert any(problem.path == "agents[1].colour" for problem in refused.value.problems)


def test_without_the_kind_its_type_is_refused_naming_the_types_there_are():
    with pytest.raises(DefinitionError) as refused:
        load_definition(WITH_A_NOTE)
    assert [(p.path, p.message) for p in refused.value.problems if p.path == "agents[1].type"] == [
        ("agents[1].type", "agent type 'note' is not supported (only 'agent')")
    ]
