"""A kind of step written as an example: a note that renders text and costs nothing. It is one class
and one registration (the fixture), and nothing else in the engine or the parser changes for it.

And a kind of group: the parser reads only `parallel:` and `for_each:` groups, so the example runs
the `parallel:` groups differently instead of adding a new `type`. The group engine asks it how many
branches run at once, what their templates see and what the group's result is."""

from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import drive
from workflows.definition import DefinitionError, load_definition, render
from workflows.models import LedgerEntry
from workflows.providers import CompletionResult
from workflows.services.budgets import add
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.steps.kinds import (
    Charged,
    PreparedStep,
    StepKind,
    kind_of,
    register_group_kind,
    register_step_kind,
    unregister_step_kind,
)
from workflows.services.steps.kinds.base import branch_error, branches_by_status
from workflows.services.steps.kinds.parallel import ParallelKind
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


class NoteKind(StepKind):
    name = "note"
    keys = ("text",)

    def read(self, section):
        text = section.text("text", required=True)
        return None if text is None else {"text": text}

    def prepare(self, *, node, context, definition, may_override_prices, provider_routes):
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
        ("agents[1].type", "agent type 'note' is not supported (only 'agent', 'human_gate', 'questions', 'script', 'set', 'terminate', 'wait', 'workflow')")
    ]


class RelayKind(ParallelKind):
    """A parallel group run as a relay: one agent at a time, each told its leg; the outputs in order."""

    branch_names = ("_leg",)
    result_fields = ("outputs", "errors", "legs")

    def slots(self, *, group):
        return 1

    def branch_context(self, *, group, context, index, key):
        return {**context, "_leg": index + 1}

    def result(self, *, group, ended):
        succeeded, failed = branches_by_status(ended)
        return {
            "outputs": [branch.output for branch in succeeded],
            "errors": {branch.branch_key: branch_error(branch, key_field="agent_name") for branch in failed},
            "legs": len(ended),
        }


@pytest.fixture
def relay_kind():
    register_group_kind(RelayKind())
    yield
    register_group_kind(ParallelKind())


RELAY = """
workflow:
  name: relay
  entry_point: legs
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost: {pricing: {sim-model: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: first
    prompt: "Run leg {{ _leg }}."
  - name: second
    prompt: "Run leg {{ _leg }}."
  - name: finish
    prompt: "{{ legs.legs }} legs run."
parallel:
  - name: legs
    agents: [first, second]
    routes: [{to: finish}]
"""


def test_a_group_kind_says_how_many_branches_run_at_once_what_they_see_and_the_result(team, relay_kind):
    version = workflow_create(team=team, definition=RELAY)
    assert isinstance(kind_of(load_definition(RELAY).group("legs")), RelayKind)
    run = run_start(team=team, workflow=version.workflow_id)

    outputs = {"first": {"leg": 1}, "second": {"leg": 2}, "finish": {"done": True}}
    prompts = []
    for _ in outputs:
        # One slot: each leg's branch is created only when the one before has ended.
        [step] = run.steps.filter(status="pending")
        attempt = step_begin(step_id=step.pk, worker="host:1")
        prompts.append((step.agent, step.branch_key, attempt.prepared.request.prompt))
        result = CompletionResult(output=outputs[step.agent], input_tokens=0, output_tokens=50)
        step_settle(attempt=attempt, result=result)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert prompts == [
        ("first", "first", "Run leg 1."),
        ("second", "second", "Run leg 2."),
        ("finish", "", "2 legs run."),
    ]
    assert run.checkpoints.latest().outputs["legs"] == {
        "outputs": [{"leg": 1}, {"leg": 2}],
        "errors": {},
        "legs": 2,
    }
    [completed] = run.events.filter(type="group_completed")
    assert completed.payload == {"group": "legs", "succeeded": 2, "failed": 0}
    assert_invariants(run)
